"""What the three A2L-side trainers share: clips as normalised landmark batches, and the model record.

The word detector, the MI estimator and the landmark predictor all read `LandmarkDataset` clips and work
in the canonical landmark frame of `talkface.face.normalise_landmarks`, each frame normalised with its
own head pose (Procrustes on the nose and eye corners): audio cannot predict where the head turns, so
pose is taken out of both input and target, and put back (with the ground truth's pose) only to
measure LMD in crop pixels. The app does the same with the photo's pose.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from talkface import audio
from talkface.data.dataset import LandmarkDataset, landmark_source, read_manifest
from talkface.errors import TalkFaceError
from talkface.face import Similarity, denormalise_landmarks, normalise_landmarks

# What the landmarks of a cache are (its manifest's "landmarks"), as every A2L-side checkpoint records it.
LANDMARKS = {
    "dlib": "68 dlib points, each frame in the canonical frame of talkface.face.normalise_landmarks",
    "exact": "68 points, the synthetic corpus's exact landmarks (the photo's dlib points moved by its "
             "articulation model), each frame in the canonical frame of talkface.face.normalise_landmarks",
}


def features(manifest: dict[str, Any]) -> dict[str, Any]:
    """The input definition an A2L-side checkpoint records; loading checks the audio part (talkface.audio)."""
    return {**audio.FEATURES, "energy": bool(manifest.get("energy", False)),
            "landmarks": LANDMARKS[landmark_source(manifest)]}


@dataclass
class LandmarkBatch:
    """One batch on the device: model inputs/targets in the canonical frame, plus what LMD needs."""

    mfcc: torch.Tensor  # (B, T, 28, 12)
    landmarks: torch.Tensor  # (B, T, 68, 2) canonical frame
    ref: torch.Tensor  # (B, 68, 2) canonical frame
    words: torch.Tensor  # (B,)
    pixels: torch.Tensor  # (B, T, 68, 2) ground truth, crop pixels
    pose: Similarity  # per frame, canonical frame <-> crop pixels

    def to_pixels(self, landmarks: torch.Tensor) -> torch.Tensor:
        """Canonical-frame landmarks (B, T, 68, 2) → crop pixels, with the ground truth's head pose."""
        return denormalise_landmarks(landmarks, self.pose)


def to_batch(batch: dict[str, Any], device: torch.device) -> LandmarkBatch:
    pixels = batch["landmarks"].to(device).float()
    landmarks, pose = normalise_landmarks(pixels)
    ref, _ = normalise_landmarks(batch["ref_landmarks"].to(device).float())
    return LandmarkBatch(
        mfcc=batch["mfcc"].to(device).float(),
        landmarks=landmarks,
        ref=ref,
        words=batch["word"].to(device),
        pixels=pixels,
        pose=pose,
    )


def load_data(cache: str, extra: Sequence[str] = ()) -> tuple[Dataset, dict[str, Dataset], dict[str, Any]]:
    """The training split, the evaluation splits present (val, test) and the cache manifest.

    `extra` caches (e.g. of the synth "extra" preset: more takes per word) add their training clips only;
    evaluation stays on the main cache's val/test, so runs with and without them are measured alike. Their
    manifests are kept under the manifest's "extra" key for the checkpoint's data record. Clips are small
    (29 × (28×12 + 68×2) numbers), so whole splits are read into memory.
    """
    manifest = read_manifest(cache)
    evaluation = {s: LandmarkDataset(cache, s, in_memory=True) for s in ("val", "test") if s in manifest["splits"]}
    train = [LandmarkDataset(cache, "train", in_memory=True)]
    extra_manifests = []
    for other in extra:
        extra_manifests.append(read_manifest(other))
        if extra_manifests[-1]["vocabulary"] != manifest["vocabulary"]:
            raise TalkFaceError(f"The cache {other} labels its words otherwise than {cache}; prepare both alike.")
        if landmark_source(extra_manifests[-1]) != landmark_source(manifest):
            raise TalkFaceError(f"The cache {other} holds {landmark_source(extra_manifests[-1])} landmarks "
                                f"and {cache} {landmark_source(manifest)} ones; prepare both alike.")
        if bool(extra_manifests[-1].get("energy", False)) != bool(manifest.get("energy", False)):
            raise TalkFaceError(f"The caches {other} and {cache} hold different audio features (one with the "
                                "loudness coefficient, one without); prepare both alike (prepare.py --energy).")
        train.append(LandmarkDataset(other, "train", in_memory=True))
    if extra_manifests:
        manifest = {**manifest, "extra": extra_manifests}
    return (train[0] if len(train) == 1 else ConcatDataset(train)), evaluation, manifest


