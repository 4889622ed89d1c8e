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


# lip sync on real video: dlib's 68 points on the real and on the generated frames, compared as mouths

BILABIALS = frozenset({"P", "B", "M"})
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})


def mouth_shape(landmarks: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (..., 20, 2): the 20 mouth points centred on their mean, in inter-ocular distances."""
    from talkface.face import inter_ocular

    mouth = np.asarray(landmarks, np.float64)[..., 48:68, :]
    return (mouth - mouth.mean(-2, keepdims=True)) / inter_ocular(landmarks)[..., None, None]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _lagged(a: np.ndarray, b: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """a shifted `lag` frames later against b (positive lag: a runs late), cut to their overlap."""
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    return (a[lag:], b[: n - lag]) if lag >= 0 else (a[: n + lag], b[-lag:])


def _spread(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, 95) - np.percentile(x, 5)) if len(x) else float("nan")


def phone_ratio(opening: np.ndarray, phones, symbols: frozenset[str], fps: float = 25.0) -> float:
    """Mean opening during the `symbols` phones over the mean opening during vowels (frames by their centre
    time). For bilabials: 0 is a firm closure, 1 lips as open as on a vowel. NaN without both kinds."""
    t = (np.arange(len(opening)) + 0.5) / fps

    def mean_in(kind: frozenset[str]) -> float:
        picked = np.zeros(len(opening), bool)
        for p in phones:
            if p.symbol in kind:
                picked |= (t >= p.start) & (t < p.end)
        values = opening[picked & np.isfinite(opening)]
        return float(values.mean()) if len(values) else float("nan")

    vowel = mean_in(VOWELS)
    return mean_in(symbols) / vowel if vowel > 0 else float("nan")


def pause_motion(opening: np.ndarray, phones, fps: float = 25.0, min_pause: float = 0.2, margin: float = 0.12
                 ) -> float:
    """How much the mouth moves in the speech's pauses: mean |frame-to-frame change| of the `opening` (inter-ocular
    distances, ×100) over frames inside silences of at least `min_pause` s, `margin` s from the speech on either
    side (lips part before a word and close after it). A speaker's lips rest there; NaN without such a pause."""
    t = np.arange(len(opening)) / fps
    picked = np.zeros(len(opening), bool)
    for p in phones:
        if p.symbol == "sil" and p.end - p.start >= min_pause:
            picked |= (t >= p.start + (margin if p.start > 0 else 0.0)) & (t <= p.end - margin)
    step = np.abs(np.diff(opening))
    both = picked[1:] & picked[:-1] & np.isfinite(step)
    return float(step[both].mean() * 100) if both.any() else float("nan")


def lip_sync_scores(generated: np.ndarray, real: np.ndarray, phones=None, fps: float = 25.0, max_lag: int = 3
                    ) -> dict[str, float]:
    """How a generated mouth moves against the real one, both as dlib's (T, 68, 2) points (NaN rows where
    no face was found; each in its own video's pixels: everything is in inter-ocular distances).

    - ``corr``: correlation of the inner-lip opening at lag 0; ``best_corr`` / ``best_lag`` the best within
      ±`max_lag` frames (positive: generated runs late);
    - ``range_ratio``: the generated opening's p95-p5 spread over the real one's (1 = as wide a motion);
    - ``shape_distance``: mean distance of the 20 mouth points, each mouth centred, ×100;
    - ``bilabial`` / ``bilabial_real``: opening on /p b m/ over opening on vowels (`phone_ratio`), when the
      speech's `phones` (ARPABET with start/end seconds) are given;
    - ``pause_motion`` / ``pause_motion_real``: how much the mouth moves in the pauses (`pause_motion`), with phones.
    """
    from talkface.face import lip_opening

    n = min(len(generated), len(real))
    gen_open, real_open = lip_opening(generated[:n]), lip_opening(real[:n])
    lags = {lag: _corr(*_lagged(gen_open, real_open, lag)) for lag in range(-max_lag, max_lag + 1)}
    best_lag = max(lags, key=lambda k: -np.inf if np.isnan(lags[k]) else lags[k])
    shape = np.linalg.norm(mouth_shape(generated[:n]) - mouth_shape(real[:n]), axis=-1).mean(-1)
    scores = {
        "corr": lags[0],
        "best_corr": lags[best_lag],
        "best_lag": float(best_lag),
        "range_ratio": _spread(gen_open) / _spread(real_open),
        "shape_distance": float(np.nanmean(shape) * 100),
        "opening_p95": float(np.nanpercentile(gen_open, 95)),
        "opening_p95_real": float(np.nanpercentile(real_open, 95)),
    }
    if phones:
        scores["bilabial"] = phone_ratio(gen_open, phones, BILABIALS, fps)
        scores["bilabial_real"] = phone_ratio(real_open, phones, BILABIALS, fps)
        scores["pause_motion"] = pause_motion(gen_open, phones, fps)
        scores["pause_motion_real"] = pause_motion(real_open, phones, fps)
    return scores
