"""Training throughput (samples/s) of every stage, with the trainers' own model and loss code on synthetic
in-memory batches of the real shapes, so that no corpus is needed.

    python bench/training.py            # each stage at its trainer's default size and batch
    python bench/training.py --quick    # fewer timed steps, L2F at batch 4

A sample is a 29-frame clip for the A2L-side stages (word detector, MI estimator, A2L) and one 256x256 frame
for L2F. One step = what the trainer does per batch (forward, losses, backward, optimizer step), data loading
excluded: the caches are read into memory (A2L side) or decoded from JPEG (L2F), which this does not time.
Each stage runs in a fresh process as shipped and again with OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
import talkface  # noqa: F401, I001 - first: OpenMP's spin-wait set as the CLI and the app have it
import torch
import torch.nn.functional as F

from bench.harness import Row, default_device, fresh_python, machine_line, report, seconds_per_call
from talkface.data.lrw import CLIP_FRAMES
from talkface.face import MEAN_SHAPE
from talkface.losses import landmark_l2, temporal_residual_loss, word_loss
from talkface.models.a2l import LandmarkPredictor
from talkface.models.mi_estimator import MIEstimator, mine_lower_bound
from talkface.models.word_detector import WordDetector
from talkface.training import Run, freeze

SECTION = "training"


def trainer(name: str):
    """A trainer of the train package (python -m train.NAME)."""
    return importlib.import_module(f"train.{name}")


def landmark_items(batch: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Clips as the landmark cache hands them over: crop-pixel faces that move a little, MFCC-like windows."""
    face = MEAN_SHAPE * 48 + 128 + rng.normal(0, 1.5, (batch, 1, 68, 2))
    landmarks = face + rng.normal(0, 1.0, (batch, CLIP_FRAMES, 68, 2))
    return {
        "landmarks": torch.from_numpy(landmarks).float(),
        "ref_landmarks": torch.from_numpy(landmarks[:, 0]).float(),
        "mfcc": torch.from_numpy(rng.normal(0, 5, (batch, CLIP_FRAMES, 28, 12))).float(),
        "word": torch.from_numpy(rng.integers(0, 500, batch)),
    }


def frame_items(batch: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Frame pairs as FrameDataset hands them over: identity and target 256x256 in [-1, 1], landmarks."""
    image = torch.from_numpy(rng.uniform(-1, 1, (batch, 3, 256, 256))).float()
    face = MEAN_SHAPE * 48 + 128
    return {
        "identity": image,
        "target": (image + 0.05 * torch.randn_like(image)).clamp(-1, 1),
        "identity_landmarks": torch.from_numpy(face + rng.normal(0, 1, (batch, 68, 2))).float(),
        "target_landmarks": torch.from_numpy(face + rng.normal(0, 1, (batch, 68, 2))).float(),
    }


def measure(quick: bool = False, device: torch.device | None = None) -> list[dict]:
    """One step of each stage, timed in this process: [{stage, batch, seconds}]."""
    device = device or default_device()
    min_s = 1.0 if quick else 5.0
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    data = trainer("train_word_detector")
    from train.landmark_data import to_batch

    results = []
    sync = device.type == "cuda"

    def add(stage: str, batch: int, step) -> None:
        t = seconds_per_call(step, min_seconds=min_s, min_calls=2 if quick else 3, sync=sync)
        results.append({"stage": stage, "batch": batch, "seconds": t})

    b = 64  # the A2L-side trainers' default batch
    batch = to_batch(landmark_items(b, rng), device)

    detector = WordDetector().to(device).train()
    opt = torch.optim.AdamW(detector.parameters(), lr=1e-3)

    def detector_step() -> None:
        windows = data.random_windows(batch.landmarks)
        loss = F.cross_entropy(detector(windows + 0.005 * torch.randn_like(windows)), batch.words)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    add("word detector", b, detector_step)

    estimator = MIEstimator().to(device).train()
    opt_mi = torch.optim.AdamW(estimator.parameters(), lr=1e-3)
    ema = [None]

    def estimator_step() -> None:
        _, loss, ema[0] = mine_lower_bound(*estimator(batch.mfcc, batch.landmarks), ema[0], 0.01)
        opt_mi.zero_grad(set_to_none=True)
        loss.backward()
        opt_mi.step()

    add("MI estimator", b, estimator_step)

    judges = (freeze(detector), freeze(estimator))
    for name, lambdas in (("A2L baseline", (0.0, 0.0)), ("A2L +WD+TR", (1e-4, 1e-4))):
        predictor = LandmarkPredictor().to(device).train()
        opt_a2l = torch.optim.AdamW(predictor.parameters(), lr=1e-3)

        def a2l_step(model=predictor, opt=opt_a2l, lambdas=lambdas) -> None:
            pred = model(batch.mfcc, batch.ref)
            loss = landmark_l2(pred, batch.landmarks)
            if lambdas[0]:
                loss = loss + lambdas[0] * word_loss(judges[0], pred, batch.words)
            if lambdas[1]:
                loss = loss + lambdas[1] * temporal_residual_loss(judges[1], batch.mfcc, pred)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        add(name, b, a2l_step)

    l2f = trainer("train_l2f")
    b = 4 if quick else 16  # train_l2f's default batch is 16
    args = l2f.parse_args(["--cache", "-", "--batch-size", str(b)])
    model = l2f.L2FModel(args, Run(device=device))
    frames = frame_items(b, rng)

    def l2f_step() -> None:
        model.set_input(frames)
        model.optimize_parameters()

    add("L2F, G + D (default sizes, augmentation on)", b, l2f_step)
    return results


def run(quick: bool = False, device: torch.device | None = None) -> list[Row]:
    """Every stage in a fresh process as shipped, and again with OMP_WAIT_POLICY=PASSIVE (OpenMP reads it
    once, at start): on a CPU shared with other work the two differ several-fold."""
    device = device or default_device()
    args = [__file__, "--child", "--device", str(device), *(["--quick"] if quick else [])]
    shipped, _ = fresh_python(args, timeout=1800)
    passive, _ = fresh_python(args, {"OMP_WAIT_POLICY": "PASSIVE"}, timeout=1800)
    rows = []
    for a, b in zip(shipped["results"], passive["results"]):
        value = (f"{a['batch'] / a['seconds']:.1f} samples/s ({a['seconds'] * 1000:.0f} ms/step); "
                 f"with OMP_WAIT_POLICY=PASSIVE {b['batch'] / b['seconds']:.1f} "
                 f"({b['seconds'] * 1000:.0f} ms/step)")
        rows.append(Row(SECTION, f"{a['stage']} (batch {a['batch']})", value))
        print(f"  {rows[-1].figure}: {value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps, L2F at batch 4")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    if args.child:
        print(json.dumps({"results": measure(args.quick, device)}))
        return
    header = machine_line(device)
    print(header, flush=True)
    report("Training throughput", run(args.quick, device), header=header)


if __name__ == "__main__":
    main()
