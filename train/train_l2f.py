"""Train L2F, the landmarks-to-frames generator (paper §III-B).

    # the shipped recipe (train/recipes.py): plain warping (in runs/l2f/base), then the landmark flow from it
    python -m train.train_l2f --cache cache/synth --out runs/l2f
    # the same two runs by hand
    python -m train.train_l2f --cache cache/synth --out runs/l2f_base --recipe l2f_base
    python -m train.train_l2f --cache cache/synth --out runs/l2f --init runs/l2f_base/l2f
    # N GPUs on one machine (DistributedDataParallel)
    torchrun --nproc_per_node=N -m train.train_l2f --cache cache/synth --out runs/l2f_base --recipe l2f_base
    # a minute-long check that everything runs
    python -m train.train_l2f --cache cache/synth --out /tmp/l2f --recipe l2f_base --size tiny --max-steps 20 \
        --batch-size 2
    # continue an interrupted run exactly where it stopped
    python -m train.train_l2f --cache cache/synth --out runs/l2f --resume

Each step is pix2pix's: set_input (augment, render heatmaps) → forward → backward_D → backward_G,
with L_G = λ_L1 L1(frame) + λ_lip L1(lip crop) + λ_adv GAN. OUT gets log.csv, samples/*.png
(identity | target heatmaps | generated | real), last.safetensors (the resumable state) and, at
the end, the shippable checkpoint l2f.safetensors (fp16) + l2f.json + the model card l2f.md; copy
those three to assets/checkpoints/ to ship them.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from talkface.checkpoints import load_checkpoint, save_checkpoint, unwrap
from talkface.data.dataset import FrameDataset, read_manifest
from talkface.face import CROP_SIZE, MIRROR, MOUTH
from talkface.heatmaps import NUM_CHANNELS, heatmap_image
from talkface.losses import GANLoss, frame_l1, lip_crop_l1
from talkface.metrics import frame_landmarks, lmd, psnr, ssim
from talkface.models.l2f import (
    DISCRIMINATOR_SIZES,
    GENERATOR_SIZES,
    HEATMAP_SCALE,
    HEATMAP_SIGMA,
    Discriminator,
    Generator,
    generator_heatmaps,
)
from talkface.training import (
    Run,
    Trainer,
    make_loader,
    setup,
    teardown,
    wrap_ddp,
)
from train.landmark_data import DATA_AND_LICENCES
from train.recipes import apply_recipe


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    # I/O
    p.add_argument("--cache", required=True, help="prepared cache (python -m talkface.data.prepare)")
    p.add_argument("--out", default="runs/l2f", help="run folder: log, samples, state, final checkpoint")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--sample-every", type=int, default=500, help="write a sample grid PNG every N steps")
    p.add_argument("--save-every", type=int, default=500, help="write the resumable state every N steps")
    p.add_argument("--val-every", type=int, default=2000, help="L1/PSNR/SSIM on --val-frames every N steps")
    p.add_argument("--val-frames", type=int, default=64)
    p.add_argument("--lmd-frames", type=int, default=64, help="frames for the final dlib LMD (0 skips it)")
    # model
    p.add_argument("--size", choices=sorted(GENERATOR_SIZES), default="default")
    p.add_argument("--mode", choices=["direct", "warp"])
    p.add_argument("--no-identity-heatmaps", action="store_true", help="G sees only the target heatmaps")
    p.add_argument("--landmark-flow", action="store_true",
                   help="warp mode: start G's flow from one computed from the two landmark sets")
    p.add_argument("--identity-frame", choices=FrameDataset.IDENTITIES, default="first",
                   help="the identity image of a training pair: the clip's first frame, or any other frame")
    p.add_argument("--init", metavar="STEM", help="start G from this shippable checkpoint's weights (fine-tuning)")
    p.add_argument("--sigma", type=float, default=HEATMAP_SIGMA, help="heatmap ridge width (crop pixels)")
    p.add_argument("--no-spectral-norm", action="store_true", help="GroupNorm in D instead")
    p.add_argument("--d-channels", type=int, help="D's first-layer width (default: the --size preset's); "
                   "32 makes D about 4x cheaper, which matters on a CPU")
    # losses
    p.add_argument("--lambda-l1", type=float, default=100.0)
    p.add_argument("--lambda-lip", type=float, default=100.0)
    p.add_argument("--lambda-adv", type=float, default=1.0, help="0 trains G on the L1 terms alone, no D")
    p.add_argument("--gan-mode", choices=["lsgan", "hinge"], default="lsgan")
    p.add_argument("--lip-size", type=int, default=64, help="side of the lip crop the lip L1 compares")
    p.add_argument("--lip-margin", type=float, default=0.15)
    # optimiser and data
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=0, help="> 0 is faster; resume is then not bit-exact")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    return apply_recipe(p, "l2f", argv, "l2f")


# augmentation: the same random draw for a sample's identity, target and both landmark sets


class Augment:
    """Random similarity + horizontal flip, then colour, exposure and side lighting, on the device.

    Geometry and colour are identical for identity and target (they are frames of one clip), so the
    generator learns to carry whatever pose and lighting the photo has into the frames, which is
    what the app meets in users' photos. A flip also renumbers the landmarks (``face.MIRROR``).
    """

    def __init__(self, scale: float = 0.08, rotation_deg: float = 8.0, shift_px: float = 8.0, flip: float = 0.5,
                 brightness: float = 0.12, contrast: float = 0.2, saturation: float = 0.3, white_balance: float = 0.08,
                 gamma: float = 0.2, lighting: float = 0.3):
        self.scale, self.rotation, self.shift, self.flip = scale, math.radians(rotation_deg), shift_px, flip
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.white_balance, self.gamma, self.lighting = white_balance, gamma, lighting

    @staticmethod
    def _uniform(n: int, spread: float, device: torch.device, centre: float = 0.0) -> torch.Tensor:
        return centre + spread * (2 * torch.rand(n) - 1).to(device)

    def geometry(self, images: list[torch.Tensor], landmarks: list[torch.Tensor]):
        b, _, h, w = images[0].shape
        dev = images[0].device
        s = self._uniform(b, self.scale, dev, 1.0)
        a = self._uniform(b, self.rotation, dev)
        t = torch.stack([self._uniform(b, self.shift, dev), self._uniform(b, self.shift, dev)], dim=1)
        flipped = (torch.rand(b) < self.flip).to(dev)
        sign = 1.0 - 2.0 * flipped.float()
        cos, sin = torch.cos(a), torch.sin(a)
        # forward map about the image centre c: p' = c + A (p - c) + t, with A = s R diag(sign, 1)
        A = s[:, None, None] * torch.stack([torch.stack([cos * sign, -sin], 1), torch.stack([sin * sign, cos], 1)], 1)
        A_inv = torch.linalg.inv(A)
        # affine_grid maps output to input in [-1, 1] units (pixel - c) * 2 / size
        theta = torch.cat([A_inv, -(A_inv @ (2 * t / w)[..., None])], dim=2)
        grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
        images = [F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False) for x in images]
        c = (w - 1) / 2
        mirror = torch.tensor(MIRROR, device=dev)
        out = []
        for lm in landmarks:
            moved = c + (lm - c) @ A.transpose(1, 2) + t[:, None]
            out.append(torch.where(flipped[:, None, None], moved[:, mirror], moved))
        return images, out

    def colour(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        b, _, h, w = images[0].shape
        dev = images[0].device
        brightness = self._uniform(b, self.brightness, dev).view(b, 1, 1, 1)
        contrast = self._uniform(b, self.contrast, dev, 1.0).view(b, 1, 1, 1)
        saturation = self._uniform(b, self.saturation, dev, 1.0).view(b, 1, 1, 1)
        gains = self._uniform(3 * b, self.white_balance, dev, 1.0).view(b, 3, 1, 1)
        gamma = torch.exp(self._uniform(b, self.gamma, dev)).view(b, 1, 1, 1)
        # side lighting: a linear ramp of gain across the face, in a random direction
        angle = 2 * math.pi * torch.rand(b).to(dev)
        strength = (self.lighting * torch.rand(b)).to(dev)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=dev), torch.linspace(-1, 1, w, device=dev),
                                indexing="ij")
        ramp = 1 + strength.view(b, 1, 1, 1) * (torch.cos(angle).view(b, 1, 1, 1) * xs + torch.sin(angle).view(
            b, 1, 1, 1) * ys)
        mean = ((images[0] + 1) / 2).mean(dim=(1, 2, 3), keepdim=True)  # the identity's: same for every image
        out = []
        for x in images:
            x = (x + 1) / 2
            grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
            x = grey + saturation * (x - grey)
            x = (x - mean) * contrast + mean + brightness
            x = (x * gains * ramp).clamp(0, 1) ** gamma
            out.append(x * 2 - 1)
        return out

    def __call__(self, images: list[torch.Tensor], landmarks: list[torch.Tensor]):
        images, landmarks = self.geometry(images, landmarks)
        return self.colour(images), landmarks


# the model: pix2pix's set_input → forward → backward_D → backward_G


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class L2FModel:
    """Generator, discriminator, their optimisers and losses; one call of optimize_parameters per batch."""

    loss_names = ("G_L1", "G_lip", "G_adv", "D_real", "D_fake")
    visual_names = ("identity", "target_heatmaps", "fake", "target")
    model_names = ("G", "D")

    def __init__(self, args: argparse.Namespace, run: Run):
        self.args, self.device = args, run.device
        generator = Generator(mode=args.mode, use_identity_heatmaps=not args.no_identity_heatmaps,
                              landmark_flow=args.landmark_flow, **GENERATOR_SIZES[args.size])
        if args.init:
            init, _ = load_checkpoint(args.init)
            generator.load_state_dict(init.float().state_dict())
        self.net_G = wrap_ddp(generator, run)
        d_size = dict(DISCRIMINATOR_SIZES[args.size])
        if args.d_channels:
            d_size["base_channels"] = args.d_channels
        self.net_D = wrap_ddp(Discriminator(spectral_norm=not args.no_spectral_norm, **d_size), run)
        if run.device.type == "cuda":
            self.net_G.to(memory_format=torch.channels_last)
            self.net_D.to(memory_format=torch.channels_last)
        betas = (args.beta1, 0.999)
        self.opt_G = torch.optim.Adam(self.net_G.parameters(), lr=args.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.net_D.parameters(), lr=args.lr, betas=betas)
        self.gan = GANLoss(args.gan_mode)
        self.augment = None if args.no_augment else Augment()
        self.amp = args.amp and run.device.type == "cuda"
        self.losses = dict.fromkeys(self.loss_names, 0.0)

    def _render(self, landmarks: torch.Tensor) -> torch.Tensor:
        """Heatmaps at the generator's HEATMAP_SCALE of the frame; D gets them upsampled (Discriminator does it)."""
        size = self.identity.shape[-1]
        maps = generator_heatmaps(landmarks, size, self.args.sigma)
        return maps.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else maps

    def set_input(self, batch: dict, augment: bool = True) -> None:
        """Move a batch to the device, augment it, draw the heatmaps; landmarks become this image's pixels."""
        images = [batch[name].to(self.device, non_blocking=True) for name in ("identity", "target")]
        k = images[0].shape[-1] / CROP_SIZE  # 1 for the real 256 crops; smaller images in tests
        landmarks = [(batch[name].to(self.device).float() + 0.5) * k - 0.5
                     for name in ("identity_landmarks", "target_landmarks")]
        if augment and self.augment is not None:
            images, landmarks = self.augment(images, landmarks)
        if self.device.type == "cuda":
            images = [x.contiguous(memory_format=torch.channels_last) for x in images]
        self.identity, self.target = images
        self.identity_landmarks, self.target_landmarks = landmarks
        self.target_heatmaps = self._render(self.target_landmarks)
        self.identity_heatmaps = None if self.args.no_identity_heatmaps else self._render(self.identity_landmarks)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def forward(self) -> None:
        with self._autocast():
            self.fake = self.net_G(self.identity, self.target_heatmaps, self.identity_heatmaps,
                                   **self.flow_inputs()).float()

    def flow_inputs(self) -> dict[str, torch.Tensor]:
        """The landmark sets a generator built with ``landmark_flow`` warps by (none for the others)."""
        if not self.args.landmark_flow:
            return {}
        return {"landmarks": self.target_landmarks, "identity_landmarks": self.identity_landmarks}

    def backward_D(self) -> None:
        # real and fake in one batch: one DDP forward per backward (GroupNorm/spectral norm are per sample)
        with self._autocast():
            logits = self.net_D(torch.cat([self.target, self.fake.detach()]),
                                torch.cat([self.target_heatmaps, self.target_heatmaps])).float()
        real, fake = logits.chunk(2)
        loss_real, loss_fake = self.gan(real, True), self.gan(fake, False)
        (0.5 * (loss_real + loss_fake)).backward()
        self.losses.update(D_real=loss_real.item(), D_fake=loss_fake.item())

    def backward_G(self) -> None:
        a = self.args
        l1 = frame_l1(self.fake, self.target)
        lip = lip_crop_l1(self.fake, self.target, self.target_landmarks[:, MOUTH], size=a.lip_size, margin=a.lip_margin)
        total = a.lambda_l1 * l1 + a.lambda_lip * lip
        if a.lambda_adv > 0:
            # the plain D (not its DDP wrapper) with frozen weights: G's step must not touch D
            with self._autocast():
                logits = unwrap(self.net_D)(self.fake, self.target_heatmaps).float()
            adv = self.gan(logits, True, for_discriminator=False)
            total = total + a.lambda_adv * adv
            self.losses["G_adv"] = adv.item()
        total.backward()
        self.losses.update(G_L1=l1.item(), G_lip=lip.item())

    def optimize_parameters(self) -> None:
        self.forward()
        if self.args.lambda_adv > 0:
            set_requires_grad(self.net_D, True)
            self.opt_D.zero_grad(set_to_none=True)
            self.backward_D()
            self.opt_D.step()
            set_requires_grad(self.net_D, False)
        self.opt_G.zero_grad(set_to_none=True)
        self.backward_G()
        self.opt_G.step()

    def visuals(self, rows: int = 4) -> np.ndarray:
        """identity | target heatmaps | generated | real, one row per sample, as an RGB uint8 grid."""

        def rgb(x: torch.Tensor) -> np.ndarray:
            return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()

        size = self.identity.shape[-1]
        grid = []
        for i in range(min(rows, self.identity.shape[0])):
            maps = cv2.resize(heatmap_image(self.target_heatmaps[i]), (size, size), interpolation=cv2.INTER_LINEAR)
            grid.append(np.concatenate([rgb(self.identity[i]), maps, rgb(self.fake[i]), rgb(self.target[i])], axis=1))
        return np.concatenate(grid, axis=0)


