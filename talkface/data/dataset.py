"""Torch Datasets over the preparation cache (see `talkface.data.prepare` for its layout).

`LandmarkDataset` feeds A2L, the word detector and the MI estimator: one 29-frame clip per item.
`FrameDataset` feeds L2F: one (identity frame, target frame) pair per item, decoded from the JPEG frames
cached in the shards (0.6 ms an item measured, against ~75 ms to decode the clip's video and warp again).

Shards are opened lazily with safetensors' memory map, once per process (so DataLoader workers each open
their own); `in_memory=True` reads the small tensors of a split into RAM up front instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from talkface.data.prepare import MANIFEST, META_KEY
from talkface.errors import TalkFaceError

CLIP_TENSORS = ("mfcc", "landmarks", "ref_landmarks", "word")


def read_manifest(cache_dir: str | Path) -> dict:
    """The cache's manifest; it exists only once every shard has been prepared."""
    path = Path(cache_dir) / MANIFEST
    if not path.exists():
        raise TalkFaceError(f"{cache_dir} is not a finished cache; run python -m talkface.data.prepare first.")
    return json.loads(path.read_text())


def landmark_source(manifest: dict) -> str:
    """Where a cache's landmarks come from: "dlib" or "exact" (caches made before the key existed are dlib's)."""
    return manifest.get("landmarks", "dlib")


class _Shards:
    """The shards of one split: row lookup and per-process memory-mapped handles."""

    def __init__(self, cache_dir: str | Path, split: str):
        manifest = read_manifest(cache_dir)
        if split not in manifest["splits"]:
            raise TalkFaceError(f"The cache {cache_dir} has no {split!r} split.")
        self.vocabulary: list[str] = manifest["vocabulary"]
        self.paths = [Path(cache_dir) / name for name in manifest["splits"][split]["shards"]]
        self.rows: list[tuple[int, int]] = []
        self.clip_ids: list[str] = []
        for s, path in enumerate(self.paths):
            with safe_open(str(path), framework="pt") as f:
                ids = json.loads(f.metadata()[META_KEY])["clip_ids"]
            self.rows += [(s, r) for r in range(len(ids))]
            self.clip_ids += ids
        self._handles: dict[int, list] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}  # open handles do not travel to DataLoader workers

    def handle(self, shard: int):
        handles = self._handles.setdefault(os.getpid(), [None] * len(self.paths))
        if handles[shard] is None:
            handles[shard] = safe_open(str(self.paths[shard]), framework="pt")
        return handles[shard]

    def row(self, shard: int, row: int, name: str) -> torch.Tensor:
        return self.handle(shard).get_slice(name)[row]

    def frame(self, shard: int, row: int, t: int) -> np.ndarray:
        """Aligned frame t of a clip, 256x256x3 uint8 RGB."""
        offsets = self.row(shard, row, "frame_offsets")
        blob = self.handle(shard).get_slice("frames_jpeg")[int(offsets[t]):int(offsets[t + 1])]
        return cv2.cvtColor(cv2.imdecode(blob.numpy(), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


class LandmarkDataset(Dataset):
    """Clips of one split: mfcc (T,28,12), landmarks (T,68,2), ref_landmarks (68,2), word, clip_id.

    Landmarks are in pixels of the 256x256 aligned crop; `word` indexes `self.vocabulary`.
    """

    def __init__(self, cache_dir: str | Path, split: str, in_memory: bool = False):
        self.shards = _Shards(cache_dir, split)
        self.vocabulary = self.shards.vocabulary
        self._memory: list[dict[str, torch.Tensor]] | None = None
        if in_memory:
            self._memory = [{k: self.shards.handle(s).get_tensor(k) for k in CLIP_TENSORS}
                            for s in range(len(self.shards.paths))]

    def __len__(self) -> int:
        return len(self.shards.rows)

    def __getitem__(self, index: int) -> dict:
        shard, row = self.shards.rows[index]
        if self._memory is not None:
            item = {k: self._memory[shard][k][row] for k in CLIP_TENSORS}
        else:
            item = {k: self.shards.row(shard, row, k) for k in CLIP_TENSORS}
        item["mfcc"] = item["mfcc"].float()
        item["clip_id"] = self.shards.clip_ids[index]
        return item


def _to_tensor(frame: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float in [-1, 1], the generator's image range."""
    return torch.from_numpy(frame).permute(2, 0, 1).float() / 127.5 - 1.0


class FrameDataset(Dataset):
    """(identity, target) frame pairs of one split, for L2F.

    ``identity="first"``: the identity image is each clip's reference frame (frame 0, the frame the alignment
    was computed on, and whose landmarks A2L gets as `ref_landmarks`) — the evaluation's fixed pairing.
    ``identity="any"``: another frame of the same clip, a different one for each target (a fixed function of
    the item's index, so runs stay reproducible and resumable). Training on these teaches the generator to
    close a mouth the photo shows open as well as to open a closed one, as users' photos need.
    Every other frame of the clip is one target, so an item never pairs a frame with itself. Images are
    3x256x256 float in [-1, 1]; landmarks crop pixels. Frames share one crop per clip, so any pair aligns.
    """

    IDENTITIES = ("first", "any")

    def __init__(self, cache_dir: str | Path, split: str, identity: str = "first"):
        if identity not in self.IDENTITIES:
            raise ValueError(f"identity must be one of {self.IDENTITIES}, got {identity!r}")
        manifest = read_manifest(cache_dir)
        if landmark_source(manifest) != "dlib":
            raise TalkFaceError(f"The cache {cache_dir} holds no frames (prepared with --landmarks "
                                f"{landmark_source(manifest)}); L2F needs a cache prepared with --landmarks dlib.")
        self.shards = _Shards(cache_dir, split)
        self.frames = manifest["frames"]
        self.identity = identity

    def __len__(self) -> int:
        return len(self.shards.rows) * (self.frames - 1)

    def identity_frame(self, index: int) -> int:
        """The frame paired as identity with item ``index``'s target (never the target itself)."""
        clip, t = divmod(index, self.frames - 1)
        if self.identity == "first":
            return 0
        # a hash of the index, spread over the clip's other frames: an offset 1..frames-1 from the target
        offset = 1 + (clip * 7919 + t * 104729) % (self.frames - 1)
        return (t + 1 + offset) % self.frames

    def __getitem__(self, index: int) -> dict:
        clip, t = divmod(index, self.frames - 1)
        t += 1
        ref = self.identity_frame(index)
        shard, row = self.shards.rows[clip]
        landmarks = self.shards.row(shard, row, "landmarks")
        return {
            "identity": _to_tensor(self.shards.frame(shard, row, ref)),
            "identity_landmarks": landmarks[ref],
            "target": _to_tensor(self.shards.frame(shard, row, t)),
            "target_landmarks": landmarks[t],
            "clip_id": self.shards.clip_ids[clip],
            "frame": t,
            "identity_frame": ref,
        }
