"""L2F (paper §III-B): generator and discriminator shapes, the warp, the L2F losses, a few training
steps on a real aligned face, and the trainer's augmentation, resume and export."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from talkface.checkpoints import load_checkpoint
from talkface.face import MIRROR, MOUTH, align_face, detect_landmarks
from talkface.heatmaps import NUM_CHANNELS, render_heatmaps
from talkface.losses import GANLoss, crop_lips, frame_l1, lip_crop_l1
from talkface.metrics import lmd
from talkface.models.l2f import (
    DISCRIMINATOR_SIZES,
    GENERATOR_SIZES,
    HEATMAP_SCALE,
    Discriminator,
    Generator,
    landmark_flow,
    warp,
)

TINY = GENERATOR_SIZES["tiny"]


@pytest.fixture(scope="module")
def face() -> tuple[torch.Tensor, torch.Tensor]:
    """The astronaut's aligned 256 crop in [-1, 1] (3, 256, 256) and its dlib landmarks (68, 2)."""
    aligned = align_face(skimage.data.astronaut())
    image = torch.from_numpy(aligned.image).permute(2, 0, 1).float() / 127.5 - 1
    return image, torch.from_numpy(aligned.landmarks).float()


def _inputs(batch: int = 2, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
        torch.rand(batch, NUM_CHANNELS, size, size, generator=g),
        torch.rand(batch, NUM_CHANNELS, size, size, generator=g),
    )


# generator and discriminator


@pytest.mark.parametrize("mode", ["direct", "warp"])
def test_generator_shape_and_range(mode):
    identity, heatmaps, identity_heatmaps = _inputs()
    out = Generator(mode=mode, **TINY)(identity, heatmaps, identity_heatmaps)
    assert out.shape == identity.shape
    assert out.abs().max() <= 1.0
    plain = Generator(mode=mode, use_identity_heatmaps=False, **TINY)
    assert plain(identity, heatmaps).shape == identity.shape
    half = F.interpolate(heatmaps, scale_factor=HEATMAP_SCALE, mode="area")  # the resolution it reads them at
    assert torch.allclose(plain(identity, half), plain(identity, heatmaps), atol=1e-5)
    with pytest.raises(ValueError):
        Generator(mode=mode, **TINY)(identity, heatmaps)
    with pytest.raises(ValueError):
        Generator(mode="morph")


@pytest.mark.parametrize("mode", ["direct", "warp"])
def test_generator_channels_last_inference_mode(mode):
    torch.manual_seed(0)
    gen = Generator(mode=mode, **TINY).eval()
    inputs = _inputs(batch=1)
    with torch.inference_mode():
        expected = gen(*inputs)
        gen = gen.to(memory_format=torch.channels_last)
        got = gen(*(x.to(memory_format=torch.channels_last) for x in inputs))
    assert torch.allclose(expected, got, atol=1e-5)