# data and evaluation


def load_data(cache: str, identity: str = "first") -> tuple[Dataset, Dataset | None, dict]:
    """Train split (its identity frames chosen by ``identity``), val split (None when the cache has none;
    always the first frame as identity, so validation figures compare across runs) and the manifest."""
    manifest = read_manifest(cache)
    val = FrameDataset(cache, "val") if "val" in manifest["splits"] else None
    return FrameDataset(cache, "train", identity=identity), val, manifest


def spread_indices(dataset: Dataset, count: int) -> list[int]:
    """`count` items spread evenly over the dataset: a fixed, varied evaluation set."""
    return np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int).tolist()


@torch.inference_mode()
def evaluate(model: L2FModel, dataset: Dataset, indices: list[int], with_lmd: bool = False) -> dict[str, float]:
    """L1, PSNR, SSIM (and dlib LMD, all points and mouth) of generated vs real frames, no augmentation."""
    gen = unwrap(model.net_G)
    gen.eval()
    l1, fakes, reals = [], [], []
    for start in range(0, len(indices), model.args.batch_size):
        items = [dataset[i] for i in indices[start : start + model.args.batch_size]]
        batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in
                 ("identity", "identity_landmarks", "target", "target_landmarks")}
        model.set_input(batch, augment=False)
        with model._autocast():
            fake = gen(model.identity, model.target_heatmaps, model.identity_heatmaps, **model.flow_inputs()).float()
        l1.append(F.l1_loss(fake, model.target, reduction="none").flatten(1).mean(1))
        fakes.append(((fake.clamp(-1, 1) + 1) / 2).cpu())
        reals.append(((model.target + 1) / 2).cpu())
    model.fake = fake  # so that visuals() shows this last batch, inputs and outputs alike
    gen.train()
    fake, real = torch.cat(fakes), torch.cat(reals)
    metrics = {"l1": torch.cat(l1).mean().item(), "psnr": psnr(fake, real, channel_axis=1),
               "ssim": ssim(fake, real, channel_axis=1)}
    if with_lmd:
        pred, true = frame_landmarks(fake), frame_landmarks(real)
        metrics.update(lmd=lmd(pred, true), lmd_mouth=lmd(pred, true, points=MOUTH))
    return metrics


