"""Turn LRW- or GRID-shaped videos into the sharded training cache (paper §IV-B).

Run it (resumable: a rerun skips finished shards; a killed run leaves no partial shard)::

    python -m talkface.data.prepare --dataset lrw --root data/lrw --out data/cache/lrw --workers 2
    python -m talkface.data.prepare --dataset grid --root data/grid --out data/cache/grid
    # the synthetic corpus's exact landmarks (its sidecars) instead of dlib's: no frames, no detection
    python -m talkface.data.prepare --dataset lrw --root data/synth_a2l --out data/cache_a2l --landmarks exact
    # on a cluster, job 3 of 8 (every job gets a disjoint, deterministic set of shards):
    python -m talkface.data.prepare --dataset lrw --root data/lrw --out data/cache/lrw --shard 3/8

Per clip: decode the 25 fps RGB frames and the sound (imageio-ffmpeg's own ffmpeg binary), align the face
once on the window's first frame (the reference frame) and apply that same similarity transform to every
frame (a stable crop, like LRW's own preprocessing), detect dlib's 68 landmarks on every aligned frame
(the paper's ground truth), and compute the 28x12 MFCC window of every frame. Clips are 29 frames; a
longer video (GRID's 3 s sentences) is cut to the 29 frames centred on its labelled word.

Cache layout (`OUT/`)::

    manifest.json                      dataset, vocabulary, clip-list hash, per-split shard list and counts
    {split}/shard-00000.safetensors    ~256 clips each:
        mfcc           (N, 29, 28, 12) float16
        landmarks      (N, 29, 68, 2)  float32, pixels of the 256x256 aligned crop
        ref_landmarks  (N, 68, 2)      float32, landmarks of the reference (identity) frame = frame 0
        word           (N,)            int64, index into the manifest's vocabulary
        frames_jpeg    (B,)            uint8, every aligned 256x256 frame as JPEG, back to back
        frame_offsets  (N, 30)         int64, frame t of clip n is frames_jpeg[off[n, t]:off[n, t + 1]]
      and safetensors metadata key "talkface": a JSON string with clip ids, video paths, transforms
      (2x3, source pixels -> crop pixels), window start frames, tool versions and skipped clips + reasons.

The aligned frames are cached (JPEG quality 90: ~14 kB, 43 dB PSNR a frame) because decoding a JPEG is far faster than
decoding the clip's video again for every training sample of the frame generator.

``--landmarks exact`` (synthetic corpora only) takes each clip's landmarks from its JSON sidecar — the
articulation model's own, i.e. the true landmarks of the rendered frames, in the pixels of the 256x256 crop
the corpus renders at — instead of detecting them. No frame is decoded, detected or cached (the A2L side
needs none, and the "a2l" corpus has none): transforms are the identity and `frames_jpeg` is empty; the
manifest says ``"landmarks": "exact"`` and the frame generator's dataset refuses such a cache.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from tqdm import tqdm

from talkface.audio import FPS
from talkface.data.grid import GRID_WORDS, TEST_SPEAKERS, read_grid
from talkface.data.lrw import CLIP_FRAMES, Clip, lrw_vocabulary, read_lrw
from talkface.errors import TalkFaceError
from talkface.video import read_video

FORMAT_VERSION = 1
SHARD_SIZE = 256
JPEG_QUALITY = 90
META_KEY = "talkface"
MANIFEST = "manifest.json"
LANDMARK_SOURCES = ("dlib", "exact")


# decoding


# one clip


def window_start(clip: Clip, num_frames: int) -> int:
    """First frame of the 29-frame window centred on the clip's word (or on the clip's middle)."""
    centre = num_frames / 2
    for word, start, end in clip.words:
        if clip.word is not None and word.lower() == clip.word.lower():
            centre = (start + end) / 2 * FPS
            break
    return int(min(max(round(centre) - CLIP_FRAMES // 2, 0), num_frames - CLIP_FRAMES))


def prepare_clip(clip: Clip, energy: bool = False) -> dict:
    """Aligned frames, landmarks and MFCC windows of one clip; raises if the clip cannot be used."""
    from talkface.audio import load_audio, mfcc_windows
    from talkface.face import CROP_SIZE, align_face, detect_landmarks

    frames, fps = read_video(clip.video)
    if round(fps) != FPS:
        raise TalkFaceError(f"The video runs at {fps:g} frames per second; {FPS} are needed.")
    if len(frames) < CLIP_FRAMES:
        raise TalkFaceError(f"The video has {len(frames)} frames; {CLIP_FRAMES} are needed.")
    waveform, _ = load_audio(clip.video)
    first = window_start(clip, len(frames))
    window = slice(first, first + CLIP_FRAMES)
    mfcc = mfcc_windows(waveform, fps=FPS, num_frames=len(frames), energy=energy)[window]

    reference = align_face(frames[first])
    transform = np.asarray(reference.transform, np.float32)
    aligned = [cv2.warpAffine(f, transform, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE) for f in frames[window]]
    landmarks = np.stack([detect_landmarks(a) for a in aligned]).astype(np.float32)
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(a, cv2.COLOR_RGB2BGR),
                          [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() for a in aligned]
    return {
        "mfcc": np.asarray(mfcc, np.float16),
        "landmarks": landmarks,
        "jpegs": jpegs,
        "transform": transform.tolist(),
        "window_start": first,
        "num_faces": int(reference.num_faces),
    }


def prepare_clip_exact(clip: Clip, energy: bool = False) -> dict:
    """MFCC windows and the sidecar's exact landmarks of one synthetic clip; raises if it cannot be used."""
    from talkface.audio import load_audio, mfcc_windows

    if clip.meta is None:
        raise TalkFaceError(f"{clip.video.name} has no JSON sidecar: exact landmarks exist only for the "
                            "synthetic corpus (talkface.data.synth); use --landmarks dlib for real videos.")
    exact = np.asarray(json.loads(Path(clip.meta).read_text())["landmarks"], np.float32)
    if exact.ndim != 3 or exact.shape[1:] != (68, 2) or len(exact) < CLIP_FRAMES:
        raise TalkFaceError(f"The sidecar of {clip.video.name} holds landmarks of shape {exact.shape}, "
                            f"not (>= {CLIP_FRAMES}, 68, 2).")
    waveform, _ = load_audio(clip.video)
    first = window_start(clip, len(exact))
    window = slice(first, first + CLIP_FRAMES)
    return {
        "mfcc": np.asarray(mfcc_windows(waveform, fps=FPS, num_frames=len(exact), energy=energy)[window],
                           np.float16),
        "landmarks": exact[window],
        "jpegs": [],
        "transform": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        "window_start": first,
        "num_faces": 1,
    }


