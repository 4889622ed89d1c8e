"""L2F as one unit: landmarks -> heatmaps drawn exactly as in training -> the generator's frames.

One definition for the pipeline (streaming inference), train/evaluate.py (scoring) and the benchmarks.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from talkface.checkpoints import load_checkpoint
from talkface.face import CROP_SIZE
from talkface.models.l2f import HEATMAP_SCALE, HEATMAP_SIGMA, generator_heatmaps


class PreparedIdentity(NamedTuple):
    """What L2F needs of the identity photo, computed once per request (``L2FRenderer.prepare``)."""

    photo: torch.Tensor  # (1, 3, S, S) in [-1, 1]
    heatmaps: torch.Tensor | None  # (1, C, h, h), when the generator reads them
    landmarks: torch.Tensor | None  # (1, 68, 2) in the generator's pixels, when it warps by landmark_flow


class L2FRenderer:
    """Landmarks (pixels of the 256 aligned crop) -> frames, drawing the generator's heatmaps exactly as
    train/train_l2f.py does (frames of `image_size`, heatmaps at `heatmap_scale` of that, ridge `heatmap_sigma`
    crop pixels). The pipeline streams through it and train/evaluate.py scores it: one definition for both.
    """

    def __init__(self, generator: nn.Module, *, image_size: int = CROP_SIZE, heatmap_sigma: float = HEATMAP_SIGMA,
                 heatmap_scale: float = HEATMAP_SCALE, device: str | torch.device | None = None):
        self.device = torch.device(device) if device is not None else next(generator.parameters()).device
        # channels_last: about a quarter faster on CPU for the same numbers (tests/test_models_l2f.py)
        self.generator = generator.to(self.device, memory_format=torch.channels_last).eval()
        self.image_size = image_size
        self.heatmap_scale = heatmap_scale
        self.heatmap_sigma = heatmap_sigma
        self.backend = "torch"  # or "onnx", "bf16": talkface.backends, chosen by the pipeline
        self._onnx = None

    def use_onnx(self, onnx) -> None:
        """Run the generator through ONNX Runtime (a ``backends.OnnxGenerator``), or PyTorch again with None."""
        self._onnx = onnx
        self.backend = "torch" if onnx is None else "onnx"

    def use_bf16(self, on: bool = True) -> None:
        """Run the generator in PyTorch under bfloat16 autocast (frames still float32), or in float32 again.
        Only where the CPU computes bfloat16 natively: ``backends.native_bf16``; the pipeline checks."""
        self._onnx = None
        self.backend = "bf16" if on else "torch"

    @classmethod
    def from_checkpoint(cls, stem: str | os.PathLike, device: str | torch.device | None = None) -> L2FRenderer:
        """The `l2f` checkpoint with the drawing settings its JSON records (CheckpointError if unusable)."""
        generator, config = load_checkpoint(stem, device=device)
        return cls(generator, image_size=int(config.get("image_size", CROP_SIZE)),
                   heatmap_sigma=float(config.get("heatmap_sigma", HEATMAP_SIGMA)),
                   heatmap_scale=float(config.get("heatmap_scale", HEATMAP_SCALE)), device=device)

    def pixels(self, landmarks: torch.Tensor) -> torch.Tensor:
        """Crop pixels -> pixels of the generator's frame (pixel centres on integers in both), on the device."""
        k = self.image_size / CROP_SIZE
        return (landmarks.to(self.device, torch.float32) + 0.5) * k - 0.5

    def heatmaps(self, landmarks: torch.Tensor) -> torch.Tensor:
        """(N, 68, 2) crop pixels -> (N, C, h, h) heatmaps at the resolution the generator reads, on the device."""
        return generator_heatmaps(self.pixels(landmarks), self.image_size, self.heatmap_sigma, self.heatmap_scale)

    def prepare(self, identity: torch.Tensor, identity_landmarks: torch.Tensor) -> PreparedIdentity:
        """The per-identity inputs, computed once: the photo (3, H, W) in [-1, 1] at the generator's size
        (1, 3, S, S), its own heatmaps (None if the generator does not read them) and its landmarks in the
        generator's pixels (None unless the generator warps by ``landmark_flow``)."""
        photo = identity.to(self.device, torch.float32)[None]
        if photo.shape[-1] != self.image_size:
            photo = F.interpolate(photo, size=(self.image_size, self.image_size), mode="area")
        maps = self.heatmaps(identity_landmarks[None]) if self.generator.use_identity_heatmaps else None
        points = self.pixels(identity_landmarks[None]) if getattr(self.generator, "landmark_flow", False) else None
        return PreparedIdentity(photo, maps, points)

    def generator_inputs(self, prepared: PreparedIdentity, heatmaps: torch.Tensor,
                         landmarks: torch.Tensor | None = None,
                         memory_format: torch.memory_format = torch.channels_last) -> tuple[tuple, dict]:
        """The generator's positional and keyword arguments for a batch of (N, C, h, h) target heatmaps drawn
        from (N, 68, 2) crop-pixel ``landmarks``; those are needed only by a generator that warps by
        ``landmark_flow``. channels_last: about a quarter faster on CPU for the same numbers."""
        photo, maps, points = prepared
        n = len(heatmaps)
        args = (photo.expand(n, -1, -1, -1).contiguous(memory_format=memory_format),
                heatmaps.contiguous(memory_format=memory_format),
                None if maps is None else maps.expand(n, -1, -1, -1).contiguous(memory_format=memory_format))
        if points is None:
            return args, {}
        if landmarks is None:
            raise ValueError("this generator warps by the landmarks: pass them to generate()")
        return args, {"landmarks": self.pixels(landmarks), "identity_landmarks": points.expand(n, -1, -1)}

    def generate(self, prepared: PreparedIdentity, heatmaps: torch.Tensor, landmarks: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """(N, C, h, h) target heatmaps of (N, 68, 2) crop-pixel ``landmarks`` -> (N, 3, S, S) frames in [-1, 1]."""
        args, kwargs = self.generator_inputs(prepared, heatmaps, landmarks)
        if self._onnx is not None:
            return self._onnx(*args, **kwargs)
        if self.backend == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.generator(*args, **kwargs).float()
        return self.generator(*args, **kwargs)

    @torch.inference_mode()
    def __call__(self, identity: torch.Tensor, identity_landmarks: torch.Tensor, landmarks: torch.Tensor
                 ) -> torch.Tensor:
        """Frames (N, 3, H, W) in [-1, 1] for landmarks (N, 68, 2), at the identity photo's resolution H x W
        (resized from the generator's when they differ, so they compare with real frames)."""
        frames = self.generate(self.prepare(identity, identity_landmarks), self.heatmaps(landmarks), landmarks)
        if frames.shape[-2:] != identity.shape[-2:]:
            frames = F.interpolate(frames, size=identity.shape[-2:], mode="bilinear", align_corners=False)
        return frames