# the shippable checkpoint


def export(out: Path, model: L2FModel, args: argparse.Namespace, manifest: dict, training: dict,
           metrics: dict[str, float]) -> Path:
    """fp16 safetensors + JSON (how to rebuild G and render its heatmaps) + a model card in Markdown; `training`
    is ``Trainer.record``."""
    gen = unwrap(model.net_G)
    command = training["command"]
    config = {
        "stage": "l2f",
        # what the pipeline needs to draw the generator's input as in training
        "image_size": int(model.identity.shape[-1]),
        "heatmap_sigma": args.sigma,
        "heatmap_channels": NUM_CHANNELS,
        "heatmap_scale": HEATMAP_SCALE,
        "training": training,
        "data": {**{k: manifest.get(k) for k in ("dataset", "clip_list_hash", "listed_clips")},
                 "clips": {name: split["clips"] for name, split in manifest.get("splits", {}).items()}},
        "metrics": metrics,
    }
    stem = save_checkpoint(out / "l2f", gen, config, half=True)
    size_mb = stem.with_suffix(".safetensors").stat().st_size / 1e6
    params = sum(p.numel() for p in gen.parameters())
    lines = [
        "# L2F generator (landmarks → frames)",
        "",
        "Zheng et al., ICPR 2020, §III-B: a U-Net variant paints a 256×256 frame from the identity photo and the",
        f"target landmarks drawn as {NUM_CHANNELS} heatmap channels (σ = {args.sigma} px).",
        "",
        f"- Mode: `{args.mode}`{' with the landmark flow' if args.landmark_flow else ''}; identity frame "
        f"`{args.identity_frame}`{f'; fine-tuned from `{args.init}`' if args.init else ''}; size preset "
        f"`{args.size}`; {params / 1e6:.2f} M parameters, {size_mb:.1f} MB (fp16).",
        f"- Trained {training['steps']} steps, batch {args.batch_size} per process, Adam lr {args.lr}, "
        f"λ_L1 = {args.lambda_l1}, λ_lip = {args.lambda_lip}, λ_adv = {args.lambda_adv} ({args.gan_mode}).",
        f"- Data: `{manifest.get('dataset')}` cache, clip list hash `{manifest.get('clip_list_hash')}`; "
        f"augmentation {'off' if args.no_augment else 'on (similarity, flip, colour, lighting)'}.",
        f"- Command: `{command}`",
        "",
        "## Validation (generated vs real frames, val split)",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in metrics.items()),
        "",
        "## Limits",
        "",
        "Trained on the data above only: faces, lighting and head poses far from it will look worse. The",
        "generator repaints the aligned 256×256 face crop; it does not animate hair, shoulders or background",
        "beyond the crop.",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n\n" + DATA_AND_LICENCES)
    return stem


