"""Train Est_m, the audio/landmark mutual-information estimator (paper §III-A, MINE), on ground truth.

    # one process: CPU, or the first GPU if there is one
    python -m train.train_mi_estimator --cache data/cache/synth --out runs/mi_estimator
    # N processes on one machine (DistributedDataParallel; gloo on CPU, nccl on GPUs)
    torchrun --nproc_per_node=N -m train.train_mi_estimator --cache data/cache/synth --out runs/mi_estimator
    # continue an interrupted run exactly where it stopped
    python -m train.train_mi_estimator --cache data/cache/synth --out runs/mi_estimator --resume

The statistics network T learns to tell a clip's own (audio residual, landmark residual) pair from the
audio of one clip paired with the landmarks of another, by maximising the Donsker–Varadhan bound with
MINE's moving-average gradient. Besides the bound on true pairs (`mi`), evaluation reports it for the
same clips with the landmarks shifted 6 frames (240 ms) late (`mi_late`): the gap is the sensitivity to
synchrony that L_tr rewards. OUT gets log.csv, val.csv, last.safetensors (the resumable state) and
mi_estimator.safetensors (fp16) + .json + .md (model card): copy those three to assets/checkpoints/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from talkface.checkpoints import save_checkpoint, unwrap
from talkface.models.mi_estimator import MIEstimator, mine_lower_bound
from talkface.training import Run, Trainer, make_loader, optimizer_step, setup, teardown, wrap_ddp
from train.landmark_data import (
    add_common_args,
    data_record,
    features,
    learning_rate,
    load_data,
    to_batch,
    write_model_card,
)
from train.recipes import apply_recipe

SIZES = {"default": {}, "tiny": dict(hidden=16)}
LATE_FRAMES = 6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_common_args(p)
    p.add_argument("--size", choices=sorted(SIZES), default="default")
    p.add_argument("--ema-rate", type=float, default=0.01, help="MINE's moving average of E_Q[e^T]")
    return apply_recipe(p, "mi_estimator", argv, "mi_estimator")


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, run: Run, batch_size: int) -> dict[str, float]:
    """Mean DV bound over the split's batches: true timing (`mi`) and landmarks LATE_FRAMES late."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    totals = {"mi": 0.0, "mi_late": 0.0}
    clips = 0
    for items in DataLoader(dataset, batch_size=batch_size):
        batch = to_batch(items, run.device)
        n = len(batch.words)
        if n < 2:  # the marginal pairs a clip with another clip: a batch of one has none
            continue
        # the same audio with its own landmarks, and with landmarks LATE_FRAMES late (no wrap-around)
        audio = batch.mfcc[:, LATE_FRAMES:]
        pairs = (("mi", batch.landmarks[:, LATE_FRAMES:]), ("mi_late", batch.landmarks[:, :-LATE_FRAMES]))
        for key, landmarks in pairs:
            totals[key] += mine_lower_bound(*model(audio, landmarks, shift=1))[0].item() * n
        clips += n
    model.train(was_training)
    return {k: v / max(clips, 1) for k, v in totals.items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = Path(args.out)
    run = setup(args.seed)
    train_set, evaluation, manifest = load_data(args.cache, args.extra_cache)
    model = wrap_ddp(MIEstimator(**SIZES[args.size]), run)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loader = make_loader(train_set, args.batch_size, run, args.seed, num_workers=args.num_workers)
    trainer = Trainer(run, out, args, argv, {"model": model}, {"opt": optimizer}, desc="MI estimator")
    # MINE's moving average of the marginal term, carried across steps and resumes
    ema = torch.tensor(trainer.state.extra["ema"], device=run.device) if "ema" in trainer.state.extra else None

    def step(items) -> dict[str, torch.Tensor]:
        nonlocal ema
        batch = to_batch(items, run.device)
        mi, loss, ema = mine_lower_bound(*model(batch.mfcc, batch.landmarks), ema, args.ema_rate)
        optimizer_step(optimizer, loss)
        return {"mi": mi, "loss": loss, "ema": ema}

    def validate() -> dict[str, float]:
        return evaluate(model, evaluation["val"], run, args.batch_size)

    trainer.fit(loader, step, validate if "val" in evaluation else None, lr=lambda s: learning_rate(s, args),
                extra=lambda: {"ema": ema.item()})

    metrics: dict[str, dict[str, float]] = {}
    if run.is_main:
        metrics = {split: evaluate(model, data, run, args.batch_size) for split, data in evaluation.items()}
        estimator = unwrap(model)
        config = {
            "stage": "mi_estimator",
            "features": features(manifest),
            "input": "a clip's MFCC windows and landmarks; the estimator takes their frame-to-frame residuals",
            "training": trainer.record("train_mi_estimator.py"),
            "data": data_record(manifest),
            "metrics": metrics,
        }
        stem = save_checkpoint(out / "mi_estimator", estimator, config, half=True)
        write_model_card(
            stem,
            "MI estimator Est_m (audio residuals × landmark residuals)",
            [
                "Zheng et al., ICPR 2020, §III-A, after MINE (Belghazi et al. 2018): a two-stream statistics network",
                "(three convolution layers, two fully connected) whose Donsker–Varadhan bound estimates the mutual",
                "information between frame-to-frame audio change and landmark change. Frozen, it scores the A2L",
                f"predictor's landmarks (L_tr = −MI). `mi_late`: the same clips, landmarks {LATE_FRAMES} frames late.",
            ],
            config,
            estimator,
        )
        print(f"wrote {stem}.safetensors/.json/.md; {metrics}")
    teardown(run)
    return metrics


if __name__ == "__main__":
    main()
