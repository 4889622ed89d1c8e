"""L2F as one unit: landmarks -> heatmaps drawn exactly as in training -> the generator's frames.

One definition for the pipeline (streaming inference), train/evaluate.py (scoring) and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkface.checkpoints import load_checkpoint
from talkface.face import CROP_SIZE
from talkface.models.l2f import HEATMAP_SCALE, HEATMAP_SIGMA, IdentityFeatures, generator_heatmaps

STREAMS = 2  # PyTorch's path on a multi-core CPU: a batch split between this many threads (``L2FRenderer._streams``)
_STARTING = threading.Lock()


class PreparedIdentity(NamedTuple):
    """What L2F needs of the identity photo, computed once per request (``L2FRenderer.prepare``)."""

    photo: torch.Tensor  # (1, 3, S, S) in [-1, 1]
    heatmaps: torch.Tensor | None  # (1, C, h, h), when the generator reads them
    landmarks: torch.Tensor | None  # (1, 68, 2) in the generator's pixels, when it warps by landmark_flow
    # the generator's own work on the photo (Generator.identity_features), in float32: filled on first use
    features: dict[str, IdentityFeatures]


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
        self.backend = "torch"  # or "onnx", "bf16", "int8": talkface.backends, chosen by the pipeline
        self._onnx = None
        self._int8: nn.Module | None = None  # the generator with int8 convolutions (backends.int8_generator)
        self.batch_size = 4  # frames the pipeline sends through at once: 8 where backends.choose measured it faster
        # PyTorch's path on a CPU: a batch split between STREAMS threads (None: not started; ``_streams``)
        self._pool: ThreadPoolExecutor | None = None
        self._drawer: ThreadPoolExecutor | None = None  # one more thread, for the next batch's heatmaps
        self._pool_pid = 0  # the process that started it: a forked child starts its own

    def use_onnx(self, onnx) -> None:
        """Run the generator through ONNX Runtime (a ``backends.OnnxGenerator``), or PyTorch again with None."""
        self._onnx, self._int8 = onnx, None
        self.backend = "torch" if onnx is None else "onnx"

    def use_bf16(self, on: bool = True) -> None:
        """Run the generator in PyTorch under bfloat16 autocast (frames still float32), or in float32 again.
        Only where the CPU computes bfloat16 natively: ``backends.native_bf16``; the pipeline checks."""
        self._onnx, self._int8 = None, None
        self.backend = "bf16" if on else "torch"

    def use_int8(self, generator: nn.Module | None) -> None:
        """Run PyTorch's path with `generator`, the generator with int8 convolutions
        (``backends.int8_generator``), or with the float32 one again with None."""
        self._onnx, self._int8 = None, generator
        self.backend = "torch" if generator is None else "int8"

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
        return PreparedIdentity(photo.contiguous(memory_format=torch.channels_last), maps, points, {})

    def generator_inputs(self, prepared: PreparedIdentity, heatmaps: torch.Tensor,
                         landmarks: torch.Tensor | None = None,
                         memory_format: torch.memory_format = torch.channels_last) -> tuple[tuple, dict]:
        """The generator's positional and keyword arguments for a batch of (N, C, h, h) target heatmaps drawn
        from (N, 68, 2) crop-pixel ``landmarks``; those are needed only by a generator that warps by
        ``landmark_flow``. channels_last: about a quarter faster on CPU for the same numbers."""
        photo, maps, points, _ = prepared
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
        return self.submit(prepared, heatmaps, landmarks)()

    def submit(self, prepared: PreparedIdentity, heatmaps: torch.Tensor, landmarks: torch.Tensor | None = None,
               *, pixels: bool = False) -> Callable[[], torch.Tensor | np.ndarray]:
        """``generate`` started: its frames when the returned function is called; with `pixels`, as (N, S, S, 3)
        uint8 RGB (``to_pixels``, made on the streams). On PyTorch's path on a CPU with streams, a batch of two
        frames or more without gradients is queued on them and this returns at once, so that the caller prepares
        the next batch (and writes the last) while this one is made: batches submitted in turn run back to back,
        where waiting for each left the streams idle ~12 ms between batches of 8 (~10% of a video's time on 2 cores;
        docs/benchmarks.md). Otherwise (one frame, ONNX Runtime, CUDA, one core) the frames are made first."""
        if self._onnx is not None:
            args, kwargs = self.generator_inputs(prepared, heatmaps, landmarks)
            frames = self._onnx(*args, **kwargs)
            done = to_pixels(frames) if pixels else frames
            return lambda: done
        return self._submit(prepared, heatmaps, landmarks, self.backend == "bf16", self._int8, pixels)

    def torch_frames(self, prepared: PreparedIdentity, heatmaps: torch.Tensor, landmarks: torch.Tensor | None = None,
                     *, bf16: bool = False, generator: nn.Module | None = None) -> torch.Tensor:
        """``generate`` on PyTorch's path (``bf16``: under bfloat16 autocast, frames still float32): the photo's
        share of the generator's work computed once per prepared identity, then every batch of frames from it, on
        the streams as the pipeline's are (one batch at a time here). The backends are timed and checked through
        here. The caller's own autocast, if any, does not apply: ``bf16`` says what runs in bfloat16.
        ``generator``: another module with this generator's stem, run in its place (the int8 one:
        ``backends.int8_generator``)."""
        return self._submit(prepared, heatmaps, landmarks, bf16, generator, False)()

    def _submit(self, prepared: PreparedIdentity, heatmaps: torch.Tensor, landmarks: torch.Tensor | None, bf16: bool,
                generator: nn.Module | None, pixels: bool) -> Callable[[], torch.Tensor | np.ndarray]:
        photo, maps, points, cache = prepared
        if points is not None and landmarks is None:
            raise ValueError("this generator warps by the landmarks: pass them to generate()")
        where = None if points is None else self.pixels(landmarks)
        heatmaps = heatmaps.contiguous(memory_format=torch.channels_last)
        features = cache.get("float32")
        if features is None or torch.is_grad_enabled():
            # float32 on the bfloat16 path too: added to each frame's own share, they keep the sum exact
            with torch.autocast(self.device.type, enabled=False):
                features = self.generator.identity_features(photo, maps)
            if not torch.is_grad_enabled():  # with gradients they are part of the caller's graph: not kept
                cache["float32"] = features
        generator = self.generator if generator is None else generator
        pool = self._streams() if len(heatmaps) > 1 and not torch.is_grad_enabled() else None
        if pool is None:
            done = self._frames(generator, photo, heatmaps, where, points, features, bf16, as_pixels=pixels)
            return lambda: done
        halves = zip(heatmaps.tensor_split(STREAMS),
                     where.tensor_split(STREAMS) if where is not None else [None] * STREAMS)
        parts = [pool.submit(self._frames, generator, photo, part, part_where, points, features, bf16, stream=True,
                             as_pixels=pixels) for part, part_where in halves]

        def frames() -> torch.Tensor | np.ndarray:
            made = [part.result() for part in parts]
            return np.concatenate(made) if pixels else torch.cat(made)
        return frames

    def _frames(self, generator: nn.Module, photo: torch.Tensor, heatmaps: torch.Tensor, where: torch.Tensor | None,
                identity_points: torch.Tensor | None, features: IdentityFeatures, bf16: bool, stream: bool = False,
                as_pixels: bool = False) -> torch.Tensor | np.ndarray:
        """One batch of frames (`where`: its landmarks in the generator's pixels, for a landmark-flow generator);
        `as_pixels`: as uint8 RGB (``to_pixels``), converted on the thread that made them."""
        kwargs = {} if where is None else {"landmarks": where, "identity_landmarks": identity_points}
        # a stream's thread starts with gradients on (grad mode is per thread); it is used only without them
        with torch.inference_mode() if stream else contextlib.nullcontext(), \
                torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            frames = generator(photo, heatmaps, features=features, **kwargs).float()
            return to_pixels(frames) if as_pixels else frames

    def heatmaps_ahead(self, landmarks: torch.Tensor) -> Future[torch.Tensor] | None:
        """``heatmaps(landmarks)`` started on a thread of its own, for a batch to come, while the streams make this
        one; None where the generator runs without streams (ONNX Runtime, CUDA, one core): draw them in place then.

        Drawn between batches, the heatmaps left both cores to one thread: ~20 ms of every 8 frames' ~130 on a
        2-core CPU, with the streams waiting (docs/benchmarks.md). The drawing thread computes with one core, as a
        stream does, so that three threads on two cores never leave one of OpenMP's teams waiting on the other."""
        if self._onnx is not None or self.device.type != "cpu":
            return None
        if self._streams() is None:
            return None
        return self._drawer.submit(self._draw, landmarks)

    def _draw(self, landmarks: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # a pool thread starts with gradients on
            return self.heatmaps(landmarks)

    def _streams(self) -> ThreadPoolExecutor | None:
        """The streams PyTorch's path splits a batch between on a CPU with two cores or more, started on first use
        (the CPU's threads shared between them: one core each on 2 cores), and beside them a thread of one core for
        the next batch's heatmaps (``heatmaps_ahead``).

        Two threads with one core each make frames 10-20% faster on a 2-core CPU than one batch on two cores
        (docs/benchmarks.md: both with AVX-512 and held to AVX2, float32 and bfloat16): the generator's small
        layers leave OpenMP's threads waiting on each other, two independent halves do not."""
        total = torch.get_num_threads()
        if self.device.type != "cpu" or total < STREAMS:
            return None
        with _STARTING:  # two requests' first frames at once start one pool
            if self._pool is None or self._pool_pid != os.getpid():
                pool = ThreadPoolExecutor(STREAMS, thread_name_prefix="talkface-l2f")
                drawer = ThreadPoolExecutor(1, thread_name_prefix="talkface-heatmaps")
                ready = threading.Barrier(STREAMS + 1)

                def start(count: int) -> None:  # each thread's own count (OpenMP's is per thread)
                    torch.get_num_threads()  # PyTorch sets a thread's count on its first use: have that done first
                    torch.set_num_threads(count)
                    ready.wait()

                counts = [total // STREAMS + (i < total % STREAMS) for i in range(STREAMS)]
                started = [pool.submit(start, count) for count in counts] + [drawer.submit(start, 1)]
                for future in started:
                    future.result()
                # set_num_threads also sets the count a thread starting later begins with: put it back (a thread
                # first using torch in the few milliseconds before would begin with a stream's count)
                torch.set_num_threads(total)
                self._pool, self._drawer, self._pool_pid = pool, drawer, os.getpid()
        return self._pool

    @torch.inference_mode()
    def __call__(self, identity: torch.Tensor, identity_landmarks: torch.Tensor, landmarks: torch.Tensor
                 ) -> torch.Tensor:
        """Frames (N, 3, H, W) in [-1, 1] for landmarks (N, 68, 2), at the identity photo's resolution H x W
        (resized from the generator's when they differ, so they compare with real frames)."""
        frames = self.generate(self.prepare(identity, identity_landmarks), self.heatmaps(landmarks), landmarks)
        if frames.shape[-2:] != identity.shape[-2:]:
            frames = F.interpolate(frames, size=identity.shape[-2:], mode="bilinear", align_corners=False)
        return frames


def to_pixels(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] -> (N, S, S, 3) uint8 RGB on the CPU, contiguous: a strided view (what permuting
    at the end gave) costs every reader of a frame a gather, ~0.5 ms a frame for OpenCV and the encoders."""
    frames = frames.permute(0, 2, 3, 1).add(1).mul_(127.5).clamp_(0, 255).round_()
    return frames.to(torch.uint8, memory_format=torch.contiguous_format).cpu().numpy()