# Failures of the machine, not of the clip: out of memory or disk, too many open files, an interrupted I/O.
# Recorded as a skip they would be permanent (a finished shard is never redone), so they stop the job instead.
_TRANSIENT_ERRNOS = {errno.ENOMEM, errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.EIO, errno.EDQUOT,
                     errno.EINTR}


class TransientFailure(TalkFaceError):
    """The machine failed while preparing a clip; run the same command again to go on."""


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, MemoryError | TimeoutError | subprocess.TimeoutExpired | BrokenPipeError | ConnectionError):
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


def _prepare_or_reason(clip: Clip, landmarks: str = "dlib", energy: bool = False) -> dict | str:
    """Never let one bad clip stop a job of thousands: failures of the clip come back as a reason to record.
    Failures of the machine (``_is_transient``) stop the job before its shard is written, so a rerun retries."""
    try:
        return (prepare_clip_exact(clip, energy=energy) if landmarks == "exact"
                else prepare_clip(clip, energy=energy))
    except Exception as error:  # any decoder or detector failure skips only this clip
        if _is_transient(error):
            raise TransientFailure(f"Preparation stopped at {clip.video}: {type(error).__name__}: {error}. This is "
                                   "the machine, not the clip: run the same command again to go on (finished "
                                   "shards are kept).") from error
        return f"{type(error).__name__}: {error}"


