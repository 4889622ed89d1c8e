"""Dataset readers, the preparation cache and the torch Datasets, on tiny LRW- and GRID-shaped trees.

The trees are made here from a real photo (skimage's astronaut), moved a little from frame to frame,
with a speech-like sound track (a voiced source through changing vowel formants), written as mp4 (LRW)
and mpeg-1 .mpg (GRID) by the ffmpeg binary that ships with imageio-ffmpeg.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import scipy.signal
import skimage.data
import soundfile
import torch

from talkface.data import prepare as prep
from talkface.data.dataset import FrameDataset, LandmarkDataset
from talkface.data.grid import GRID_WORDS, TEST_SPEAKERS, parse_grid_align, read_grid
from talkface.data.lrw import Clip, lrw_vocabulary, parse_lrw_txt, read_lrw, write_lrw_txt
from talkface.face import TEMPLATE
from talkface.models.audio_word_probe import AudioWordProbe
from talkface.video import read_video

WORDS = ["ABOUT", "ABSOLUTELY", "ACCESS"]
CLIPS_PER_SPLIT = {"train": 2, "val": 1, "test": 1}
SHARD_SIZE = 2
FACE_CENTRE = (225.0, 125.0)  # astronaut photo pixels, between the eyes and the mouth
VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)]


# helpers


def speech_like(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    """Syllables of a voiced source (jittery 100-140 Hz sawtooth) through vowel formants, with pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, 6))
    source = scipy.signal.sawtooth(2 * np.pi * np.cumsum(f0) / rate) + 0.05 * rng.standard_normal(n)
    out = np.zeros(n)
    syllable = int(0.18 * rate)
    for start in range(int(0.15 * rate), n - syllable - int(0.1 * rate), syllable):
        segment = source[start : start + syllable]
        for formant, bandwidth in zip(VOWELS[rng.integers(len(VOWELS))], (80, 100, 120)):
            r = math.exp(-math.pi * bandwidth / rate)
            theta = 2 * math.pi * formant / rate
            segment = scipy.signal.lfilter([1 - r], [1, -2 * r * math.cos(theta), r * r], segment)
        out[start : start + syllable] = segment * np.hanning(syllable)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def face_frames(num: int, size: tuple[int, int], face_scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's face centred in a `size` (w, h) frame, drifting a few pixels: frames and shifts."""
    photo = skimage.data.astronaut()
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 2)
    t = np.arange(num)
    shifts = np.stack([3 * np.sin(2 * np.pi * t / 20 + phase[0]), 2 * np.sin(2 * np.pi * t / 15 + phase[1])], 1)
    frames = []
    for dx, dy in shifts:
        m = np.array(
            [
                [face_scale, 0, size[0] / 2 + dx - face_scale * FACE_CENTRE[0]],
                [0, face_scale, size[1] / 2 + dy - face_scale * FACE_CENTRE[1]],
            ]
        )
        frames.append(cv2.warpAffine(photo, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames), shifts


def write_video(path: Path, frames: np.ndarray, audio: np.ndarray, codec: str, audio_codec: str) -> None:
    wav = path.with_suffix(".wav")
    soundfile.write(wav, audio, 16000)
    h, w = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (w, h),
        fps=25,
        codec=codec,
        quality=9,
        macro_block_size=8,
        audio_path=str(wav),
        audio_codec=audio_codec,
        ffmpeg_log_level="error",
        output_params=["-ar", "32000"] if audio_codec == "mp2" else None,
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    wav.unlink()


def make_lrw_tree(root: Path) -> dict[str, np.ndarray]:
    """3 words x train (2) / val / test clips of 29 frames, plus one clip with no face in it."""
    shifts = {}
    seed = 0
    for word in WORDS:
        for split, count in CLIPS_PER_SPLIT.items():
            for k in range(1, count + 1):
                seed += 1
                folder = root / word / split
                folder.mkdir(parents=True, exist_ok=True)
                frames, shifts[f"{split}/{word}_{k:05d}"] = face_frames(29, (256, 256), 0.9, seed)
                write_video(folder / f"{word}_{k:05d}.mp4", frames, speech_like(1.16, seed), "libx264", "aac")
                write_lrw_txt(folder / f"{word}_{k:05d}.txt", word, 0.35 + 0.01 * k, 0.75)
    blank = np.full((29, 256, 256, 3), 128, np.uint8)
    write_video(root / "ACCESS" / "test" / "ACCESS_00002.mp4", blank, speech_like(1.16, 99), "libx264", "aac")
    write_lrw_txt(root / "ACCESS" / "test" / "ACCESS_00002.txt", "ACCESS", 0.4, 0.7)
    return shifts


GRID_ALIGN = [
    (0, 11250, "sil"),
    (11250, 17500, "bin"),
    (17500, 23750, "blue"),
    (23750, 27500, "at"),
    (27500, 31250, "f"),
    (31250, 38750, "two"),
    (38750, 45000, "now"),
    (45000, 50000, "sil"),
]


def make_grid_tree(root: Path) -> None:
    """Speakers s1 (a default test speaker) and s3, two 50-frame sentences each, 360x288 mpeg-1."""
    for n, speaker in enumerate(["s1", "s3"]):
        for k, name in enumerate(["bbaf2n", "lgbs5a"]):
            (root / speaker).mkdir(parents=True, exist_ok=True)
            frames, _ = face_frames(50, (360, 288), 0.8, 50 + 2 * n + k)
            write_video(root / speaker / f"{name}.mpg", frames, speech_like(2.0, 50 + 2 * n + k), "mpeg1video", "mp2")
            align = root / "alignments" / speaker / f"{name}.align"
            align.parent.mkdir(parents=True, exist_ok=True)
            align.write_text("".join(f"{a} {b} {w}\n" for a, b, w in GRID_ALIGN))


# fixtures


@pytest.fixture(scope="module")
def lrw_tree(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("lrw")
    shifts = make_lrw_tree(root)
    (root / "ABOUT" / "train" / "ABOUT_00001.json").write_text("{}")  # a synthetic-corpus sidecar
    (root / "NOTAWORD" / "test").mkdir(parents=True)  # a word outside the 500: listed, then skipped
    (root / "NOTAWORD" / "test" / "NOTAWORD_00001.mp4").write_bytes(b"")
    return root, shifts


@pytest.fixture(scope="module")
def grid_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    make_grid_tree(root)
    return root


@pytest.fixture(scope="module")
def lrw_cache(lrw_tree, tmp_path_factory) -> tuple[Path, list[dict]]:
    """Prepared as two cluster jobs, 1/2 then 2/2, then both rerun."""
    root, _ = lrw_tree
    out = tmp_path_factory.mktemp("lrw_cache")
    clips = read_lrw(root)
    runs = [
        prep.prepare(clips, out, "lrw", lrw_vocabulary(), shard=job, shard_size=SHARD_SIZE, progress=False)
        for job in [(1, 2), (2, 2), (1, 2), (2, 2)]
    ]
    return out, runs


def shard_meta(cache: Path) -> list[dict]:
    manifest = json.loads((cache / "manifest.json").read_text())
    return [prep.read_shard_meta(cache / name) for split in manifest["splits"].values() for name in split["shards"]]


# readers


LRW_EXAMPLE = """Text:  ABOUT
Conf:  4
Duration: 0.27 seconds

WORD START END ASDSCORE
ABOUT 0.37 0.64 4.6
"""


def test_lrw_txt_round_trip(tmp_path):
    path = tmp_path / "ABOUT_00001.txt"
    write_lrw_txt(path, "ABOUT", 0.37, 0.64, conf=4, asd_score=4.6)
    assert path.read_text() == LRW_EXAMPLE
    info = parse_lrw_txt(path)
    assert info["text"] == "ABOUT" and info["conf"] == 4 and info["duration"] == pytest.approx(0.27)
    assert info["words"] == [("ABOUT", 0.37, 0.64)] and info["asd_scores"] == [4.6]
    # without the timing table the word is centred in the 1.16 s clip
    path.write_text("Text:  ABOUT\nConf:  4\nDuration: 0.30 seconds\n")
    assert parse_lrw_txt(path)["words"] == [("ABOUT", 0.43, 0.73)]


def test_read_lrw(lrw_tree):
    root, _ = lrw_tree
    clips = read_lrw(root)
    assert len(clips) == 3 * 4 + 1 + 1
    assert [c.clip_id for c in clips if c.word == "ABOUT"] == [
        "train/ABOUT_00001",
        "train/ABOUT_00002",
        "val/ABOUT_00001",
        "test/ABOUT_00001",
    ]
    first = clips[0]
    assert first.transcript == "ABOUT" and first.split == "train" and first.speaker is None
    assert first.words == [("ABOUT", 0.36, 0.75)] and first.meta == first.video.with_suffix(".json")
    assert clips[1].meta is None
    assert {c.split for c in read_lrw(root, splits=["val"])} == {"val"}
    assert {c.word for c in read_lrw(root, words=["access", "ABOUT"])} == {"ACCESS", "ABOUT"}


def test_grid_align_and_reader(grid_tree, tmp_path):
    align = grid_tree / "alignments" / "s1" / "bbaf2n.align"
    words = parse_grid_align(align)
    assert words[0] == ("sil", 0.0, 0.45) and words[1] == ("bin", 0.45, 0.7) and words[-1][2] == 2.0
    assert len(GRID_WORDS) == len(set(GRID_WORDS)) == 51 and "s1" in TEST_SPEAKERS

    clips = read_grid(grid_tree)
    assert [(c.speaker, c.split, c.video.stem) for c in clips] == [
        ("s1", "test", "bbaf2n"),
        ("s1", "test", "lgbs5a"),
        ("s3", "train", "bbaf2n"),
        ("s3", "train", "lgbs5a"),
    ]
    for clip in clips:
        assert clip.transcript == "bin blue at f two now"
        assert clip.word in clip.transcript.split() and clip.word in GRID_WORDS
    assert len({c.word for c in clips}) > 1  # the labelled word varies from clip to clip
    assert {c.split for c in read_grid(grid_tree, test_speakers=[], val_speakers=["s3"])} == {"train", "val"}

    # GRID's own archives unpack to alignments/sN/align/NAME.align; a video without one has no words
    (tmp_path / "s4").mkdir()
    (tmp_path / "s4" / "bbaf2n.mpg").write_bytes(b"")
    (tmp_path / "s4" / "pgwr6p.mpg").write_bytes(b"")
    (tmp_path / "alignments" / "s4" / "align").mkdir(parents=True)
    align_copy = tmp_path / "alignments" / "s4" / "align" / "bbaf2n.align"
    align_copy.write_text(align.read_text())
    found, missing = read_grid(tmp_path)
    assert found.words == words and missing.words == [] and missing.word is None


# preparation


def test_prepare_is_sharded_and_idempotent(lrw_cache, lrw_tree):
    cache, (job1, job2, rerun1, rerun2) = lrw_cache
    plan = [s.name for s in prep.plan_shards(read_lrw(lrw_tree[0]), SHARD_SIZE)]
    assert len(plan) == 8  # train 6 clips -> 3 shards, val 3 -> 2, test 3 + blank + NOTAWORD -> 3
    assert job1["written"] == plan[0::2] and job2["written"] == plan[1::2]
    assert job1["manifest"] is None and job2["manifest"] is not None  # the last job writes it
    assert rerun1["written"] == rerun2["written"] == [] and sorted(rerun1["kept"] + rerun2["kept"]) == sorted(plan)
    assert not list(cache.rglob("*.tmp-*"))

    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["vocabulary"] == lrw_vocabulary() and manifest["listed_clips"] == 14
    assert {s: (e["clips"], e["skipped"]) for s, e in manifest["splits"].items()} == {
        "train": (6, 0),
        "val": (3, 0),
        "test": (3, 2),
    }
    metas = shard_meta(cache)
    ids = [i for m in metas for i in m["clip_ids"]]
    assert len(ids) == len(set(ids)) == 12
    reasons = {s["clip_id"]: s["reason"] for m in metas for s in m["skipped"]}
    assert reasons.keys() == {"test/ACCESS_00002", "test/NOTAWORD_00001"}
    assert reasons["test/ACCESS_00002"].startswith("FaceError") and "vocabulary" in reasons["test/NOTAWORD_00001"]
    assert metas[0]["versions"]["dlib"] and all(np.array(t).shape == (2, 3) for m in metas for t in m["transforms"])


def test_landmark_dataset(lrw_cache, lrw_tree):
    cache, _ = lrw_cache
    _, shifts = lrw_tree
    train = LandmarkDataset(cache, "train")
    assert len(train) == 6 and len(LandmarkDataset(cache, "test")) == 3
    metas = {i: (m, k) for m in shard_meta(cache) for k, i in enumerate(m["clip_ids"])}
    eyes = np.array([TEMPLATE["right_eye"], TEMPLATE["left_eye"]])
    for item in train:
        assert item["mfcc"].shape == (29, 28, 12) and item["mfcc"].dtype == torch.float32
        assert item["landmarks"].shape == (29, 68, 2) and item["ref_landmarks"].shape == (68, 2)
        assert torch.isfinite(item["mfcc"]).all() and item["mfcc"].std(dim=0).mean() > 0.1
        assert torch.equal(item["ref_landmarks"], item["landmarks"][0])
        word = item["clip_id"].split("/")[1].split("_")[0]
        assert item["word"].dtype == torch.int64 and train.vocabulary[item["word"]] == word

        # the landmarks sit on the face: eye centres where the alignment puts them, all inside the crop
        lm = item["landmarks"].numpy()
        assert ((lm > 0) & (lm < 256)).all()
        found_eyes = np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)], 1)
        assert np.abs(found_eyes[0] - eyes).max() < 3
        # every frame is warped with frame 0's transform, so the landmarks follow the face's drift
        meta, row = metas[item["clip_id"]]
        linear = np.array(meta["transforms"][row])[:, :2]
        drift = shifts[item["clip_id"]] - shifts[item["clip_id"]][0]
        expected = drift @ linear.T
        moved = lm[:, 27:36].mean(1) - lm[0, 27:36].mean(0)  # the nose: still while speaking
        assert np.abs(expected).max() > 3 and np.median(np.abs(moved - expected)) < 1.0

    in_memory = LandmarkDataset(cache, "train", in_memory=True)
    for a, b in zip(train, in_memory):
        assert a["clip_id"] == b["clip_id"] and all(torch.equal(a[k], b[k]) for k in ("mfcc", "landmarks", "word"))
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert batch["mfcc"].shape == (4, 29, 28, 12) and len(batch["clip_id"]) == 4


