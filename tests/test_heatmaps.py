"""Heatmaps: shape, where the ridges fall, differentiability, and the drawing helpers."""

import numpy as np
import pytest
import torch

from talkface.heatmaps import NUM_CHANNELS, PARTS, draw_landmarks, gaussian, heatmap_image, render_heatmaps

TINY = torch.finfo(torch.float32).tiny  # below this a float is denormal: a CPU computes with those many times slower


def _face_like(seed: int = 0) -> torch.Tensor:
    """68 points spread over a 256 crop, each part in its own region, with a little jitter."""
    g = torch.Generator().manual_seed(seed)
    base = torch.stack(
        [torch.linspace(60, 196, 68), 60 + 140 * torch.rand(68, generator=g)], dim=-1
    )
    return base


def test_shape_dtype_batched():
    lm = torch.stack([_face_like(0), _face_like(1)])[None].repeat(3, 1, 1, 1)  # (3,2,68,2)
    maps = render_heatmaps(lm, size=64)
    assert maps.shape == (3, 2, NUM_CHANNELS, 64, 64)
    assert maps.dtype == torch.float32
    assert 0.0 <= float(maps.min()) and float(maps.max()) <= 1.0 + 1e-6
    # batching gives the same as one at a time
    single = render_heatmaps(lm[1, 0], size=64)
    assert torch.allclose(maps[1, 0], single, atol=1e-6)


def test_peak_on_the_segment_and_falls_off():
    lm = _face_like()
    lm[60:68] = torch.tensor([[100.0, 150.0]] * 8)  # inner lip collapsed to one point
    maps = render_heatmaps(lm, size=256, sigma=2.0)
    inner = maps[list(PARTS).index("inner_lip")]
    assert inner[150, 100] > 0.99  # on the point (row = y, col = x)
    assert inner[150, 106] < 0.02  # 3 sigma away
    # a segment: every pixel along it is on the ridge
    lm[48:60] = torch.tensor([[40.0, 200.0]] * 6 + [[80.0, 200.0]] * 6)
    lm[59] = torch.tensor([40.0, 200.0])
    outer = render_heatmaps(lm, size=256)[list(PARTS).index("outer_lip")]
    assert float(outer[200, 40:81].min()) > 0.95
    assert float(outer[204, 60]) < 0.2


def test_the_tails_hold_no_denormal_floats():
    """Far from a ridge exp() underflows into denormal floats, which made the generator reading the heatmaps ~15%
    slower on a CPU: they are 0 instead, and every value kept is exactly the Gaussian's."""
    z = torch.tensor([0.0, 1.0, 45.9, 46.1, 88.0, 100.0, 1e4])
    assert torch.equal(gaussian(z), torch.exp(-z) * (z <= 46))
    lm = torch.stack([_face_like(seed) for seed in range(4)])  # windows spanning several faces: long tails
    maps = render_heatmaps(lm, size=128, sigma=2.0)
    assert int(((maps > 0) & (maps < TINY)).sum()) == 0
    assert float(maps[maps > 0].min()) >= 1e-20 and float(maps.max()) > 0.99


def test_resolution_scales_coordinates():
    lm = _face_like(3)
    big = render_heatmaps(lm, size=256)
    small = render_heatmaps(lm, size=64)
    pooled = torch.nn.functional.avg_pool2d(big[None], 4)[0]
    assert torch.corrcoef(torch.stack([pooled.flatten(), small.flatten()]))[0, 1] > 0.9


def test_differentiable_wrt_landmarks():
    lm = _face_like(4).double().requires_grad_(True)
    maps = render_heatmaps(lm, size=32, sigma=6.0)
    target = render_heatmaps(_face_like(5).double(), size=32, sigma=6.0)
    loss = ((maps - target) ** 2).sum()
    loss.backward()
    assert lm.grad is not None and torch.isfinite(lm.grad).all() and lm.grad.abs().sum() > 0
    # the analytic gradient matches finite differences on a few coordinates
    fn = lambda x: ((render_heatmaps(x, size=32, sigma=6.0) - target) ** 2).sum()  # noqa: E731
    for k, axis in [(48, 0), (62, 1), (8, 0)]:
        eps = 1e-4
        plus, minus = lm.detach().clone(), lm.detach().clone()
        plus[k, axis] += eps
        minus[k, axis] -= eps
        numeric = (fn(plus) - fn(minus)) / (2 * eps)
        assert float(numeric) == pytest.approx(float(lm.grad[k, axis]), rel=1e-3, abs=1e-6)


def test_rejects_wrong_shape():
    with pytest.raises(ValueError):
        render_heatmaps(torch.zeros(10, 2))


def test_drawing_helpers():
    lm = _face_like(6)
    img = heatmap_image(render_heatmaps(lm, size=128))
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and img.max() > 200
    canvas = np.zeros((256, 256, 3), np.uint8)
    drawn = draw_landmarks(canvas, lm)
    assert drawn.shape == canvas.shape and drawn.sum() > 0 and canvas.sum() == 0  # copy, not in place
    x, y = lm[30].round().long().tolist()
    assert drawn[y, x].max() > 0
