"""How much of the word is in the landmarks? The word detector trained on exact vs detected landmarks (val split).

    python experiments/diagnose_word_detector.py --corpus /work/data/synth --cache /work/data/cache --source exact
    python experiments/diagnose_word_detector.py --corpus /work/data/synth --cache /work/data/cache --source dlib
    python experiments/diagnose_word_detector.py --cache /work/data/cache --source dlib --steps 3000 \
        --smooth 5 --stretch 0.2 --weight-decay 0.05 --label-smoothing 0.1
    # twice the training takes per word: the "extra" corpus (python -m talkface.data.synth --preset extra)
    python experiments/diagnose_word_detector.py --corpus /work/data/synth --cache /work/data/cache --source exact \
        --extra-corpus /work/data/synth_extra --steps 6000
    python experiments/diagnose_word_detector.py --cache /work/data/cache --source dlib \
        --extra-cache /work/data/cache_extra --steps 6000

A synthetic clip's JSON sidecar holds the articulation model's exact landmarks; a dlib cache holds what dlib finds
on the rendered frames (what L2F trains on, and what every stage would train on with LRW). The same
`WordDetector`, trained the same way on each, prints its val top-1 every 500 steps: the gap is what dlib's error
costs. A cache prepared with --landmarks exact gives the trainers (train/train_word_detector.py) the exact
landmarks; the README's "The A2L side on exact landmarks" says what came of it. `--extra-corpus` /
`--extra-cache` add the training clips of more corpora (e.g. the "extra" preset's 18 more takes per word):
how far more data takes it. A diagnosis, not a trainer: no checkpoint, no resume; the shipped detector comes
from train/train_word_detector.py.

`--source predicted --predictor STEM` asks the same of an A2L predictor's output: the detector learns from the
landmarks the predictor makes for the cache's training clips and is scored on those it makes for the val clips
(a probe: how much of the word the predictions carry at all, whichever detector later reads them):

    python experiments/diagnose_word_detector.py --cache /work/data/cache_a2l --source predicted \
        --predictor assets/checkpoints/a2l_baseline --steps 6000

`--source audio` asks it of the sound itself: `AudioWordProbe` (the predictor's audio encoder E_a on each frame's
MFCC window, then the detector's LSTM and pooling) learns the word from the training clips' audio. What it reads off
the val clips bounds what a predictor trained on this corpus can put in its landmarks: lips that carry more of the
word than a word classifier can hear in the same audio would have to come from somewhere else.

    python experiments/diagnose_word_detector.py --cache /work/data/cache_a2l --source audio --steps 6000 --noise 0

`--save PROBE.safetensors` keeps the audio probe's weights: `train_a2l.py --init-audio-encoder` can start a
predictor's E_a from them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from talkface.checkpoints import atomic_save_tensors, load_checkpoint
from talkface.data.dataset import LandmarkDataset, landmark_source, read_manifest
from talkface.face import normalise_landmarks
from talkface.losses import WORD_FRAMES, centre_frames
from talkface.models.audio_word_probe import AudioWordProbe
from talkface.models.word_detector import WordDetector
from train.landmark_data import load_data, smooth, stretch, to_batch


def exact_landmarks(corpus: Path, split: str, vocabulary: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The articulation model's landmarks of every clip of a split (N, T, 68, 2), normalised, and the words."""
    index = {w: i for i, w in enumerate(vocabulary)}
    xs, ys = [], []
    for sidecar in sorted(corpus.glob(f"*/{split}/*.json")):
        clip = json.loads(sidecar.read_text())
        xs.append(np.asarray(clip["landmarks"], np.float32))
        ys.append(index[clip["word"]])
    return normalise_landmarks(torch.from_numpy(np.stack(xs)))[0], torch.tensor(ys)