def _init_worker() -> None:
    """Each worker runs one clip at a time: one thread each keeps K workers on K cores."""
    import torch

    import talkface.face  # noqa: F401 - import once here; its detectors then load once per worker

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


# shards


@dataclass
class Shard:
    """A fixed group of clips of one split, written as one file."""

    split: str
    index: int
    clips: list[Clip]
    landmarks: str = "dlib"
    energy: bool = False

    @property
    def name(self) -> str:
        return f"{self.split}/shard-{self.index:05d}.safetensors"

    @property
    def clip_hash(self) -> str:
        return clip_list_hash(self.clips, self.landmarks, self.energy)


def clip_list_hash(clips: Iterable[Clip], landmarks: str = "dlib", energy: bool = False) -> str:
    """Identifies a clip list, the cache format, the landmark source and the audio features, so a stale shard is
    redone, not reused."""
    digest = hashlib.sha256(f"talkface-cache-v{FORMAT_VERSION}\n".encode())
    if landmarks != "dlib":  # (dlib caches keep the hash they always had)
        digest.update(f"landmarks={landmarks}\n".encode())
    if energy:  # (and caches without the energy coefficient theirs)
        digest.update(b"energy\n")
    for clip in clips:
        digest.update(f"{clip.split}\t{clip.clip_id}\t{clip.word}\n".encode())
    return digest.hexdigest()[:16]


def plan_shards(clips: list[Clip], shard_size: int = SHARD_SIZE, landmarks: str = "dlib",
                energy: bool = False) -> list[Shard]:
    """Deterministic shards: each split's clips in reader order, cut every `shard_size` clips."""
    shards = []
    for split in dict.fromkeys(c.split for c in clips):
        members = [c for c in clips if c.split == split]
        shards += [Shard(split, k, members[i:i + shard_size], landmarks, energy)
                   for k, i in enumerate(range(0, len(members), shard_size))]
    return shards


def read_shard_meta(path: Path) -> dict | None:
    """The shard's JSON metadata, or None when the file is missing or unreadable."""
    try:
        with safe_open(str(path), framework="np") as f:
            return json.loads(f.metadata()[META_KEY])
    except Exception:  # a damaged file simply counts as not done
        return None