def save_grid(path: Path, grid: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(grid).save(tmp, format="PNG")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.recipe == "l2f" and not args.init:
        # the shipped recipe is two runs: plain warping first (in OUT/base), then this one fine-tuned from it
        # with the landmark flow; the command's other flags apply to both
        base = Path(args.out) / "base"
        # --resume continues whichever of the two runs was interrupted (the other starts, or is done); without it
        # either run refuses a folder that already holds one
        argv = [a for a in argv if a != "--resume"]

        def resume(folder: Path) -> list[str]:
            return ["--resume"] if args.resume and (folder / "last.safetensors").exists() else []

        if not (base / "l2f.md").exists():  # the card is written last: a finished base run
            main([*argv, "--recipe", "l2f_base", "--out", str(base), *resume(base)])
        argv = [*argv, "--init", str(base / "l2f"), *resume(Path(args.out))]
        args = parse_args(argv)
    out = Path(args.out)
    run = setup(args.seed)
    train_set, val_set, manifest = load_data(args.cache, args.identity_frame)
    model = L2FModel(args, run)
    loader = make_loader(train_set, args.batch_size, run, args.seed, num_workers=args.num_workers)
    trainer = Trainer(run, out, args, argv, {"G": model.net_G, "D": model.net_D}, {"G": model.opt_G, "D": model.opt_D},
                      desc="L2F")
    val_indices = spread_indices(val_set, args.val_frames) if val_set is not None else []

    def step(batch) -> dict[str, float]:
        model.set_input(batch)
        model.optimize_parameters()
        return model.losses

    def sample(step: int) -> None:
        if run.is_main and step % args.sample_every == 0:
            save_grid(out / "samples" / f"step_{step:07d}.png", model.visuals())

    trainer.fit(loader, step, (lambda: evaluate(model, val_set, val_indices)) if val_indices else None,
                after_step=sample)

    metrics: dict[str, float] = {}
    if run.is_main:
        if val_indices:
            metrics = evaluate(model, val_set, val_indices)
            if args.lmd_frames > 0:
                lmd_metrics = evaluate(model, val_set, spread_indices(val_set, args.lmd_frames), with_lmd=True)
                metrics.update(lmd=lmd_metrics["lmd"], lmd_mouth=lmd_metrics["lmd_mouth"])
        save_grid(out / "samples" / "final.png", model.visuals())
        stem = export(out, model, args, manifest, trainer.record("train_l2f.py"), metrics)
        print(f"wrote {stem}.safetensors/.json/.md; validation: {metrics}")
    teardown(run)
    return metrics


if __name__ == "__main__":
    main()