@torch.no_grad()
def predicted_landmarks(predictor: torch.nn.Module, data: Dataset, batch_size: int = 512
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """What an A2L predictor makes of every clip's audio and reference face (canonical frame), and the words."""
    xs, ys = [], []
    for items in DataLoader(data, batch_size=batch_size):
        batch = to_batch(items, torch.device("cpu"))
        xs.append(predictor(batch.mfcc, batch.ref))
        ys.append(batch.words)
    return torch.cat(xs), torch.cat(ys)


def detected_landmarks(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """dlib's landmarks of every clip of cached clips (`LandmarkDataset`, or the trainers' `load_data` train
    set), normalised as the trainers do, and the words."""
    items = [data[i] for i in range(len(data))]
    x = torch.stack([it["landmarks"] for it in items]).float()
    return normalise_landmarks(x)[0], torch.tensor([int(it["word"]) for it in items])


def audio_windows(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Every clip's MFCC windows (N, T, 28, 12) and the words."""
    items = [data[i] for i in range(len(data))]
    return torch.stack([it["mfcc"] for it in items]).float(), torch.tensor([int(it["word"]) for it in items])


@torch.no_grad()
def batched(model: torch.nn.Module, x: torch.Tensor, size: int = 1024) -> torch.Tensor:
    """`model(x)` a slice at a time, so memory stays bounded however large the scored split is."""
    return torch.cat([model(x[i : i + size]) for i in range(0, len(x), size)])


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cache", required=True, help="prepared cache of the corpus (its vocabulary and dlib landmarks)")
    p.add_argument("--corpus", help="the synthetic corpus (its sidecars' exact landmarks); needed for --source exact")
    p.add_argument("--source", choices=["exact", "dlib", "predicted", "audio"], default="exact",
                   help="exact: the corpus's sidecars; dlib: the cache's landmarks (dlib's, or the exact ones of a "
                        "cache prepared with --landmarks exact); predicted: --predictor's output on the cache's "
                        "clips; audio: the clips' MFCC windows (AudioWordProbe)")
    p.add_argument("--predictor", help="A2L checkpoint stem, for --source predicted")
    p.add_argument("--extra-corpus", action="append", default=[], help="more training clips (exact); repeatable")
    p.add_argument("--extra-cache", action="append", default=[], help="more training clips (dlib); repeatable")
    p.add_argument("--split", default="val", help="the split it is scored on (never tune on test)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--noise", type=float, default=0.005, help="landmark noise std, as the trainer adds")
    p.add_argument("--smooth", type=int, default=0, help="Hann low-pass width in frames (0: none)")
    p.add_argument("--stretch", type=float, default=0.0, help="random time-stretch amount (0: none)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="write the trained model's weights to this .safetensors file (for --source audio: "
                                  "train_a2l.py --init-audio-encoder reads its E_a)")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    manifest = read_manifest(a.cache)
    vocabulary = manifest["vocabulary"]
    if a.source == "exact":
        if not a.corpus:
            p.error("--source exact needs --corpus")
        parts = [exact_landmarks(Path(c), "train", vocabulary) for c in (a.corpus, *a.extra_corpus)]
        x, y = torch.cat([xs for xs, _ in parts]), torch.cat([ys for _, ys in parts])
        xv, yv = exact_landmarks(Path(a.corpus), a.split, vocabulary)
    else:  # the cache's clips exactly as the trainers read them, --extra-cache included
        read = audio_windows if a.source == "audio" else detected_landmarks
        if a.source == "predicted":  # what the predictor makes of those clips
            if not a.predictor:
                p.error("--source predicted needs --predictor")
            read = partial(predicted_landmarks, load_checkpoint(a.predictor)[0].eval())
        train_set, _, _ = load_data(a.cache, a.extra_cache)
        (x, y), (xv, yv) = read(train_set), read(LandmarkDataset(a.cache, a.split))
    # "dlib" reads the cache's landmarks: dlib's, or the exact ones of a cache prepared with --landmarks exact
    label = landmark_source(manifest) if a.source == "dlib" else a.source
    what = "audio" if a.source == "audio" else f"{label} landmarks"
    print(f"{what}: {len(y)} training clips ({len(y) / len(set(y.tolist())):.1f} per word)", flush=True)
    if a.source == "audio":
        if a.smooth or a.stretch:
            p.error("--smooth and --stretch act on landmarks, not on --source audio")
        model = AudioWordProbe(n_words=len(vocabulary))
    else:
        x, xv = smooth(x, a.smooth), smooth(xv, a.smooth)
        model = WordDetector(n_words=len(vocabulary))
    optimiser = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    start, best = time.perf_counter(), 0.0
    for step in range(1, a.steps + 1):
        for group in optimiser.param_groups:  # warm-up, then cosine decay
            group["lr"] = a.lr * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        pick = torch.randint(0, len(x), (a.batch_size,))
        batch = stretch(x[pick], a.stretch) if a.stretch > 0 else x[pick]
        offset = torch.randint(0, batch.shape[1] - WORD_FRAMES + 1, (a.batch_size, 1)) + torch.arange(WORD_FRAMES)
        batch = batch[torch.arange(a.batch_size)[:, None], offset]
        logits = model(batch + a.noise * torch.randn_like(batch))
        loss = F.cross_entropy(logits, y[pick], label_smoothing=a.label_smoothing)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % 500 == 0 or step == a.steps:
            model.eval()
            with torch.no_grad():
                accuracy = (batched(model, centre_frames(xv)).argmax(1) == yv).float().mean().item()
            model.train()
            best = max(best, accuracy)
            print(f"step {step}: train loss {loss.item():.3f}, {a.split} top-1 {accuracy:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    if a.save:
        atomic_save_tensors(model.state_dict(), Path(a.save))
    print(f"{what}, {len(y)} training clips: best {a.split} top-1 {best:.3f} over {len(yv)} clips")
    return best


if __name__ == "__main__":
    main()