def test_frame_dataset_any_identity(lrw_cache):
    """identity="any": another frame of the same clip, never the target, the same on every call, and spread
    over the clip (so the generator learns to close a mouth as well as to open one)."""
    cache, _ = lrw_cache
    first, other = FrameDataset(cache, "val"), FrameDataset(cache, "val", identity="any")
    assert len(other) == len(first)
    refs = [other.identity_frame(i) for i in range(len(other))]
    assert refs == [other.identity_frame(i) for i in range(len(other))]
    targets = [other[i]["frame"] for i in range(0, len(other), 7)]
    assert all(r != t for r, t in zip(refs[::7], targets, strict=True))
    assert all(0 <= r < other.frames for r in refs) and len(set(refs)) > other.frames // 2
    item, ref = other[30], refs[30]
    assert item["identity_frame"] == ref and first[30]["identity_frame"] == 0
    shifted = first[28 + ref - 1]  # the item of the same clip whose target is that frame
    assert torch.equal(item["identity"], shifted["target"])
    assert torch.equal(item["identity_landmarks"], shifted["target_landmarks"])
    with pytest.raises(ValueError):
        FrameDataset(cache, "val", identity="random")


def test_frame_dataset(lrw_cache, lrw_tree):
    cache, _ = lrw_cache
    frames = FrameDataset(cache, "val")
    assert len(frames) == 3 * 28
    landmarks = LandmarkDataset(cache, "val")
    item = frames[28 + 4]  # second clip, frame 5
    assert item["frame"] == 5 and item["clip_id"] == landmarks[1]["clip_id"]
    assert item["identity"].shape == item["target"].shape == (3, 256, 256)
    assert -1 <= item["target"].min() and item["target"].max() <= 1 and item["target"].std() > 0.2
    assert torch.equal(item["identity_landmarks"], landmarks[1]["ref_landmarks"])
    assert torch.equal(item["target_landmarks"], landmarks[1]["landmarks"][5])
    assert (item["identity"] - item["target"]).abs().mean() > 0.01  # a different frame of the same face

    # the cached identity frame is the aligned first frame of the video (up to JPEG error)
    video = lrw_tree[0] / "ABOUT" / "val" / "ABOUT_00001.mp4"
    meta = next(m for m in shard_meta(cache) if "val/ABOUT_00001" in m["clip_ids"])
    transform = np.array(meta["transforms"][meta["clip_ids"].index("val/ABOUT_00001")], np.float32)
    first = cv2.warpAffine(
        read_video(video)[0][0], transform, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    identity = frames[0]["identity"]
    assert frames[0]["clip_id"] == "val/ABOUT_00001"
    assert (identity - torch.from_numpy(first).permute(2, 0, 1) / 127.5 + 1).abs().mean() < 0.02


def test_prepare_grid_command_line(grid_tree, tmp_path, capsys):
    out = tmp_path / "cache"
    prep.main(["--dataset", "grid", "--root", str(grid_tree), "--out", str(out), "--shard-size", "2", "--workers", "2"])
    assert "test: 2 clips in 1 shards, 0 skipped" in capsys.readouterr().out
    clips = {c.clip_id: c for c in read_grid(grid_tree)}
    for split in ("train", "test"):
        data = LandmarkDataset(out, split)
        assert data.vocabulary == GRID_WORDS and len(data) == 2
        meta = prep.read_shard_meta(out / split / "shard-00000.safetensors")
        for row, item in enumerate(data):
            clip = clips[item["clip_id"]]
            assert GRID_WORDS[item["word"]] == clip.word and item["landmarks"].shape == (29, 68, 2)
            assert meta["window_starts"][row] == prep.window_start(clip, 50)


def test_killed_preparation_leaves_no_partial_shard(grid_tree, tmp_path, monkeypatch):
    clips = read_grid(grid_tree)
    out = tmp_path / "cache"
    run = dict(out=out, dataset="grid", vocabulary=GRID_WORDS, shard_size=2, progress=False)
    real_prepare_clip, real_save = prep.prepare_clip, prep.save_file
    calls = []

    def dies_on_third_clip(clip: Clip, energy: bool = False) -> dict:
        calls.append(clip.clip_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is killed while its second shard is half done
        return real_prepare_clip(clip, energy=energy)

    monkeypatch.setattr(prep, "prepare_clip", dies_on_third_clip)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(clips, **run)
    assert (out / "test" / "shard-00000.safetensors").exists()
    assert not (out / "train").exists() and not (out / "manifest.json").exists()

    def dies_while_writing(tensors, filename, metadata):
        # half a file, then the machine goes down; the rerun is another process, so another pid
        Path(filename.replace(f"tmp-{os.getpid()}", "tmp-1")).write_bytes(b"\x00" * 1000)
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "prepare_clip", real_prepare_clip)
    monkeypatch.setattr(prep, "save_file", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(clips, **run)
    assert [p.name for p in (out / "train").iterdir()] == ["shard-00000.safetensors.tmp-1"]

    monkeypatch.setattr(prep, "save_file", real_save)
    summary = prep.prepare(clips, **run)
    assert summary["written"] == ["train/shard-00000.safetensors"]
    assert summary["kept"] == ["test/shard-00000.safetensors"]
    assert sorted(p.name for p in (out / "train").iterdir()) == ["shard-00000.safetensors"]
    ids = [i for m in shard_meta(out) for i in m["clip_ids"]]
    assert sorted(ids) == sorted(c.clip_id for c in clips)


def test_a_failure_of_the_machine_stops_preparation_instead_of_skipping_the_clip(grid_tree, tmp_path, monkeypatch):
    """Out of memory (or disk) on one clip: the job stops with a sentence before that shard is written, and the
    rerun prepares the clip; a clip that is itself bad (no face) is still only skipped."""
    import errno

    clips = read_grid(grid_tree)
    out = tmp_path / "cache"
    run = dict(out=out, dataset="grid", vocabulary=GRID_WORDS, shard_size=2, progress=False)
    real_prepare_clip = prep.prepare_clip
    victim = clips[-1].clip_id

    def out_of_disk(clip: Clip, energy: bool = False) -> dict:
        if clip.clip_id == victim:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_prepare_clip(clip, energy=energy)

    monkeypatch.setattr(prep, "prepare_clip", out_of_disk)
    with pytest.raises(prep.TransientFailure, match="the machine, not the clip: run the same command again"):
        prep.prepare(clips, **run)
    monkeypatch.setattr(prep, "prepare_clip", real_prepare_clip)
    prep.prepare(clips, **run)
    metas = shard_meta(out)
    assert victim in [i for m in metas for i in m["clip_ids"]] and not [s for m in metas for s in m["skipped"]]


def test_synthetic_corpus_prepares_like_lrw(tmp_path, capsys):
    """Our synthetic corpus goes through the same reader and preparation; dlib's landmarks on its frames
    agree with the generator's own ground truth (its JSON sidecar) mapped into the aligned crop."""
    synth = pytest.importorskip("talkface.data.synth")
    config = dataclasses.replace(synth.PRESETS["tiny"], words=1, per_word={"train": 1, "test": 1})
    synth.generate(tmp_path / "corpus", config, workers=1, progress=False)
    clips = read_lrw(tmp_path / "corpus")
    assert [(c.clip_id, c.word) for c in clips] == [("train/ABOUT_00001", "ABOUT"), ("test/ABOUT_00001", "ABOUT")]
    assert all(c.meta is not None and len(c.words) == 1 for c in clips)

    out = tmp_path / "cache"
    prep.prepare(clips, out, "lrw", lrw_vocabulary(), progress=False)
    for split in ("train", "test"):
        item = LandmarkDataset(out, split)[0]
        meta = prep.read_shard_meta(out / split / "shard-00000.safetensors")
        truth = np.array(json.loads(clips[0 if split == "train" else 1].meta.read_text())["landmarks"])
        transform = np.array(meta["transforms"][0])
        truth_in_crop = truth @ transform[:, :2].T + transform[:, 2]
        error = np.linalg.norm(item["landmarks"].numpy() - truth_in_crop, axis=-1)
        assert error.mean() < 3 and error.mean(axis=1).max() < 4

    # the word detector's diagnosis reads both kinds of landmarks of this corpus
    from experiments import diagnose_word_detector as diagnose

    exact, words = diagnose.exact_landmarks(tmp_path / "corpus", "test", lrw_vocabulary())
    detected, same = diagnose.detected_landmarks(LandmarkDataset(out, "test"))
    assert exact.shape == detected.shape == (1, 29, 68, 2) and words.tolist() == same.tolist() == [0]
    assert (exact - detected).abs().mean() < 0.05  # one canonical frame (inter-ocular distance about 0.5-1)
    extras = {"exact": ["--extra-corpus", str(tmp_path / "corpus")], "dlib": ["--extra-cache", str(out)]}
    for source, extra in extras.items():
        best = diagnose.main(["--cache", str(out), "--corpus", str(tmp_path / "corpus"), "--source", source,
                              "--split", "test", "--steps", "2", "--batch-size", "2"])
        assert 0.0 <= best <= 1.0
        assert f"{source} landmarks, 1 training clips" in capsys.readouterr().out
        diagnose.main(["--cache", str(out), "--corpus", str(tmp_path / "corpus"), "--source", source, *extra,
                       "--split", "test", "--steps", "2", "--batch-size", "2"])
        assert f"{source} landmarks, 2 training clips" in capsys.readouterr().out  # the extra clips are used
    # ... and an A2L predictor's: an untrained one returns the still reference face in every frame
    from talkface.audio import FEATURES
    from talkface.checkpoints import save_checkpoint
    from talkface.models.a2l import LandmarkPredictor

    predictor = LandmarkPredictor(audio_channels=(4, 4, 4), audio_dim=8, landmark_dim=4, hidden=8, num_layers=1)
    stem = save_checkpoint(tmp_path / "a2l", predictor.eval(), {"features": FEATURES})
    predicted, same = diagnose.predicted_landmarks(predictor, LandmarkDataset(out, "test"))
    assert predicted.shape == (1, 29, 68, 2) and same.tolist() == [0]
    torch.testing.assert_close(predicted, predicted[:, :1].expand_as(predicted))
    diagnose.main(["--cache", str(out), "--source", "predicted", "--predictor", str(stem), "--split", "test",
                   "--steps", "2", "--batch-size", "2"])
    assert "predicted landmarks, 1 training clips" in capsys.readouterr().out
    # ... and the clips' audio itself (the word probe on MFCC windows)
    mfcc, same = diagnose.audio_windows(LandmarkDataset(out, "test"))
    assert mfcc.shape == (1, 29, 28, 12) and same.tolist() == [0]
    assert AudioWordProbe(n_words=500).eval()(mfcc).shape == (1, 500)
    probe = tmp_path / "probe.safetensors"
    diagnose.main(["--cache", str(out), "--source", "audio", "--split", "test", "--steps", "2", "--batch-size", "2",
                   "--save", str(probe)])
    assert "audio, 1 training clips" in capsys.readouterr().out
    # its E_a can start a predictor's (train_a2l.py --init-audio-encoder); a file of other tensors is refused
    from safetensors.torch import load_file

    from train.train_a2l import init_audio_encoder

    predictor = LandmarkPredictor()
    init_audio_encoder(predictor, probe)
    saved = load_file(probe)
    for name, tensor in predictor.audio_encoder.state_dict().items():
        torch.testing.assert_close(tensor, saved[f"encoder.{name}"])
    with pytest.raises(SystemExit, match="no encoder"):
        init_audio_encoder(predictor, stem.with_suffix(".safetensors"))

    # and the L2F diagnosis feeds the bundled generator both kinds of ground truth from this cache
    from experiments import diagnose_l2f_landmarks

    rows = diagnose_l2f_landmarks.main(["--cache", str(out), "--clips", "1", "--frames-per-clip", "3"])
    assert set(rows) == {"dlib", "exact targets, dlib identity", "exact both"}
    assert rows["dlib"]["opening_asked"] != rows["exact both"]["opening_asked"]  # two kinds of landmarks
    assert all(np.isfinite(r["lmd"]) and r["lmd"] < 5 and r["psnr"] > 20 for r in rows.values())


def test_exact_landmarks_cache(tmp_path):
    """--landmarks exact: the synthetic clips' own landmarks and the same MFCC as the dlib cache, no frames;
    a clip without a sidecar (real LRW) is skipped with a reason, and L2F refuses the frameless cache."""
    from talkface.data.synth import PRESETS, generate
    from talkface.errors import TalkFaceError

    corpus = tmp_path / "corpus"
    generate(corpus, dataclasses.replace(PRESETS["tiny"], words=1, per_word={"train": 2}), workers=1, progress=False)
    clips = read_lrw(corpus)
    alien = tmp_path / "corpus" / "ABOUT" / "train" / "ABOUT_00009.mp4"
    alien.write_bytes(clips[0].video.read_bytes())  # a video with no sidecar, like a real LRW clip
    clips = read_lrw(corpus)
    prep.prepare(clips, tmp_path / "dlib", "lrw", lrw_vocabulary(), progress=False)
    summary = prep.prepare(clips, tmp_path / "exact", "lrw", lrw_vocabulary(), progress=False, landmarks="exact")
    assert summary["manifest"]["landmarks"] == "exact" and summary["manifest"]["splits"]["train"]["skipped"] == 1
    assert summary["manifest"]["clip_list_hash"] != prep.clip_list_hash(clips)
    reason = shard_meta(tmp_path / "exact")[0]["skipped"][0]
    assert reason["clip_id"] == "train/ABOUT_00009" and "sidecar" in reason["reason"]

    exact, detected = LandmarkDataset(tmp_path / "exact", "train"), LandmarkDataset(tmp_path / "dlib", "train")
    assert len(exact) == 2 and len(detected) == 3
    for k in range(2):
        truth = np.array(json.loads(clips[k].meta.read_text())["landmarks"], np.float32)
        assert np.array_equal(exact[k]["landmarks"].numpy(), truth)
        assert torch.equal(exact[k]["ref_landmarks"], exact[k]["landmarks"][0])
        assert torch.equal(exact[k]["mfcc"], detected[k]["mfcc"]) and exact[k]["word"] == detected[k]["word"]
    with pytest.raises(TalkFaceError, match="no frames"):
        FrameDataset(tmp_path / "exact", "train")
    with pytest.raises(TalkFaceError, match="exact"):
        prep.prepare(clips, tmp_path / "x", "lrw", lrw_vocabulary(), progress=False, landmarks="guessed")

    # --energy: the same clips with the loudness coefficient first (audio.mfcc_windows), recorded in the manifest
    loud = prep.prepare(clips, tmp_path / "energy", "lrw", lrw_vocabulary(), progress=False, landmarks="exact",
                        energy=True)
    assert loud["manifest"]["energy"] is True and summary["manifest"]["energy"] is False
    assert loud["manifest"]["clip_list_hash"] != summary["manifest"]["clip_list_hash"]
    with_energy = LandmarkDataset(tmp_path / "energy", "train")
    for k in range(2):
        assert torch.equal(with_energy[k]["mfcc"][..., 1:], exact[k]["mfcc"][..., :11])
        assert not torch.equal(with_energy[k]["mfcc"][..., 0], exact[k]["mfcc"][..., 0])
