"""Landmarks -> heatmaps, the bridge between A2L and L2F (paper §III-B).

The generator sees the target face shape as images, not numbers. We draw each facial part as a
polyline (jaw, brows, nose, eyes, outer lip, inner lip) and put a Gaussian ridge of width ``sigma``
along it: a line carries the mouth's shape far better than 20 isolated dots, and because the value
at a pixel is a smooth function of its distance to the segments, the heatmaps are differentiable
with respect to the landmark coordinates (so the L2F losses could push gradients back into A2L).

One channel per part (``NUM_CHANNELS``); all functions are batched over any leading dimensions
and run on the landmarks' device.
"""

from __future__ import annotations

import numpy as np
import torch

# helpers: the parts of dlib's 68-point layout as polylines (closed ones repeat their first point)

PARTS: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 17)),
    "right_brow": tuple(range(17, 22)),
    "left_brow": tuple(range(22, 27)),
    "nose": (27, 28, 29, 30, 33, 32, 31, 33, 34, 35),
    "right_eye": (*range(36, 42), 36),
    "left_eye": (*range(42, 48), 42),
    "outer_lip": (*range(48, 60), 48),
    "inner_lip": (*range(60, 68), 60),
}
NUM_CHANNELS = len(PARTS)
# RGB colour per part for the visualisations (the app, contact sheets).
PART_COLOURS: dict[str, tuple[int, int, int]] = {
    "jaw": (230, 230, 230),
    "right_brow": (255, 170, 60),
    "left_brow": (255, 170, 60),
    "nose": (90, 200, 255),
    "right_eye": (120, 255, 120),
    "left_eye": (120, 255, 120),
    "outer_lip": (255, 70, 90),
    "inner_lip": (255, 210, 60),
}


def _segments(part: tuple[int, ...]) -> tuple[list[int], list[int]]:
    return list(part[:-1]), list(part[1:])


_SEGMENTS = {name: _segments(idx) for name, idx in PARTS.items()}


# classes / functions


def gaussian(z: torch.Tensor, cutoff: float = 46.0) -> torch.Tensor:
    """exp(-z), exactly 0 where that falls below exp(-cutoff) (1e-20 by default).

    Why: the far tails of a Gaussian are denormal floats (below 1.2e-38), and a CPU computes with those up to
    ~100x slower than with normal numbers. The heatmaps' tails and ``landmark_flow``'s weights were full of them:
    they made the generator ~15% slower on a CPU (docs/benchmarks.md). What is dropped is 1e-20 of the peak."""
    return torch.exp(-z).masked_fill(z > cutoff, 0.0)


def render_heatmaps(
    landmarks: torch.Tensor,
    size: int = 256,
    sigma: float = 2.0,
    crop_size: int = 256,
) -> torch.Tensor:
    """Draw 68 landmarks as one Gaussian-ridge channel per facial part.

    Args:
        landmarks: (..., 68, 2) x, y in pixels of a ``crop_size`` aligned crop.
        size: output resolution (the heatmaps cover the whole crop).
        sigma: ridge width in crop pixels (scaled with ``size`` so the look doesn't change).
    Returns:
        (..., NUM_CHANNELS, size, size) in [0, 1], same dtype and device as ``landmarks``.
    """
    if landmarks.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) landmarks, got {tuple(landmarks.shape)}")
    lead = landmarks.shape[:-2]
    pts = landmarks.reshape(-1, 68, 2) * (size / crop_size)
    n = pts.shape[0]
    sig = sigma * size / crop_size
    reach = 4.0 * sig  # beyond 4 sigma the ridge is below 4e-4: those pixels stay 0, and nothing is computed there
    # output pixel centres, in the scaled crop's coordinates (crop pixel centres sit on integers)
    offset = 0.5 - 0.5 * (size / crop_size)
    maps = pts.new_zeros(n, NUM_CHANNELS, size, size)
    with torch.no_grad():  # the window of each part: the box around it in every frame of the batch
        lo = (pts.amin(0) - reach - offset).floor().clamp(0, size - 1).long()
        hi = (pts.amax(0) + reach - offset).ceil().clamp(0, size - 1).long()
    for c, (start, end) in enumerate(_SEGMENTS.values()):
        idx = list(set(start) | set(end))
        x0, y0 = int(lo[idx, 0].min()), int(lo[idx, 1].min())
        x1, y1 = int(hi[idx, 0].max()) + 1, int(hi[idx, 1].max()) + 1
        gx = (torch.arange(x0, x1, device=pts.device, dtype=pts.dtype) + offset).view(1, 1, 1, -1)
        gy = (torch.arange(y0, y1, device=pts.device, dtype=pts.dtype) + offset).view(1, 1, -1, 1)
        a, b = pts[:, start], pts[:, end]  # (N,S,2)
        ab = b - a
        ax, ay = a[..., 0, None, None], a[..., 1, None, None]  # (N,S,1,1)
        abx, aby = ab[..., 0, None, None], ab[..., 1, None, None]
        inv = 1.0 / (ab * ab).sum(-1).clamp_min(1e-6)[..., None, None]
        dx, dy = gx - ax, gy - ay  # (N,S,h,w)
        # projection of each pixel on each segment, clamped to the segment; squared distance to that point
        t = ((dx * abx + dy * aby) * inv).clamp(0.0, 1.0)
        d2 = (dx - t * abx) ** 2 + (dy - t * aby) ** 2
        # min distance over the part's segments, then the ridge: the same as the max of per-segment ridges
        maps[:, c, y0:y1, x0:x1] = gaussian(d2.amin(dim=1) / (2 * sig * sig))
    return maps.reshape(*lead, NUM_CHANNELS, size, size)


def heatmap_image(heatmaps: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) heatmaps -> H x W x 3 uint8 RGB, each part in its own colour (for people, not models)."""
    maps = torch.as_tensor(heatmaps).detach().float().cpu()
    if maps.ndim != 3 or maps.shape[0] != NUM_CHANNELS:
        raise ValueError(f"expected ({NUM_CHANNELS}, H, W) heatmaps, got {tuple(maps.shape)}")
    colours = torch.tensor(list(PART_COLOURS.values()), dtype=torch.float32)  # (C,3)
    rgb = (maps[:, None] * colours[:, :, None, None]).amax(dim=0)  # (3,H,W)
    return rgb.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def draw_landmarks(
    image: np.ndarray,
    landmarks: np.ndarray | torch.Tensor,
    thickness: int = 1,
    points: bool = True,
) -> np.ndarray:
    """Return a copy of ``image`` (H x W x 3 uint8 RGB) with the 68 landmarks drawn as coloured parts."""
    import cv2  # opencv comes with mediapipe; imported here so heatmaps stays torch-only at import

    canvas = np.ascontiguousarray(image.copy())
    if canvas.ndim == 2:
        canvas = np.repeat(canvas[..., None], 3, axis=2)
    lm = np.asarray(torch.as_tensor(landmarks).detach().cpu(), dtype=np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    shift = 4  # sub-pixel drawing
    scaled = np.round(lm * (1 << shift)).astype(np.int32)
    for name, idx in PARTS.items():
        cv2.polylines(canvas, [scaled[list(idx)]], False, PART_COLOURS[name], thickness, cv2.LINE_AA, shift)
    if points:
        radius = max(1, thickness) << shift
        for x, y in scaled:
            cv2.circle(canvas, (int(x), int(y)), radius, (255, 255, 255), -1, cv2.LINE_AA, shift)
    return canvas