def data_record(manifest: dict[str, Any]) -> dict[str, Any]:
    """Which data a checkpoint learnt from, for its JSON and model card."""
    record = {
        **{k: manifest.get(k) for k in ("dataset", "clip_list_hash", "listed_clips")},
        "landmarks": landmark_source(manifest),
        "clips": {name: split["clips"] for name, split in manifest.get("splits", {}).items()},
        "words": len(manifest.get("vocabulary", [])),
    }
    if manifest.get("extra"):
        record["extra_training_data"] = [data_record(m) for m in manifest["extra"]]
    return record


# Every model card ends with where the data came from and what that means for use.
DATA_AND_LICENCES = """## Data and licences

- Trained on TalkFace's **synthetic** LRW-shaped corpus (`talkface.data.synth`), not on LRW or GRID (they
  cannot be downloaded where TalkFace is built): real, clearly licensed photos (NASA astronaut portrait, public
  domain; Solvay 1927 conference photo, public domain; KPhotoAlbum demo album, GPL-2+) animated by a
  phone-driven mouth model, with eSpeak NG / Flite / Festival speech and real recorded speech (Asterisk
  prompts by Allison Smith, CC-BY-SA-3.0). Figures above are on that corpus's held-out faces and voices; they
  say nothing about LRW or GRID.
- Landmarks are dlib's 68-point shape predictor (`face-recognition-models`), trained on iBUG 300-W, whose
  licence excludes commercial use: so does anything trained on its landmarks, this checkpoint included. A cache
  with `"landmarks": "exact"` (see Data above) holds the synthetic corpus's exact landmarks instead of dlib's
  re-detection on its frames: each photo's dlib landmarks moved by the corpus's articulation model, so the
  same licence note applies.
- Code: MIT.
"""


