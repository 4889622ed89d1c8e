"""Evaluation metrics of the paper (§IV-B): LMD for landmarks, PSNR and SSIM for frames.

Images may be uint8 (0..255) or float in [0, 1], numpy or torch; `channel_axis` says where the colour
channels are (-1 for H×W×C, 1 for N×C×H×W, None for grey H×W); any dimensions before the image are
a batch, and the result is the mean over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# landmarks


def lmd(
    pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, points: Sequence[int] | None = None
) -> float:
    """Landmark distance: mean Euclidean distance between points (..., K, 2), in their units (pixels).

    `points` restricts it to a subset, e.g. `talkface.face.MOUTH`.
    """
    pred, target = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64)
    if pred.shape != target.shape:
        raise ValueError(f"landmark shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if points is not None:
        pred, target = pred[..., list(points), :], target[..., list(points), :]
    return (pred - target).norm(dim=-1).mean().item()


def frame_landmarks(frames: torch.Tensor) -> np.ndarray:
    """dlib's 68 landmarks (N, 68, 2) of frames (N, 3, H, W) in [0, 1]: the paper's LMD on generated frames
    compares these with the same detector's landmarks on the real frames."""
    from talkface.face import detect_landmarks

    images = (frames.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return np.stack([detect_landmarks(image) for image in images])


# images


def _as_batch(image: torch.Tensor | np.ndarray, channel_axis: int | None) -> torch.Tensor:
    """Float64 in [0, 1], shaped (N, C, H, W)."""
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    x = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    if channel_axis is None:
        x = x.unsqueeze(-3)
    else:
        x = x.movedim(channel_axis, -3)
    return x.reshape(-1, *x.shape[-3:])


def psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, channel_axis: int | None = -1) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0), per image then averaged; identical images give inf."""
    x, y = _as_batch(a, channel_axis), _as_batch(b, channel_axis)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(1.0 / mse)).mean().item()


def _gaussian_window(sigma: float, truncate: float = 3.5) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, channel_axis: int | None = -1) -> float:
    """Structural similarity (Wang et al. 2004): 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03.

    The same numbers as `skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`: local statistics only where the window fits inside the
    image, averaged over pixels, channels and images.
    """
    x, y = _as_batch(a, channel_axis), _as_batch(b, channel_axis)
    n, c, h, w = x.shape
    g = _gaussian_window(1.5)
    if min(h, w) < g.numel():
        raise ValueError(f"images must be at least {g.numel()} pixels on each side for SSIM")

    def blur(z: torch.Tensor) -> torch.Tensor:
        z = z.reshape(n * c, 1, h, w)
        z = F.conv2d(z, g.view(1, 1, -1, 1))
        return F.conv2d(z, g.view(1, 1, 1, -1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean().item()