@pytest.mark.parametrize(("mode", "identity_heatmaps"), [("warp", True), ("warp", False), ("direct", True)])
def test_identity_features_computed_once_give_the_same_frames(face, mode, identity_heatmaps):
    """A video of one photo computes the generator's work on the photo once (batch 1) and shares it: the frames
    are the full forward pass's, each frame given the photo, and the stem's split (the photo's channels once, the
    frame's each time) is the stem as trained, one conv over all of them."""
    image, landmarks = face
    size = 64
    photo = F.interpolate(image[None], size=size, mode="area")
    source = landmarks[None] * size / 256
    target = source.repeat(3, 1, 1)
    target[:, 48:68, 1] += torch.tensor([0.0, 2.0, 4.0])[:, None]
    torch.manual_seed(0)
    gen = Generator(mode=mode, landmark_flow=mode == "warp", use_identity_heatmaps=identity_heatmaps, **TINY).eval()
    torch.nn.init.normal_(gen.head.weight, std=0.1)  # a flow and a mask that depend on the features
    maps, own = render_heatmaps(target, size=size // 2), render_heatmaps(source, size=size // 2)
    own = own if identity_heatmaps else None
    points = {"landmarks": target, "identity_landmarks": source} if mode == "warp" else {}
    with torch.inference_mode():
        full = gen(photo.expand(3, -1, -1, -1), maps, None if own is None else own.expand(3, -1, -1, -1),
                   **{k: v.expand(3, -1, -1) for k, v in points.items()})
        features = gen.identity_features(photo, own)
        shared = gen(photo, maps, features=features, **points)
        stem = gen.unet.stem  # as trained: conv -> GroupNorm -> SiLU over the photo and every condition at once
        together = stem(torch.cat([F.pixel_unshuffle(photo, 2).expand(3, -1, -1, -1), maps]
                                  + ([] if own is None else [own.expand(3, -1, -1, -1)]), dim=1))
        split = stem[2](stem[1](F.conv2d(maps, stem[0].weight[:, 12:12 + maps.shape[1]], padding=1) + features.stem))
    assert features.stem.shape[0] == 1 and features.full.shape == (1, TINY["full_res_channels"], size, size)
    assert torch.allclose(split, together, atol=1e-5)
    assert (full[0] - full[2]).abs().max() > 0.01  # the frames differ...
    assert torch.allclose(shared, full, atol=1e-5)  # ...and are the same either way


def test_default_generator_fits_the_checkpoint_budget():
    params = sum(p.numel() for p in Generator(**GENERATOR_SIZES["default"]).parameters())
    assert params * 2 < 60e6  # stored as fp16


def test_warp_moves_pixels():
    image = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    assert torch.allclose(warp(image, torch.zeros(2, 2, 16, 16)), image, atol=1e-4)
    flow = torch.zeros(2, 2, 16, 16)
    flow[:, 0] = 2 * 3 / 16  # sample 3 pixels to the right
    shifted = warp(image, flow)
    assert torch.allclose(shifted[..., :13], image[..., 3:], atol=1e-4)


def test_landmark_flow_carries_pixels_with_their_landmark(face):
    """A lower lip and chin moved down 10 px: the photo's pixels there move with them, the rest stays put."""
    image, landmarks = face
    source = landmarks[None]
    assert landmark_flow(source, source, 256).abs().max() == 0
    target = source.clone()
    moved = [*range(6, 11), 56, 57, 58, 65, 66, 67]  # chin and the lower lip's middle
    target[0, moved, 1] += 10
    flow = landmark_flow(source, target, 256)
    assert flow.shape == (1, 2, 128, 128)
    # at a moved landmark the pixel comes from its source position (within the neighbours' averaging)
    x, y = (target[0, 57] / 2).round().long().tolist()
    assert float(flow[0, 1, y, x] * 256 / 2) == pytest.approx(-10, abs=2.5)
    # the eyes, the forehead and the background do not move
    for point in (36, 45, 19, 24):
        x, y = (source[0, point] / 2).round().long().tolist()
        assert flow[0, :, y, x].abs().max() * 128 < 0.05
    assert flow[0, :, :10].abs().max() * 128 < 1e-3
    # and no denormal floats where it fades out (a CPU computes with those many times slower)
    assert int(((flow != 0) & (flow.abs() < torch.finfo(flow.dtype).tiny)).sum()) == 0
    # warped, the lower lip's colour sits 10 px lower
    warped = warp(image[None], flow)
    x, y = landmarks[57].round().long().tolist()
    assert torch.allclose(warped[0, :, y + 10, x], image[:, y, x], atol=0.15)
    # differentiable in both landmark sets
    src, tgt = source.clone().requires_grad_(True), target.clone().requires_grad_(True)
    landmark_flow(src, tgt, 256).square().sum().backward()
    assert src.grad.abs().sum() > 0 and tgt.grad.abs().sum() > 0


def test_landmark_flow_generator_needs_the_landmarks(face):
    image, landmarks = face
    size = 64
    identity = F.interpolate(image[None], size=size, mode="area")
    source = landmarks[None] * size / 256
    target = source.clone()
    target[0, 48:68, 1] += 3
    maps, identity_maps = render_heatmaps(target, size=size // 2), render_heatmaps(source, size=size // 2)
    gen = Generator(mode="warp", landmark_flow=True, **TINY).eval()
    assert gen.init_kwargs["landmark_flow"] is True
    assert "landmark_flow" not in Generator(mode="warp", **TINY).init_kwargs  # older checkpoints' JSON still matches
    with pytest.raises(ValueError):
        gen(identity, maps, identity_maps)
    with pytest.raises(ValueError):
        Generator(mode="direct", landmark_flow=True)
    with torch.no_grad():
        moved = gen(identity, maps, identity_maps, landmarks=target, identity_landmarks=source)
        still = gen(identity, maps, identity_maps, landmarks=source, identity_landmarks=source)
        # untrained, the generator shows the photo warped by the landmark flow (its own flow starts at zero)
        expected = warp(identity, landmark_flow(source, target, size))
    # what the landmarks change in the output is what the landmark warp changes in the photo
    change, warped_change = (moved - still).flatten(), (expected - identity).flatten()
    assert warped_change.abs().max() > 0.1
    assert torch.corrcoef(torch.stack([change, warped_change]))[0, 1] > 0.9


def test_warp_generator_starts_near_the_photo():
    identity, heatmaps, identity_heatmaps = _inputs()
    out = Generator(mode="warp", **TINY)(identity, heatmaps, identity_heatmaps)
    direct = Generator(mode="direct", **TINY)(identity, heatmaps, identity_heatmaps)
    assert F.l1_loss(out, identity) < 0.5 * F.l1_loss(direct, identity)


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_discriminator_patch_logits(spectral_norm):
    frame, heatmaps, _ = _inputs(size=64)
    disc = Discriminator(spectral_norm=spectral_norm, **DISCRIMINATOR_SIZES["tiny"])
    logits = disc(frame, heatmaps)
    assert logits.shape == (2, 1, 14, 14)  # 64 → 32 → 16 by stride 2, then two stride-1 4x4 convs
    default = Discriminator(spectral_norm=spectral_norm)
    assert default(*_inputs(batch=1, size=256)[:2]).shape == (1, 1, 30, 30)  # pix2pix's 70x70 PatchGAN


# L2F losses


def test_lip_crop_finds_the_lips(face):
    _, landmarks = face
    # an image whose pixels hold their own coordinates: the crop's centre must be the box centre
    ys, xs = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    coords = torch.stack([xs, ys])[None]
    lips = landmarks[MOUTH][None]
    crop = crop_lips(coords, lips, size=65, margin=0.0)
    lo, hi = lips[0].amin(0), lips[0].amax(0)
    assert torch.allclose(crop[0, :, 32, 32], (lo + hi) / 2, atol=0.05)
    side = float((hi - lo).max())
    assert float(crop[0, 0, 32, -1] - crop[0, 0, 32, 0]) == pytest.approx(side * 64 / 65, rel=0.02)


def test_lip_crop_l1_sees_only_the_mouth(face):
    image, landmarks = face
    real, lips = image[None], landmarks[MOUTH][None]
    assert float(lip_crop_l1(real, real.clone(), lips)) == 0.0
    mouth = real.clone()
    x0, y0 = landmarks[MOUTH].amin(0).long()
    x1, y1 = landmarks[MOUTH].amax(0).long()
    mouth[..., y0:y1, x0:x1] = -1.0  # a black mouth
    assert float(lip_crop_l1(mouth, real, lips)) > 0.1
    elsewhere = real.clone()
    elsewhere[..., : y0 - 40, :] = 1.0  # everything well above the mouth turned white
    elsewhere[..., :, : x0 - 40] = 1.0
    assert float(lip_crop_l1(elsewhere, real, lips)) == 0.0
    assert float(frame_l1(elsewhere, real)) > 0.1
    # the lip term weighs a mouth change far more than the whole-frame L1 does
    assert float(lip_crop_l1(mouth, real, lips)) > 5 * float(frame_l1(mouth, real))


def test_lip_crop_l1_gradient_reaches_the_landmarks(face):
    image, landmarks = face
    real = image[None].double()
    fake = torch.roll(real, shifts=3, dims=-1)
    lips = landmarks[MOUTH][None].double().requires_grad_(True)
    lip_crop_l1(fake, real, lips).backward()
    assert torch.isfinite(lips.grad).all() and lips.grad.abs().sum() > 0
    # matches a finite difference on the leftmost lip point's x (which moves the box)
    k = int(lips[0, :, 0].argmin())
    eps = 1e-5  # small: bilinear sampling has kinks where a sample crosses a pixel
    plus, minus = lips.detach().clone(), lips.detach().clone()
    plus[0, k, 0] += eps
    minus[0, k, 0] -= eps
    numeric = (lip_crop_l1(fake, real, plus) - lip_crop_l1(fake, real, minus)) / (2 * eps)
    assert float(numeric) == pytest.approx(float(lips.grad[0, k, 0]), rel=0.02, abs=1e-7)


def test_gan_loss_values():
    logits = torch.tensor([[-2.0, 0.5], [1.0, 3.0]])
    lsgan = GANLoss("lsgan")
    assert float(lsgan(logits, True)) == pytest.approx(((logits - 1) ** 2).mean().item())
    assert float(lsgan(logits, False)) == pytest.approx((logits**2).mean().item())
    hinge = GANLoss("hinge")
    assert float(hinge(logits, True)) == pytest.approx((3.0 + 0.5 + 0 + 0) / 4)
    assert float(hinge(logits, False)) == pytest.approx((0 + 1.5 + 2.0 + 4.0) / 4)
    assert float(hinge(logits, True, for_discriminator=False)) == pytest.approx(-logits.mean().item())
    with pytest.raises(ValueError):
        GANLoss("wgan")


# a few training steps on a real face


@pytest.mark.parametrize("mode", ["direct", "warp"])
def test_tiny_generator_learns_a_real_face(face, mode):
    """Two frames: the aligned astronaut and a copy shifted by a few pixels with its landmarks."""
    torch.manual_seed(0)
    image, landmarks = face
    size = 64
    shifts = [(0, 0), (4, 3)]  # (dx, dy) in 256-crop pixels
    frames = torch.stack([torch.roll(image, shifts=(dy, dx), dims=(1, 2)) for dx, dy in shifts])
    targets = torch.stack([landmarks + torch.tensor([dx, dy], dtype=torch.float32) for dx, dy in shifts])
    small = F.interpolate(frames, size=size, mode="area")
    identity = small[[0, 0]]
    heatmaps = render_heatmaps(targets, size=size)
    identity_heatmaps = render_heatmaps(landmarks, size=size).expand(2, -1, -1, -1)
    lips = targets[:, MOUTH] * (size / 256)

    gen = Generator(mode=mode, **TINY)
    optimiser = torch.optim.Adam(gen.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        fake = gen(identity, heatmaps, identity_heatmaps)
        loss = frame_l1(fake, small) + lip_crop_l1(fake, small, lips, size=16)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


# the trainer (train/train_l2f.py)


def _load_trainer():
    spec = importlib.util.spec_from_file_location("train_l2f", Path(__file__).parent.parent / "train" / "train_l2f.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_augment_moves_landmarks_with_the_face(face):
    """Flipped, rotated, scaled, shifted: dlib finds the landmarks where the augmentation put them."""
    image, landmarks = face
    torch.manual_seed(0)
    augment = _load_trainer().Augment(flip=1.0, rotation_deg=12, scale=0.12, shift_px=12)
    (identity, target), (lm, _) = augment([image[None].repeat(2, 1, 1, 1)] * 2, [landmarks[None].repeat(2, 1, 1)] * 2)
    assert torch.equal(identity, target)  # one draw for identity and target
    assert not torch.allclose(identity[0], identity[1])  # a new draw per sample
    for i in range(2):
        found = detect_landmarks(((identity[i] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
        assert lmd(lm[i], found) < 1.5
        assert lmd(lm[i, MIRROR], found) > 5  # the flip must renumber left and right


class _ShiftedFaces(torch.utils.data.Dataset):
    """The astronaut crop (at 64 px) as identity; targets shifted by a few pixels, landmarks with them."""

    def __init__(self, image: torch.Tensor, landmarks: torch.Tensor, size: int = 64):
        self.image, self.landmarks, self.size = image, landmarks, size

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        dx, dy = i % 3, i // 3 * 2
        shifted = torch.roll(self.image, shifts=(dy, dx), dims=(1, 2))
        small = [F.interpolate(x[None], size=self.size, mode="area")[0] for x in (self.image, shifted)]
        return {"identity": small[0], "identity_landmarks": self.landmarks, "target": small[1],
                "target_landmarks": self.landmarks + torch.tensor([dx, dy], dtype=torch.float32),
                "clip_id": "ASTRONAUT_00001", "frame": i + 1}


def test_trainer_runs_resumes_exactly_and_exports(face, tmp_path, monkeypatch):
    trainer = _load_trainer()
    data = _ShiftedFaces(*face)
    manifest = {"dataset": "astronaut", "clip_list_hash": "0", "listed_clips": 1,
                "splits": {"train": {"clips": 1}, "val": {"clips": 1}}}
    monkeypatch.setattr(trainer, "load_data", lambda cache, identity="first": (data, data, manifest))
    common = ["--cache", "unused", "--recipe", "l2f_base", "--size", "tiny", "--landmark-flow", "--batch-size", "2",
              "--log-every", "1", "--save-every", "2", "--sample-every", "2", "--val-every", "2", "--val-frames", "2",
              "--lmd-frames", "2"]  # the shipped generator's settings
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    metrics = trainer.main([*common, "--out", str(whole), "--max-steps", "4"])
    trainer.main([*common, "--out", str(parts), "--max-steps", "2"])
    trainer.main([*common, "--out", str(parts), "--max-steps", "4", "--resume"])

    def losses(run: Path) -> list[list[str]]:
        rows = [line.split(",") for line in (run / "log.csv").read_text().splitlines()]
        return [row[:-1] for row in rows]  # the last column is the step time

    assert len(losses(whole)) == 5 and losses(whole) == losses(parts)
    assert (whole / "val.csv").read_text() == (parts / "val.csv").read_text()
    assert (whole / "samples" / "step_0000004.png").exists()
    assert set(metrics) == {"l1", "psnr", "ssim", "lmd", "lmd_mouth"}
    gen, config = load_checkpoint(whole / "l2f")
    resumed, _ = load_checkpoint(parts / "l2f")
    assert isinstance(gen, Generator) and config["dtype"] == "float16" and gen.landmark_flow
    assert config["heatmap_sigma"] == 2.0 and config["image_size"] == 64 and config["metrics"] == metrics
    assert all(torch.equal(a, b) for a, b in zip(gen.state_dict().values(), resumed.state_dict().values()))
    assert "lsgan" in (whole / "l2f.md").read_text()
    # the default recipe with no --init trains its plain-warping base first (OUT/base), then fine-tunes from it
    default = tmp_path / "default"
    trainer.main(["--cache", "unused", "--size", "tiny", "--batch-size", "2", "--val-frames", "2", "--lmd-frames", "0",
                  "--out", str(default), "--max-steps", "1"])
    base_args = load_checkpoint(default / "base" / "l2f")[1]["training"]["args"]
    final_args = load_checkpoint(default / "l2f")[1]["training"]["args"]
    assert base_args["recipe"] == "l2f_base" and not base_args["landmark_flow"]
    assert final_args["recipe"] == "l2f" and final_args["landmark_flow"] and final_args["identity_frame"] == "any"
    assert final_args["init"] == str(default / "base" / "l2f")
    # fine-tuning starts from a shippable checkpoint's weights
    tuned = tmp_path / "tuned"
    trainer.main([*common, "--out", str(tuned), "--max-steps", "1", "--lmd-frames", "0", "--init", str(whole / "l2f")])
    assert "--init" in load_checkpoint(tuned / "l2f")[1]["training"]["command"]
