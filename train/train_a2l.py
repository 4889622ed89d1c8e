"""Train A2L, the audio-to-landmarks predictor (paper §III-A): L = L_rec + λ_wd L_wd + λ_tr L_tr.

    # the four ablations of the paper, each its shipped recipe (train/recipes.py; the judges must be trained
    # first: train_word_detector.py, train_mi_estimator.py; by default they are read from assets/checkpoints/)
    python -m train.train_a2l --cache data/cache_a2l --out runs/a2l_baseline
    python -m train.train_a2l --cache data/cache_a2l --out runs/a2l_wd --recipe a2l_wd
    python -m train.train_a2l --cache data/cache_a2l --out runs/a2l_tr --recipe a2l_tr
    python -m train.train_a2l --cache data/cache_a2l --out runs/a2l_wd_tr --recipe a2l_wd_tr
    # N processes on one machine (DistributedDataParallel; gloo on CPU, nccl on GPUs)
    torchrun --nproc_per_node=N -m train.train_a2l --cache data/cache_a2l --out runs/a2l_wd_tr --recipe a2l_wd_tr
    # continue an interrupted run exactly where it stopped
    python -m train.train_a2l ... --resume

L_rec is a mean squared distance in the canonical frame (1 unit ≈ 50 crop pixels), about 1e-4 to 1e-3
once trained, while L_wd (a cross-entropy) and L_tr (−MI, in nats) are of order 1-10: hence small λs. Choose
them on val, never test. On dlib's landmarks (the previous release) λ = 1e-4 let the judges pull the landmarks
away from the ground truth and 1e-5 was chosen of {1e-4, 1e-5, 1e-6}. On the exact landmarks the frozen MI
estimator is easier to fool: at λ_tr = 1e-5 the predictions score 11.7 nats on it (real landmarks: 3.5) and
val LMD rises from 0.423 to 0.489 px; 1e-6 costs least (0.438) and is what the exact-landmark checkpoints
use (the shipped recipes, train/recipes.py); hinging L_tr at the ground truth's MI (--tr-hinge) did not help (0.444).
A heavier word loss does not help either: λ_wd = 1e-4 / 1e-3 gave val LMD 0.602 / 0.872 px and fewer words read
off the predictions than 1e-5. docs/eval/exact_landmarks/sweep/ has the runs (val_tr.md, val_wd.md).

The predictor sees each clip's MFCC windows and its reference landmarks (frame 0) and predicts all 29
frames' landmarks in the canonical frame. The word detector and the MI estimator, frozen, judge the
predictions (L_wd on the centre 25 frames, L_tr on all). Evaluation reports LMD in crop pixels (all 68
points and the 20 mouth points, predictions put back in the ground truth's head pose), the LMD of the
still reference face for scale, and — whichever judges are at hand, whatever the λ — the detector's word
accuracy and the estimator's MI on the predictions. OUT gets log.csv, val.csv, last.safetensors (the
resumable state) and NAME.safetensors (fp16) + .json + .md (model card), NAME = a2l_baseline, a2l_wd,
a2l_tr or a2l_wd_tr from the λs: copy those three to assets/checkpoints/ to ship them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from talkface.checkpoints import (
    bundled,
    load_checkpoint,
    load_state_dict_checked,
    read_safetensors,
    save_checkpoint,
    unwrap,
)
from talkface.face import MOUTH, lip_opening
from talkface.losses import centre_frames, landmark_l2, temporal_residual_loss, velocity_loss, word_loss
from talkface.metrics import lmd
from talkface.models.a2l import LandmarkPredictor
from talkface.models.mi_estimator import mine_lower_bound
from talkface.training import Run, Trainer, freeze, make_loader, optimizer_step, setup, teardown, wrap_ddp
from train.landmark_data import (
    add_common_args,
    channel_augment,
    data_record,
    features,
    learning_rate,
    load_data,
    speaker_augment,
    to_batch,
    write_model_card,
)
from train.recipes import apply_recipe

SIZES = {"default": {}, "tiny": dict(audio_channels=(8, 8, 8), audio_dim=16, landmark_dim=8, hidden=16, num_layers=1)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_common_args(p)
    p.add_argument("--name", help="checkpoint name (default: a2l_baseline / a2l_wd / a2l_tr / a2l_wd_tr from the λs)")
    # model
    p.add_argument("--size", choices=sorted(SIZES), default="default")
    p.add_argument("--init-audio-encoder", metavar="PROBE",
                   help="start E_a from the audio word probe of diagnose_word_detector.py --source audio --save PROBE "
                        "(ours: does an audio encoder that already hears the word put it in the lips?)")
    p.add_argument("--bidirectional", action="store_true",
                   help="D_l reads the clip's audio both ways (ours: lips anticipate the sound; see models/a2l.py)")
    # losses
    p.add_argument("--lambda-wd", type=float, default=0.0, help="weight of the word loss L_wd (0: off)")
    p.add_argument("--lambda-tr", type=float, default=0.0, help="weight of the temporal residual loss L_tr (0: off)")
    p.add_argument("--lambda-vel", type=float, default=0.0,
                   help="weight of L2 on the frame-to-frame motion (ours, an experiment; losses.velocity_loss)")
    p.add_argument("--mfcc-offset", type=float, default=0.0,
                   help="channel augmentation: a random cepstral offset per clip, N(0, this × std) (0: off)")
    p.add_argument("--vtlp", type=float, default=0.0,
                   help="speaker augmentation: each clip's formants scaled by a random factor in 1 ± this (VTLP; "
                        "ours, an experiment; 0: off)")
    p.add_argument("--tr-hinge", action="store_true",
                   help="hinge L_tr at the ground truth's MI, max(0, MI_true - MI_pred) (ours; see losses.py)")
    p.add_argument("--detector", default=str(bundled("word_detector")), help="word detector checkpoint stem")
    p.add_argument("--estimator", default=str(bundled("mi_estimator")), help="MI estimator checkpoint stem")
    return apply_recipe(p, "a2l_baseline", argv, "a2l_")


def variant_name(args: argparse.Namespace) -> str:
    suffix = "_".join(name for name, weight in (("wd", args.lambda_wd), ("tr", args.lambda_tr)) if weight > 0)
    return args.name or f"a2l_{suffix or 'baseline'}"


def load_judge(stem: str, needed: bool, run: Run, energy: bool | None = None) -> nn.Module | None:
    """A frozen pretrained judge; None when it is not needed and not there (evaluation then skips it).
    `energy`: the audio features of the cache (a judge that hears MFCCs must have learnt from the same)."""
    if not needed and not Path(stem).with_suffix(".json").exists():
        return None
    model, config = load_checkpoint(stem, device=run.device)
    heard = bool(config.get("features", {}).get("energy", False))
    if energy is not None and heard != energy:
        if not needed:  # only its view of the val split is lost
            return None
        raise SystemExit(f"{stem} learnt from MFCC windows {'with' if heard else 'without'} the loudness "
                         f"coefficient, the cache holds them {'with' if energy else 'without'}; train an MI "
                         "estimator on this cache (train_mi_estimator.py) and pass it with --estimator.")
    return freeze(model)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    run: Run,
    batch_size: int,
    detector: nn.Module | None,
    estimator: nn.Module | None,
) -> dict[str, float]:
    """LMD (pixels; all, mouth, and for the still reference face), L_rec, and the judges' view of a split."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for items in DataLoader(dataset, batch_size=batch_size):
        batch = to_batch(items, run.device)
        pred = model(batch.mfcc, batch.ref)
        pixels, still = batch.to_pixels(pred), batch.to_pixels(batch.ref.unsqueeze(1).expand_as(pred))
        n = len(batch.words)
        # LMD leaves out frame 0: the reference landmarks are that frame's, so it would be a free zero
        values = {
            "lmd": lmd(pixels[:, 1:], batch.pixels[:, 1:]) * n,
            "lmd_mouth": lmd(pixels[:, 1:], batch.pixels[:, 1:], MOUTH) * n,
            "lmd_still": lmd(still[:, 1:], batch.pixels[:, 1:]) * n,
            "l_rec": landmark_l2(pred, batch.landmarks).item() * n,
        }
        # does the mouth open and close with the truth? (what the real-video judge scores, per clip)
        # (clips whose true mouth moves; a prediction that does not move counts as 0)
        predicted, true = (lip_opening(x.double().cpu().numpy()) for x in (pixels, batch.pixels))
        for a, b in zip(predicted, true):
            if b.std() > 1e-3:
                sums["open_corr"] = sums.get("open_corr", 0.0) + (np.corrcoef(a, b)[0, 1] if a.std() > 0 else 0.0)
                counts["open_corr"] = counts.get("open_corr", 0) + 1
        if detector is not None:
            values["word_accuracy"] = (detector(centre_frames(pred)).argmax(1) == batch.words).sum().item()
        if estimator is not None and n > 1:
            values["mi"] = mine_lower_bound(*estimator(batch.mfcc, pred, shift=1))[0].item() * n
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + n
    model.train(was_training)
    return {k: v / counts[k] for k, v in sums.items()}