def tool_versions() -> dict:
    import dlib
    import mediapipe
    import torch
    import torchaudio

    import talkface

    return {"talkface": talkface.__version__, "mediapipe": mediapipe.__version__, "dlib": dlib.__version__,
            "opencv": cv2.__version__, "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "imageio_ffmpeg": imageio_ffmpeg.__version__, "ffmpeg": imageio_ffmpeg.get_ffmpeg_version()}


def write_shard(path: Path, shard: Shard, results: list[tuple[Clip, int, dict]],
                skipped: list[dict], extra_meta: dict) -> None:
    """Write atomically: a temporary file renamed into place, so a shard is either whole or absent."""
    n = len(results)
    offsets = np.zeros((n, CLIP_FRAMES + 1), np.int64)
    jpegs = []
    position = 0
    for row, (_, _, r) in enumerate(results):
        for t, blob in enumerate(r["jpegs"]):
            offsets[row, t] = position
            position += len(blob)
            jpegs.append(blob)
        offsets[row, len(r["jpegs"]):] = position  # no frames (exact landmarks): every offset the same
    landmarks = np.stack([r["landmarks"] for _, _, r in results]) if n else np.zeros((0, CLIP_FRAMES, 68, 2))
    tensors = {
        "mfcc": (np.stack([r["mfcc"] for _, _, r in results]) if n
                 else np.zeros((0, CLIP_FRAMES, 28, 12))).astype(np.float16),
        "landmarks": landmarks.astype(np.float32),
        "ref_landmarks": np.ascontiguousarray(landmarks[:, 0]).astype(np.float32),
        "word": np.array([label for _, label, _ in results], np.int64),
        "frames_jpeg": np.frombuffer(b"".join(jpegs), np.uint8).copy(),
        "frame_offsets": offsets,
    }
    meta = {
        **extra_meta,
        "split": shard.split,
        "shard": shard.index,
        "clip_hash": shard.clip_hash,
        "clip_ids": [c.clip_id for c, _, _ in results],
        "videos": [str(c.video) for c, _, _ in results],
        "words": [c.word for c, _, _ in results],
        "transforms": [r["transform"] for _, _, r in results],
        "window_starts": [r["window_start"] for _, _, r in results],
        "num_faces": [r["num_faces"] for _, _, r in results],
        "skipped": skipped,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    os.chmod(tmp, 0o644)  # safetensors creates files readable by their owner only; a cache is shared
    os.replace(tmp, path)


# the job


def _results(clips: list[Clip], workers: int, landmarks: str = "dlib", energy: bool = False
             ) -> Iterator[dict | str]:
    work = partial(_prepare_or_reason, landmarks=landmarks, energy=energy)
    if workers <= 1:
        yield from map(work, clips)
        return
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)
    try:
        yield from pool.map(work, clips, chunksize=1 if landmarks == "dlib" else 16)
    finally:  # on Ctrl-C, wait for the clips in progress only, not for every queued one
        pool.shutdown(cancel_futures=True)


def _write_manifest(out: Path, shards: list[Shard], dataset: str, root: str, clips: list[Clip],
                    vocabulary: list[str], landmarks: str = "dlib", energy: bool = False) -> dict | None:
    """Written once every planned shard exists (by whichever cluster job finishes last)."""
    metas = [read_shard_meta(out / s.name) for s in shards]
    if any(m is None or m["clip_hash"] != s.clip_hash for m, s in zip(metas, shards)):
        return None
    splits: dict[str, dict] = {}
    for shard, meta in zip(shards, metas):
        entry = splits.setdefault(shard.split, {"shards": [], "clips": 0, "skipped": 0})
        entry["shards"].append(shard.name)
        entry["clips"] += len(meta["clip_ids"])
        entry["skipped"] += len(meta["skipped"])
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "root": root,
        "clip_list_hash": clip_list_hash(clips, landmarks, energy),
        "listed_clips": len(clips),
        "landmarks": landmarks,
        "energy": energy,
        "frames": CLIP_FRAMES,
        "vocabulary": vocabulary,
        "splits": splits,
        "versions": metas[0]["versions"] if metas else tool_versions(),
    }
    tmp = out / f"{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    return manifest


