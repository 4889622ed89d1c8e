"""Metrics: LMD, PSNR and SSIM on small real inputs; SSIM must match scikit-image's reference numbers."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from talkface.metrics import lip_sync_scores, lmd, psnr, ssim


def smooth_images(n: int, size: int = 40, seed: int = 0) -> np.ndarray:
    """Images with structure (blurred noise plus a gradient), not white noise, like frames are."""
    rng = np.random.default_rng(seed)
    noise = rng.random((n, size + 4, size + 4, 3))
    blurred = sum(noise[:, i : i + size, j : j + size] for i in range(5) for j in range(5)) / 25
    ramp = np.linspace(0, 0.3, size)[None, :, None, None]
    return np.clip(blurred + ramp, 0, 1)


def test_lmd_is_mean_point_distance():
    target = np.zeros((2, 68, 2))
    pred = target + np.array([3.0, 4.0])
    assert lmd(pred, target) == pytest.approx(5.0)
    pred[:, :48] = 0
    assert lmd(torch.tensor(pred), torch.tensor(target), points=range(48, 68)) == pytest.approx(5.0)
    assert lmd(pred, target) == pytest.approx(5.0 * 20 / 68)
    with pytest.raises(ValueError):
        lmd(pred[:, :10], target)


def test_psnr_known_values():
    a = np.zeros((16, 16, 3))
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert math.isinf(psnr(a, a))
    u8 = (smooth_images(2) * 255).astype(np.uint8)
    assert psnr(u8[0], u8[1]) == pytest.approx(psnr(u8[0] / 255.0, u8[1] / 255.0))
    # batches average per-image PSNR
    batch = psnr(np.stack([a, a]), np.stack([a + 0.1, a + 0.01]))
    assert batch == pytest.approx((20.0 + 40.0) / 2)


def test_ssim_matches_scikit_image():
    x, y = smooth_images(2, seed=1), smooth_images(2, seed=2)
    y = 0.5 * x + 0.5 * y
    for a, b in zip(x, y):
        reference = structural_similarity(
            a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        assert ssim(a, b) == pytest.approx(reference, abs=1e-6)
        grey = structural_similarity(
            a[..., 0], b[..., 0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        assert ssim(a[..., 0], b[..., 0], channel_axis=None) == pytest.approx(grey, abs=1e-6)
    assert 0.3 < ssim(x[0], y[0]) < 0.99
    # torch N×C×H×W batches give the mean of the per-image values
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    expected = np.mean([ssim(a, b) for a, b in zip(x, y)])
    assert ssim(nchw, torch.from_numpy(y).permute(0, 3, 1, 2), channel_axis=1) == pytest.approx(expected)
    assert ssim(x, x) == pytest.approx(1.0)


def test_ssim_uint8_and_small_images():
    x, y = smooth_images(1)[0], smooth_images(1, seed=5)[0]
    u8x, u8y = (x * 255).round().astype(np.uint8), (y * 255).round().astype(np.uint8)
    reference = structural_similarity(
        u8x, u8y, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(u8x, u8y) == pytest.approx(reference, abs=1e-6)
    with pytest.raises(ValueError):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))


def test_frame_landmarks_are_dlibs_on_the_frames():
    """The frames' LMD of evaluate.py and train_l2f.py: dlib on (N, 3, H, W) tensors in [0, 1], and it moves
    with the face."""
    from talkface.face import align_face, detect_landmarks, load_image
    from talkface.metrics import frame_landmarks

    crop = align_face(load_image(Path(__file__).parents[1] / "assets" / "examples" / "face.jpg")).image
    frames = torch.from_numpy(np.stack([crop, np.roll(crop, 3, axis=1)])).permute(0, 3, 1, 2).float() / 255
    found = frame_landmarks(frames)
    assert found.shape == (2, 68, 2)
    assert np.abs(found[0] - detect_landmarks(crop)).max() < 1e-4
    assert abs(np.median(found[1, :, 0] - found[0, :, 0]) - 3) < 0.5  # shifted 3 px right, found 3 px right


def _talking_face(opening: np.ndarray) -> np.ndarray:
    """(T, 68, 2): a fixed face (eyes 60 px apart) whose lower inner lip drops by `opening` inter-ocular units."""
    face = np.zeros((len(opening), 68, 2))
    face[:, 36:42] = [100.0, 100.0]
    face[:, 42:48] = [160.0, 100.0]
    face[:, 48:68, 0] = np.linspace(110, 150, 20)
    face[:, [67, 66, 65], 0] = face[:, [61, 62, 63], 0]  # each lower inner-lip point under its upper one
    face[:, 48:68, 1] = 180.0
    face[:, [65, 66, 67], 1] += 60.0 * opening[:, None]
    return face


def test_lip_sync_scores_see_lag_range_and_closure():
    t = np.arange(100)
    real_open = 0.1 + 0.08 * np.sin(t / 3.0)
    late = np.roll(real_open, 2)  # the generated mouth runs two frames late, with half the motion
    generated = _talking_face(0.1 + 0.5 * (late - 0.1))
    real = _talking_face(real_open)
    real[5] = np.nan  # a frame where dlib found no face

    class P:  # a forced alignment: a bilabial where the real mouth is shut, a vowel where it is open
        def __init__(self, symbol, start, end):
            self.symbol, self.start, self.end = symbol, start, end

    shut, wide = np.argmin(real_open[10:30]) + 10, np.argmax(real_open[10:30]) + 10
    phones = [P("M", shut / 25, (shut + 1) / 25), P("AA", wide / 25, (wide + 1) / 25)]
    s = lip_sync_scores(generated, real, phones)
    assert s["best_lag"] == 2 and s["best_corr"] > 0.99 > s["corr"]
    assert s["range_ratio"] == pytest.approx(0.5, abs=0.03)
    assert s["bilabial_real"] == pytest.approx(real_open[shut] / real_open[wide])
    assert s["bilabial"] == pytest.approx((0.1 + 0.5 * (late[shut] - 0.1)) / (0.1 + 0.5 * (late[wide] - 0.1)))
    assert s["shape_distance"] > 0
    assert np.isnan(s["pause_motion"])  # no pause in these phones
    same = lip_sync_scores(real, real)
    assert same["corr"] == pytest.approx(1.0) and same["shape_distance"] == 0 and same["range_ratio"] == 1
    assert "bilabial" not in same  # no phones, no closure score


def test_pause_motion_is_the_mouths_motion_in_the_pauses_only():
    from talkface.data.speech import Phone
    from talkface.metrics import pause_motion

    opening = np.zeros(75)
    opening[25:50] = 0.1 + 0.1 * np.sin(np.arange(25))  # speech from 1 s to 2 s moves the mouth
    phones = [Phone("sil", 0.0, 1.0), Phone("AA", 1.0, 2.0), Phone("sil", 2.0, 3.0)]
    assert pause_motion(opening, phones) == 0.0  # the lips rest in both pauses
    opening[60:66] = [0.0, 0.05, 0.0, 0.05, 0.0, 0.05]  # and now they chatter after the last word
    assert pause_motion(opening, phones) > 0.5
    assert np.isnan(pause_motion(opening, [Phone("sil", 0.0, 0.1), Phone("AA", 0.1, 3.0)]))  # too short a pause