def write_model_card(stem: Path, title: str, summary: list[str], config: dict[str, Any], model: nn.Module) -> None:
    """STEM.md next to the checkpoint: what it is, how it was trained, what it measured."""
    params = sum(p.numel() for p in model.parameters())
    size_mb = stem.with_name(stem.name + ".safetensors").stat().st_size / 1e6
    data = config["data"]
    training = config["training"]
    lines = [
        f"# {title}",
        "",
        *summary,
        "",
        f"- {type(model).__name__}, {params / 1e6:.2f} M parameters, {size_mb:.1f} MB (fp16).",
        f"- Trained {training['steps']} steps ({training['seconds'] / 60:.0f} min on {training['device']}).",
        f"- Data: `{data.get('dataset')}` cache, {data.get('landmarks', 'dlib')} landmarks, clip list hash "
        f"`{data.get('clip_list_hash')}`, clips {data['clips']}.",
        *(f"- More training clips: `{x.get('dataset')}` cache, clip list hash `{x.get('clip_list_hash')}`, "
          f"clips {x['clips']}." for x in data.get("extra_training_data", [])),
        f"- Command: `{training['command']}`",
        "",
        "## Measured",
        "",
        "| split | metric | value |",
        "|---|---|---|",
        *(f"| {split} | {k} | {v:.4f} |" for split, m in config["metrics"].items() for k, v in m.items()),
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n" + DATA_AND_LICENCES)


# Augmentations of landmark sequences (B, T, 68, 2), for the word detector: a judge of *predicted* landmarks
# should not hinge on details that predictions never get exactly right (sharp timing, the speaker's amplitude).


def smooth(x: torch.Tensor, width: int) -> torch.Tensor:
    """A Hann low-pass over time (B, T, 68, 2), edges replicated; width <= 1 leaves x as it is."""
    if width <= 1:
        return x
    kernel = torch.hann_window(width + 2)[1:-1]
    b, t = x.shape[:2]
    flat = x.reshape(b, t, -1).transpose(1, 2).reshape(-1, 1, t)
    flat = F.conv1d(F.pad(flat, (width // 2, (width - 1) // 2), mode="replicate"), (kernel / kernel.sum())[None, None])
    return flat.reshape(b, -1, t).transpose(1, 2).reshape(x.shape)


def stretch(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Each clip resampled in time about its centre by a random speed in [1 - amount, 1 + amount]."""
    if amount <= 0:
        return x
    b, t = x.shape[:2]
    speed = torch.empty(b, device=x.device).uniform_(1 - amount, 1 + amount)
    centre = (t - 1) / 2
    pos = (centre + (torch.arange(t, dtype=x.dtype, device=x.device)[None] - centre) * speed[:, None]).clamp(0, t - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=t - 1)
    w = (pos - lo)[..., None, None]
    rows = torch.arange(b, device=x.device)[:, None]
    return x[rows, lo] * (1 - w) + x[rows, hi] * w


def random_blur(x: torch.Tensor, max_sigma: float, radius: int = 4) -> torch.Tensor:
    """Each clip low-passed over time by a Gaussian of random width σ ∈ [0, max_sigma] frames (edges replicated).

    Why: the A2L predictor's landmarks are smoother than real ones (it averages what the audio leaves open), and
    a detector that only ever saw sharp motion reads low-passed ground truth markedly worse.
    """
    if max_sigma <= 0:
        return x
    b, t = x.shape[:2]
    sigma = torch.empty(b, 1, device=x.device).uniform_(0, max_sigma).clamp_min(1e-3)
    k = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    weights = torch.softmax(-(k[None] ** 2) / (2 * sigma**2), dim=1)  # (B, 2r+1), a normalised Gaussian
    padded = torch.cat([x[:, :1].expand(-1, radius, *x.shape[2:]), x, x[:, -1:].expand(-1, radius, *x.shape[2:])], 1)
    return sum(weights[:, i, None, None, None] * padded[:, i : i + t] for i in range(2 * radius + 1))


def random_amplitude(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Each clip's motion about its mean shape scaled by a random factor in [1 - amount, 1 + amount].

    Why: how wide a speaker opens is not in the audio, so predictions move with an average amplitude; the word
    is in the shape and timing of the motion, not in its size.
    """
    if amount <= 0:
        return x
    factor = torch.empty(x.shape[0], 1, 1, 1, device=x.device).uniform_(1 - amount, 1 + amount)
    mean = x.mean(dim=1, keepdim=True)
    return mean + factor * (x - mean)


def channel_augment(mfcc: torch.Tensor, offset: float) -> torch.Tensor:
    """Each clip's MFCCs (B, T, 28, 12) shifted by a random constant per coefficient, N(0, offset × its std).

    Why: a microphone, a room or a vocal tract is (nearly) a linear filter, and a filter adds a constant to
    every cepstral frame. Real recordings sit off the corpus's synthetic voices this way (the GRID clips'
    means lie 0.5–1 std away on most coefficients), so the predictor should not read the mouth off the offset.
    """
    if offset <= 0:
        return mfcc
    std = mfcc.flatten(0, 2).std(dim=0)  # (12,) per coefficient, over the batch
    return mfcc + offset * std * torch.randn(mfcc.shape[0], 1, 1, mfcc.shape[-1], device=mfcc.device)


@functools.cache
def _warp_bank(amount: float, energy: bool, steps: int = 33) -> torch.Tensor:
    """The cepstral matrices of VTLP factors evenly over [1 - amount, 1 + amount] (built once per run)."""
    alphas = torch.linspace(1 - amount, 1 + amount, steps)
    return torch.stack([audio.vocal_tract_warp(float(a), energy) for a in alphas])


def speaker_augment(mfcc: torch.Tensor, amount: float, energy: bool = False) -> torch.Tensor:
    """Each clip's MFCCs (B, T, 28, 12) as if spoken by a vocal tract scaled by a random factor in
    [1 - amount, 1 + amount] (`audio.vocal_tract_warp`; VTLP, Jaitly & Hinton 2013).

    Why: the corpus's ~720 voices come from a handful of synthesisers; longer training fits them better and
    real speakers worse (docs/real_video.md), so every clip is given a different formant scale each time.
    """
    if amount <= 0:
        return mfcc
    bank = _warp_bank(float(amount), bool(energy))
    pick = torch.randint(len(bank), (mfcc.shape[0],))
    matrices = bank[pick].to(mfcc.device, mfcc.dtype)  # (B, 12, 12)
    return torch.einsum("btwc,bdc->btwd", mfcc, matrices)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Flags every A2L-side trainer has: I/O, resuming, logging cadence, optimiser, data loading. Steps, batch
    size and learning rate come from the trainer's recipe (train/recipes.py)."""
    # I/O
    p.add_argument("--cache", required=True, help="prepared cache (python -m talkface.data.prepare)")
    p.add_argument("--extra-cache", action="append", default=[],
                   help="another cache whose training clips are added (its val/test are not used); repeatable")
    p.add_argument("--out", required=True, help="run folder: logs, resumable state, final checkpoint")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.safetensors")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--val-every", type=int, default=500, help="evaluate on the val split every N steps")
    p.add_argument("--save-every", type=int, default=200, help="write the resumable state every N steps")
    # optimiser and data
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float, help="peak learning rate (Adam), cosine decay to 10%%")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=0, help="> 0 is faster; resume is then not bit-exact")


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak at --max-steps (nanoGPT's schedule)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.max_steps - args.warmup))
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