def init_audio_encoder(predictor: LandmarkPredictor, path: Path) -> None:
    """Copy a trained audio word probe's E_a (its ``encoder.*`` tensors) into the predictor's audio encoder."""
    tensors, _ = read_safetensors(path)
    encoder = {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
    if not encoder:
        raise SystemExit(f"{path} holds no encoder.* tensors: is it an audio word probe "
                         "(diagnose_word_detector.py --source audio --save)?")
    load_state_dict_checked(predictor.audio_encoder, encoder, path)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out, name = Path(args.out), variant_name(args)
    run = setup(args.seed)
    train_set, evaluation, manifest = load_data(args.cache, args.extra_cache)
    detector = load_judge(args.detector, args.lambda_wd > 0, run)
    estimator = load_judge(args.estimator, args.lambda_tr > 0, run, energy=bool(manifest.get("energy", False)))
    if detector is not None and unwrap(detector).fc2.out_features != len(manifest["vocabulary"]):
        raise SystemExit(f"the word detector {args.detector} knows another vocabulary than the cache {args.cache}")
    predictor = LandmarkPredictor(**SIZES[args.size], bidirectional=args.bidirectional)
    if args.init_audio_encoder:
        init_audio_encoder(predictor, Path(args.init_audio_encoder))
    model = wrap_ddp(predictor, run)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loader = make_loader(train_set, args.batch_size, run, args.seed, num_workers=args.num_workers)
    trainer = Trainer(run, out, args, argv, {"model": model}, {"opt": optimizer}, desc=name)

    def step(items) -> dict[str, torch.Tensor]:
        batch = to_batch(items, run.device)
        mfcc = speaker_augment(batch.mfcc, args.vtlp, bool(manifest.get("energy", False)))
        mfcc = channel_augment(mfcc, args.mfcc_offset)
        pred = model(mfcc, batch.ref)
        losses = {"l_rec": landmark_l2(pred, batch.landmarks)}
        if args.lambda_wd > 0:
            losses["l_wd"] = word_loss(detector, pred, batch.words)
        if args.lambda_tr > 0:
            losses["l_tr"] = temporal_residual_loss(estimator, mfcc, pred,
                                                    batch.landmarks if args.tr_hinge else None)
        if args.lambda_vel > 0:
            losses["l_vel"] = velocity_loss(pred, batch.landmarks)
        weights = {"l_rec": 1.0, "l_wd": args.lambda_wd, "l_tr": args.lambda_tr, "l_vel": args.lambda_vel}
        total = sum(weights[k] * v for k, v in losses.items())
        optimizer_step(optimizer, total)
        return {"loss": total, **losses}

    def validate() -> dict[str, float]:
        return evaluate(model, evaluation["val"], run, args.batch_size, detector, estimator)

    trainer.fit(loader, step, validate if "val" in evaluation else None, lr=lambda s: learning_rate(s, args))

    metrics: dict[str, dict[str, float]] = {}
    if run.is_main:
        metrics = {
            split: evaluate(model, data, run, args.batch_size, detector, estimator)
            for split, data in evaluation.items()
        }
        predictor = unwrap(model)
        config = {
            "stage": "a2l",
            "variant": name,
            "lambda_wd": args.lambda_wd,
            "lambda_tr": args.lambda_tr,
            "features": features(manifest),
            "input": "MFCC windows (T, 28, 12) and the reference landmarks (68, 2), both canonical frame",
            "output": "landmarks (T, 68, 2) in the canonical frame; denormalise with the reference's pose",
            "judges": {
                "word_detector": args.detector if detector else None,
                "mi_estimator": args.estimator if estimator else None,
            },
            "training": trainer.record("train_a2l.py"),
            "data": data_record(manifest),
            "metrics": metrics,
        }
        stem = save_checkpoint(out / name, predictor, config, half=True)
        write_model_card(
            stem,
            f"A2L landmark predictor `{name}` (audio → landmarks)",
            [
                "Zheng et al., ICPR 2020, §III-A: audio encoder (MFCC windows) + landmark encoder (reference face) +",
                f"LSTM decoder, trained with L_rec + {args.lambda_wd} L_wd + {args.lambda_tr} L_tr.",
                "LMD is in pixels of the 256×256 aligned crop, predictions placed in the ground truth's head pose;",
                "`lmd_still` is the LMD of not moving at all (the reference face in every frame), for scale.",
                "Paper (LRW, its own data, not comparable): A2L LMD 3.43 baseline, 3.08 +WD, 3.27 +TR, 3.03 +WD+TR.",
            ],
            config,
            predictor,
        )
        print(f"wrote {stem}.safetensors/.json/.md; {metrics}")
    teardown(run)
    return metrics


if __name__ == "__main__":
    main()
