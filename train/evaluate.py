"""Evaluate the shipped checkpoints like the paper's tables; print them and write Markdown + JSON.

    python -m train.evaluate --cache /work/data/cache_a2l --frames-cache /work/data/cache \
        --checkpoints assets/checkpoints --out eval/
    python -m train.evaluate ... --skip-l2f          # A2L-side tables only (seconds)
    python -m train.evaluate --real ../shared/real_av/grid --out eval/real    # the product on real video

`--real DIR` scores the whole product on real clips instead (train/real_video.py): the README's first table.

`--cache` is what the A2L side is scored on (for an A2L side that learnt from the synthetic corpus's exact
landmarks, a cache prepared with --landmarks exact); `--frames-cache` (default: --cache) holds the frames and
dlib landmarks the L2F tables need, and the full-pipeline rows predict from its audio and its frame-0 dlib
landmarks, as the app does from a photo. Both hold the same test clips when made from the same corpus seed:
the "a2l" synth preset's val/test clips are the "default" preset's.

On the cache's test split (voices and faces never seen in training), reported separately for the
synthetic speech and for the real recorded speech part (clips whose sidecar says ``"subset": "real"``):

- Word detector on ground-truth landmarks: top-1 / top-5 (the paper's Table I analogue).
- MI estimator: the MINE (Donsker-Varadhan) estimate on true audio/landmark pairs vs pairs whose
  landmarks run late (a desynchronised "marginal").
- A2L per ablation (Baseline, +WD, +TR, +WD+TR): LMD over all 68 points and the 20 mouth points in
  pixels of the 256x256 crop (the paper's Table IV A2L column); the word detector's accuracy on the
  *predicted* landmarks; and audio-visual sync: the lag (frames) that maximises the mean correlation of
  predicted with ground-truth mouth opening, and that correlation.
- L2F on ground-truth landmarks: PSNR, SSIM and LMD of dlib landmarks on generated vs real frames (the
  paper's Table II columns); and the full pipeline per ablation (A2L -> heatmaps -> L2F), Table IV's L2F
  columns; plus a contact sheet identity | target landmarks | generated | real.

Nothing here tunes anything: it reads the checkpoints and measures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from talkface.checkpoints import ABLATIONS as A2L_LABELS
from talkface.checkpoints import load_checkpoint
from talkface.data.dataset import FrameDataset, LandmarkDataset, landmark_source, read_manifest
from talkface.data.prepare import read_shard_meta
from talkface.face import MOUTH, mouth_opening
from talkface.heatmaps import draw_landmarks
from talkface.metrics import frame_landmarks, lmd, psnr, ssim
from talkface.training import Run, setup
from talkface.video import contact_sheet
from train.landmark_data import to_batch
from train.real_video import add_arguments as add_real_arguments
from train.real_video import evaluate_real, run_options
from train.train_a2l import evaluate as evaluate_a2l
from train.train_mi_estimator import evaluate as evaluate_mi
from train.train_word_detector import evaluate as evaluate_wd

ABLATIONS = {f"a2l_{name}": label for name, label in A2L_LABELS.items()}  # checkpoint stem -> label
MAX_LAG = 6  # frames each way


# helpers


def subsets(dataset: LandmarkDataset) -> dict[str, Subset]:
    """Split a test set by the clips' sidecars: synthetic speech vs real recorded speech.

    Real LRW/GRID clips have no sidecar: they all count as ``all``.
    """
    kinds: list[str] = []
    for path in dataset.shards.paths:
        meta = read_shard_meta(path) or {}
        for video in meta.get("videos", []):
            sidecar = Path(video).with_suffix(".json")
            kinds.append(json.loads(sidecar.read_text()).get("subset", "all") if sidecar.exists() else "all")
    groups: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        groups.setdefault(kind, []).append(i)
    return {kind: Subset(dataset, idx) for kind, idx in sorted(groups.items())}


@torch.no_grad()
def predict_pixels(model: torch.nn.Module, dataset, run: Run, batch_size: int = 64):
    """Predicted and ground-truth landmarks of every clip, in crop pixels (ground truth's head pose)."""
    preds, truths = [], []
    for items in DataLoader(dataset, batch_size=batch_size):
        batch = to_batch(items, run.device)
        preds.append(batch.to_pixels(model(batch.mfcc, batch.ref)).cpu())
        truths.append(batch.pixels.cpu())
    return torch.cat(preds), torch.cat(truths)


def landmark_scores(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """dlib's landmarks on generated vs real frames: LMD (all, mouth) and whether the mouths open together."""
    return {
        "lmd": lmd(generated, real),
        "lmd_mouth": lmd(generated, real, points=MOUTH),
        # does the generated mouth open and close with the real one? (dlib's inner-lip gap on both)
        "mouth_corr": float(np.corrcoef(mouth_opening(generated), mouth_opening(real))[0, 1]),
    }


def sync(pred: torch.Tensor, true: torch.Tensor, max_lag: int = MAX_LAG) -> dict[str, float]:
    """The lag (frames; positive = prediction late) maximising the mean per-clip correlation of mouth opening."""
    a = mouth_opening(pred.numpy())  # (N, T)
    b = mouth_opening(true.numpy())
    best = (0, -2.0)
    for lag in range(-max_lag, max_lag + 1):
        x = a[:, max(lag, 0) : a.shape[1] + min(lag, 0)]
        y = b[:, max(-lag, 0) : b.shape[1] + min(-lag, 0)]
        x = x - x.mean(1, keepdims=True)
        y = y - y.mean(1, keepdims=True)
        denom = np.sqrt((x**2).sum(1) * (y**2).sum(1))
        ok = denom > 1e-9
        corr = float(((x * y).sum(1)[ok] / denom[ok]).mean()) if ok.any() else 0.0
        if corr > best[1]:
            best = (lag, corr)
    return {"sync_lag": float(best[0]), "sync_corr": best[1]}


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> H x W x 3 uint8, for dlib and for the contact sheet."""
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Markdown table; columns are (key, header, format)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [("–" if r.get(k) is None else format(r[k], f) if f else str(r[k])) for k, _, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# the tables


def evaluate_a2l_side(cache: str, ckpt: Path, split: str, run: Run) -> dict:
    test = LandmarkDataset(cache, split, in_memory=True)
    parts = subsets(test)
    detector = estimator = None
    out: dict = {"clips": {k: len(v) for k, v in parts.items()}, "word_detector": {}, "mi_estimator": {}, "a2l": {}}
    if ckpt.joinpath("word_detector.json").exists():
        detector, _ = load_checkpoint(ckpt / "word_detector", device=run.device)
        out["word_detector"] = {k: evaluate_wd(detector, d, run, 64) for k, d in parts.items()}
    if ckpt.joinpath("mi_estimator.json").exists():
        estimator, _ = load_checkpoint(ckpt / "mi_estimator", device=run.device)
        out["mi_estimator"] = {k: evaluate_mi(estimator, d, run, 64) for k, d in parts.items()}
    for name, label in ABLATIONS.items():
        if not ckpt.joinpath(f"{name}.json").exists():
            continue
        model, _ = load_checkpoint(ckpt / name, device=run.device)
        out["a2l"][name] = {}
        for kind, d in parts.items():
            metrics = evaluate_a2l(model, d, run, 64, detector, estimator)
            metrics.update(sync(*predict_pixels(model, d, run)))
            out["a2l"][name][kind] = {"label": label, **metrics}
    return out


@torch.inference_mode()
def evaluate_l2f_side(cache: str, ckpt: Path, split: str, run: Run, clips: int, frames_per_clip: int,
                      sheet: Path) -> dict:
    """PSNR / SSIM / dlib LMD of generated vs real frames: from ground-truth landmarks, then per ablation."""
    from talkface.renderer import L2FRenderer

    renderer = L2FRenderer.from_checkpoint(ckpt / "l2f", device=run.device)
    frames = FrameDataset(cache, split)
    landmarks = LandmarkDataset(cache, split, in_memory=True)
    picks = np.linspace(0, len(landmarks) - 1, min(clips, len(landmarks))).round().astype(int)
    steps = np.linspace(1, frames.frames - 1, frames_per_clip).round().astype(int)
    # "still photo": the identity frame itself as every output, the floor any generator must beat
    sources = {"still photo": "still", "ground truth": None}
    for name, label in ABLATIONS.items():
        if ckpt.joinpath(f"{name}.json").exists():
            model, _ = load_checkpoint(ckpt / name, device=run.device)
            sources[label] = predict_pixels(model, Subset(landmarks, picks.tolist()), run)[0]
    results, rows, labels = {}, [], []
    for label, predicted in sources.items():
        fakes, reals = [], []
        for k, clip in enumerate(picks):
            first = frames[int(clip) * (frames.frames - 1)]  # the clip's identity frame is shared by its items
            targets = [frames[int(clip) * (frames.frames - 1) + int(t) - 1] for t in steps]
            if isinstance(predicted, str):  # the still photo
                lms = first["identity_landmarks"].expand(len(targets), -1, -1)
                fake = first["identity"].expand(len(targets), -1, -1, -1)
            else:
                lms = (torch.stack([it["target_landmarks"] for it in targets]) if predicted is None
                       else predicted[k, steps])
                fake = renderer(first["identity"], first["identity_landmarks"], lms)
            real = torch.stack([it["target"] for it in targets])
            fakes.append(((fake.clamp(-1, 1) + 1) / 2).cpu())
            reals.append(((real + 1) / 2).cpu())
            if k < 3 and label in ("ground truth", "+WD+TR"):
                blank = np.zeros((256, 256, 3), np.uint8)
                rows += [[_to_uint8((first["identity"] + 1) / 2)] + [draw_landmarks(blank, lm) for lm in lms[:4]],
                         [_to_uint8(x) for x in fakes[-1][:4]], [_to_uint8(x) for x in reals[-1][:4]]]
                labels += [f"{label}: landmarks", "generated", "real"]
        fake, real = torch.cat(fakes), torch.cat(reals)
        pred_lm, true_lm = frame_landmarks(fake), frame_landmarks(real)
        results[label] = {
            "psnr": psnr(fake, real, channel_axis=1),
            "ssim": ssim(fake, real, channel_axis=1),
            **landmark_scores(pred_lm, true_lm),
            "frames": len(fake),
        }
    if rows:
        from PIL import Image

        Image.fromarray(contact_sheet(rows, labels, scale=0.5)).save(sheet)
    return results


def render_markdown(res: dict) -> str:
    a2l, md = res["a2l_side"], []
    clips = ", ".join(f"{k}: {v} clips" for k, v in a2l["clips"].items())
    md.append(f"{res['split'].capitalize()} split of `{res['cache']}` ({clips}; "
              f"{res.get('landmarks', 'dlib')} landmarks); checkpoints `{res['checkpoints']}`; {res['date']}.\n")
    if a2l["word_detector"]:
        md.append("**Word detector on ground-truth landmarks**\n")
        md.append(table([{"subset": k, **v} for k, v in a2l["word_detector"].items()],
                        [("subset", "subset", ""), ("accuracy", "top-1", ".3f"), ("top5", "top-5", ".3f")]))
    if a2l["mi_estimator"]:
        md.append("\n**MI estimator** (nats; true pairs vs landmarks running late)\n")
        md.append(table([{"subset": k, **v} for k, v in a2l["mi_estimator"].items()],
                        [("subset", "subset", ""), ("mi", "MI true", ".3f"), ("mi_late", "MI late", ".3f")]))
    if a2l["a2l"]:
        for kind in a2l["clips"]:
            rows = [m[kind] for m in a2l["a2l"].values() if kind in m]
            md.append(f"\n**A2L, {kind} speech** (LMD in pixels of the 256×256 crop; word accuracy of the "
                      "detector on predicted landmarks; sync = best lag in frames and its correlation)\n")
            md.append(table(rows, [("label", "A2L", ""), ("lmd", "LMD", ".3f"), ("lmd_mouth", "LMD mouth", ".3f"),
                                   ("lmd_still", "LMD still face", ".3f"), ("word_accuracy", "word acc.", ".3f"),
                                   ("mi", "MI", ".3f"), ("sync_lag", "lag", ".0f"), ("sync_corr", "corr.", ".3f")]))
    if res.get("l2f_side"):
        md.append("\n**L2F** (unseen faces; the still photo as the output, then generated from ground-truth "
                  "landmarks, then the full pipeline per ablation; mouth corr. = correlation of dlib's inner-lip gap "
                  "on generated vs real frames)\n")
        md.append(table([{"source": k, **v} for k, v in res["l2f_side"].items()],
                        [("source", "landmarks", ""), ("lmd", "LMD", ".3f"), ("lmd_mouth", "LMD mouth", ".3f"),
                         ("mouth_corr", "mouth corr.", ".3f"), ("psnr", "PSNR", ".2f"), ("ssim", "SSIM", ".3f"),
                         ("frames", "frames", "")]))
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cache", help="scores the A2L side (word detector, MI estimator, A2L)")
    p.add_argument("--real", help="instead: real clips (GRID .mpg, .mp4) with their speech, scored as in the app")
    p.add_argument("--frames-cache", help="scores L2F and the whole pipeline; needs frames (default: --cache)")
    p.add_argument("--checkpoints", default="assets/checkpoints")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default="eval")
    p.add_argument("--skip-l2f", action="store_true")
    p.add_argument("--l2f-clips", type=int, default=60, help="test clips for the L2F tables")
    p.add_argument("--l2f-frames", type=int, default=4, help="frames per clip for the L2F tables")
    add_real_arguments(p)
    a = p.parse_args(argv)
    if a.real:
        command = "python -m train.evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
        return evaluate_real(a.real, a.checkpoints, a.out, a.ablations.split(","), command, **run_options(a))
    if not a.cache:
        p.error("--cache (or --real) is required")
    run = setup(0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(a.checkpoints)
    started = time.time()
    frames_cache = a.frames_cache or a.cache
    res = {"cache": a.cache, "frames_cache": frames_cache, "checkpoints": str(ckpt), "split": a.split,
           "date": time.strftime("%Y-%m-%d")}
    res["landmarks"] = landmark_source(read_manifest(a.cache))
    res["a2l_side"] = evaluate_a2l_side(a.cache, ckpt, a.split, run)
    if not a.skip_l2f and ckpt.joinpath("l2f.json").exists():
        res["l2f_side"] = evaluate_l2f_side(frames_cache, ckpt, a.split, run, a.l2f_clips, a.l2f_frames,
                                            out / "contact_sheet.png")
    res["seconds"] = round(time.time() - started, 1)
    md = render_markdown(res)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(md)
    return res


if __name__ == "__main__":
    main()