def prepare(clips: list[Clip], out: str | Path, dataset: str, vocabulary: list[str], root: str = "",
            shard: tuple[int, int] = (1, 1), workers: int = 1, shard_size: int = SHARD_SIZE,
            progress: bool = True, landmarks: str = "dlib", energy: bool = False) -> dict:
    """Prepare this job's share of `clips` into `out`; returns which shards were written or already done.

    Job i of n takes every n-th shard starting at the i-th (1-based); finished shards whose clip list is
    unchanged are kept as they are, and leftovers of a killed run are removed first. `landmarks`: "dlib"
    (detected on the aligned frames, as the paper does) or "exact" (a synthetic clip's sidecar; no frames).
    `energy`: the MFCC windows carry the relative loudness (``audio.mfcc_windows``).
    """
    job, jobs = shard
    if not 1 <= job <= jobs:
        raise TalkFaceError(f"The shard must be i/n with 1 <= i <= n, not {job}/{jobs}.")
    if landmarks not in LANDMARK_SOURCES:
        raise TalkFaceError(f"Landmarks come from one of {', '.join(LANDMARK_SOURCES)}, not {landmarks!r}.")
    out = Path(out)
    shards = plan_shards(clips, shard_size, landmarks, energy)
    mine = shards[job - 1::jobs]
    todo = [s for s in mine if (read_shard_meta(out / s.name) or {}).get("clip_hash") != s.clip_hash]
    for s in todo:
        for stale in (out / s.split).glob(f"shard-{s.index:05d}.safetensors.tmp-*"):
            stale.unlink()

    labels = {word: i for i, word in enumerate(vocabulary)}
    versions = tool_versions()
    results = _results([c for s in todo for c in s.clips if c.word in labels], workers, landmarks, energy)
    bar = tqdm(total=sum(len(s.clips) for s in todo), unit="clip", disable=not progress)
    for s in todo:
        done, skipped = [], []
        for clip in s.clips:
            unknown = f"the word {clip.word!r} is not in the vocabulary"
            outcome = next(results) if clip.word in labels else unknown
            if isinstance(outcome, str):
                skipped.append({"clip_id": clip.clip_id, "video": str(clip.video), "reason": outcome})
            else:
                done.append((clip, labels[clip.word], outcome))
            bar.update()
        write_shard(out / s.name, s, done, skipped, {"format_version": FORMAT_VERSION, "dataset": dataset,
                                                     "landmarks": landmarks, "energy": energy,
                                                     "versions": versions})
    bar.close()
    manifest = _write_manifest(out, shards, dataset, root, clips, vocabulary, landmarks, energy)
    written = [s.name for s in todo]
    return {"written": written, "kept": [s.name for s in mine if s.name not in written],
            "manifest": manifest}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("lrw", "grid"), required=True)
    parser.add_argument("--root", required=True, help="the dataset folder")
    parser.add_argument("--out", required=True, help="the cache folder")
    parser.add_argument("--shard", default="1/1", help="this job's share, i/n (default 1/1: everything)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE)
    parser.add_argument("--landmarks", choices=LANDMARK_SOURCES, default="dlib",
                        help="dlib: detected on the frames (the paper); exact: a synthetic clip's sidecar, no frames")
    parser.add_argument("--energy", action="store_true",
                        help="MFCC windows with the relative loudness first (audio.mfcc_windows; ours)")
    parser.add_argument("--words", help="LRW only: comma-separated subset of words")
    parser.add_argument("--test-speakers", default=",".join(TEST_SPEAKERS), help="GRID only")
    parser.add_argument("--val-speakers", default="", help="GRID only")
    args = parser.parse_args(argv)

    try:
        job, jobs = (int(x) for x in args.shard.split("/"))
    except ValueError:
        parser.error("--shard must look like 3/8 (job 3 of 8)")
    try:
        if args.dataset == "lrw":
            clips = read_lrw(args.root, words=args.words.split(",") if args.words else None)
            vocabulary = lrw_vocabulary()
        else:
            clips = read_grid(args.root, test_speakers=[s for s in args.test_speakers.split(",") if s],
                              val_speakers=[s for s in args.val_speakers.split(",") if s])
            vocabulary = list(GRID_WORDS)
        if not clips:
            raise TalkFaceError(f"No clips were found under {args.root}; is it a {args.dataset.upper()}-shaped folder?")
        summary = prepare(clips, args.out, args.dataset, vocabulary, root=str(Path(args.root).resolve()),
                          shard=(job, jobs), workers=args.workers, shard_size=args.shard_size,
                          landmarks=args.landmarks, energy=args.energy)
    except TalkFaceError as error:
        raise SystemExit(str(error)) from None
    print(f"wrote {len(summary['written'])} shards, kept {len(summary['kept'])} finished ones")
    if summary["manifest"]:
        for split, entry in summary["manifest"]["splits"].items():
            print(f"{split}: {entry['clips']} clips in {len(entry['shards'])} shards, "
                  f"{entry['skipped']} skipped")
    else:
        print("other jobs' shards are still missing; the manifest is written when the last one finishes")


if __name__ == "__main__":
    main()
