"""Does the L2F generator follow the synthetic corpus's exact landmarks as well as dlib's? (test split)

    python experiments/diagnose_l2f_landmarks.py --cache /work/data/cache --checkpoint assets/checkpoints/l2f

The ground-truth rows of train/evaluate.py's L2F table, three ways: target (and identity) landmarks from dlib
on the frames, as L2F learnt them; exact targets (the clip's JSON sidecar, mapped into the aligned crop) with the
identity's dlib landmarks, which is what an A2L side trained on exact landmarks hands L2F in the app; and exact
for both. Each prints dlib's LMD and mouth opening on the generated vs the real frames, and how well the
landmarks asked for agree with dlib on the real frames. A diagnosis: it trains and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from talkface.data.dataset import FrameDataset
from talkface.data.prepare import read_shard_meta
from talkface.face import mouth_opening
from talkface.metrics import frame_landmarks, psnr
from talkface.renderer import L2FRenderer
from train.evaluate import landmark_scores


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", required=True, help="a dlib cache of a synthetic corpus (its sidecars are read)")
    p.add_argument("--checkpoint", default="assets/checkpoints/l2f")
    p.add_argument("--split", default="test")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--frames-per-clip", type=int, default=4)
    a = p.parse_args(argv)
    renderer = L2FRenderer.from_checkpoint(a.checkpoint, device="cpu")
    frames = FrameDataset(a.cache, a.split)
    metas = [read_shard_meta(path) for path in frames.shards.paths]
    videos = [v for m in metas for v in m["videos"]]
    transforms = [np.array(t) for m in metas for t in m["transforms"]]
    picks = np.linspace(0, len(videos) - 1, min(a.clips, len(videos))).round().astype(int)
    steps = np.linspace(1, frames.frames - 1, a.frames_per_clip).round().astype(int)
    ways = ("dlib", "exact targets, dlib identity", "exact both")
    fakes, asked, reals = {w: [] for w in ways}, {w: [] for w in ways}, []
    with torch.inference_mode():
        for clip in picks:
            exact = np.array(json.loads(Path(videos[clip]).with_suffix(".json").read_text())["landmarks"])
            exact = torch.tensor(exact @ transforms[clip][:, :2].T + transforms[clip][:, 2], dtype=torch.float32)
            base = int(clip) * (frames.frames - 1)
            first, targets = frames[base], [frames[base + int(t) - 1] for t in steps]
            reals.append((torch.stack([it["target"] for it in targets]) + 1) / 2)
            detected = torch.stack([it["target_landmarks"] for it in targets])
            for way, identity, target in zip(ways, (first["identity_landmarks"], first["identity_landmarks"], exact[0]),
                                             (detected, exact[steps], exact[steps])):
                fakes[way].append(((renderer(first["identity"], identity, target).clamp(-1, 1) + 1) / 2).cpu())
                asked[way].append(target.numpy())
    real = torch.cat(reals)
    seen = frame_landmarks(real)  # the same real frames for every way: dlib runs on them once
    results = {}
    for way in ways:
        fake = torch.cat(fakes[way])
        generated = frame_landmarks(fake)
        wanted = np.concatenate(asked[way])
        results[way] = {
            **landmark_scores(generated, seen),
            "asked_vs_real_corr": float(np.corrcoef(mouth_opening(wanted), mouth_opening(seen))[0, 1]),
            "opening_asked": float(mouth_opening(wanted).mean()),
            "opening_generated": float(mouth_opening(generated).mean()),
            "opening_real": float(mouth_opening(seen).mean()),
            "psnr": psnr(fake, real, channel_axis=1),
        }
        print(f"{way}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[way].items()), flush=True)
    return results


if __name__ == "__main__":
    main()
