"""Train Det_w, the word detector (paper §III-A), on ground-truth landmark sequences.

    # one process: CPU, or the first GPU if there is one
    python -m train.train_word_detector --cache data/cache/synth --out runs/word_detector
    # N processes on one machine (DistributedDataParallel; gloo on CPU, nccl on GPUs)
    torchrun --nproc_per_node=N -m train.train_word_detector --cache data/cache/synth --out runs/word_detector
    # continue an interrupted run exactly where it stopped
    python -m train.train_word_detector --cache data/cache/synth --out runs/word_detector --resume

It learns which of the vocabulary's words a 25-frame landmark sequence says. During training each clip
shows a random 25-frame window of its 29 frames (the word stays inside) with a little landmark noise, and
optionally (--amplitude, --blur, --stretch) scaled, low-passed or time-stretched, so that the frozen detector
later judges the imperfect landmarks of the A2L predictor sensibly; evaluation uses the centre 25 frames of
the unaltered ground truth, as the A2L word loss does. (Measured on exact landmarks: --blur 1.5 --amplitude 0.4
cost 5 points on real landmarks and read no more words off predictions, docs/eval/exact_landmarks/
wd_augmentation/; they are off by default. The default noise, 0.005, hides the word too: --noise 0 --pool
attention reach 89.9% val instead of 75.0%, docs/eval/exact_landmarks/followup/; the default stays, as the
shipped detector was trained with it.) OUT gets log.csv, val.csv, last.safetensors (the
resumable state) and word_detector.safetensors (fp16) + .json + .md (model card): copy those three to
assets/checkpoints/ to ship them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from talkface.checkpoints import save_checkpoint, unwrap
from talkface.losses import WORD_FRAMES, centre_frames
from talkface.models.word_detector import WordDetector
from talkface.training import Run, Trainer, make_loader, optimizer_step, setup, teardown, wrap_ddp
from train.landmark_data import (
    add_common_args,
    data_record,
    features,
    learning_rate,
    load_data,
    random_amplitude,
    random_blur,
    stretch,
    to_batch,
    write_model_card,
)
from train.recipes import apply_recipe

SIZES = {"default": {}, "tiny": dict(hidden=16, num_layers=1, fc_dim=16)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_common_args(p)
    # model
    p.add_argument("--size", choices=sorted(SIZES), default="default")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--hidden", type=int, help="LSTM width (default: the --size's)")
    p.add_argument("--pool", choices=("mean", "attention"), default="mean",
                   help="how the LSTM's outputs are pooled over time (attention: a learned weight per frame)")
    # augmentation
    p.add_argument("--noise", type=float, default=0.005, help="landmark noise std (canonical frame units)")
    p.add_argument("--no-shift", action="store_true", help="always the centre 25 frames, no random window")
    p.add_argument("--blur", type=float, default=0.0,
                   help="per clip, a temporal Gaussian blur of random sigma in [0, BLUR] frames (0: none)")
    p.add_argument("--amplitude", type=float, default=0.0,
                   help="per clip, motion scaled by a random factor in [1-A, 1+A] (0: none)")
    p.add_argument("--stretch", type=float, default=0.0,
                   help="per clip, time-stretched about its centre by a random speed in [1-S, 1+S] (0: none)")
    return apply_recipe(p, "word_detector", argv, "word_detector")


def random_windows(landmarks: torch.Tensor, frames: int = WORD_FRAMES) -> torch.Tensor:
    """A random `frames`-long window of each clip (B, T, ...) → (B, frames, ...)."""
    b, t = landmarks.shape[:2]
    start = torch.randint(0, t - frames + 1, (b, 1), device=landmarks.device)
    index = start + torch.arange(frames, device=landmarks.device)
    return landmarks[torch.arange(b, device=landmarks.device)[:, None], index]


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, run: Run, batch_size: int) -> dict[str, float]:
    """Top-1 / top-5 accuracy and cross-entropy on the centre 25 frames of every clip of a split."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    loss = correct = top5 = count = 0.0
    for items in DataLoader(dataset, batch_size=batch_size):
        batch = to_batch(items, run.device)
        logits = model(centre_frames(batch.landmarks))
        loss += F.cross_entropy(logits, batch.words, reduction="sum").item()
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct += (best[:, 0] == batch.words).sum().item()
        top5 += (best == batch.words[:, None]).any(dim=1).sum().item()
        count += len(batch.words)
    model.train(was_training)
    return {"accuracy": correct / count, "top5": top5 / count, "loss": loss / count}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = Path(args.out)
    run = setup(args.seed)
    train_set, evaluation, manifest = load_data(args.cache, args.extra_cache)
    kwargs = {"n_words": len(manifest["vocabulary"]), "dropout": args.dropout, "pool": args.pool, **SIZES[args.size]}
    if args.hidden:
        kwargs["hidden"] = args.hidden
    model = wrap_ddp(WordDetector(**kwargs), run)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loader = make_loader(train_set, args.batch_size, run, args.seed, num_workers=args.num_workers)
    trainer = Trainer(run, out, args, argv, {"model": model}, {"opt": optimizer}, desc="word detector")

    def step(items) -> dict[str, torch.Tensor]:
        batch = to_batch(items, run.device)
        clips = random_blur(stretch(random_amplitude(batch.landmarks, args.amplitude), args.stretch), args.blur)
        landmarks = centre_frames(clips) if args.no_shift else random_windows(clips)
        landmarks = landmarks + args.noise * torch.randn_like(landmarks)
        logits = model(landmarks)
        loss = F.cross_entropy(logits, batch.words)
        optimizer_step(optimizer, loss)
        return {"loss": loss, "accuracy": (logits.argmax(1) == batch.words).float().mean()}

    def validate() -> dict[str, float]:
        return evaluate(model, evaluation["val"], run, args.batch_size)

    trainer.fit(loader, step, validate if "val" in evaluation else None, lr=lambda s: learning_rate(s, args))

    metrics: dict[str, dict[str, float]] = {}
    if run.is_main:
        metrics = {split: evaluate(model, data, run, args.batch_size) for split, data in evaluation.items()}
        detector = unwrap(model)
        config = {
            "stage": "word_detector",
            "features": features(manifest),
            "input": f"the centre {WORD_FRAMES} frames of a clip's landmarks",
            "vocabulary": manifest["vocabulary"],
            "training": trainer.record("train_word_detector.py"),
            "data": data_record(manifest),
            "metrics": metrics,
        }
        stem = save_checkpoint(out / "word_detector", detector, config, half=True)
        write_model_card(
            stem,
            "Word detector Det_w (landmarks → word)",
            [
                "Zheng et al., ICPR 2020, §III-A: an LSTM and two fully connected layers name the word a 25-frame",
                "sequence of 68 landmarks says. Frozen, it scores the A2L predictor's landmarks (L_wd).",
                "Paper: 98.24 % accuracy on LRW, 96.73 % on GRID (its own data; not comparable to ours).",
            ],
            config,
            detector,
        )
        print(f"wrote {stem}.safetensors/.json/.md; {metrics}")
    teardown(run)
    return metrics


if __name__ == "__main__":
    main()
