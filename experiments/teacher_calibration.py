"""How high can the corpus's articulation model (A2L's teacher) follow real mouths? Its ceiling on real video.

Everything the A2L side learns comes from this model: the corpus's landmarks are its output. Driven by each real
clip's *true* phones (the GRID sentence force-aligned to the clip's speech), applied to the clip's first frame with
the average speaker, it is the best any A2L trained on the corpus could do. This script measures it, then tries
to raise it in the two ways a hand-set model allows, scored by the inner-lip opening correlation (lag 0) against
dlib's real points, as the real-video tables are:

1. the speaker style's timing (how far the lips lead the sound, how fast they move): a grid;
2. the jaw opening of each phone class (every vowel, and the consonants by place: bilabial, labiodental, dental,
   alveolar, sibilant, postalveolar, approximant, velar, silence) as multipliers of today's targets, fitted to
   the clips (Powell, a penalty toward 1) **leave one clip out**: fitted on four clips, scored on the fifth, so the
   figure says what a calibration would give on clips it was not fitted to. The jaw trajectory is linear in those
   targets (the dominance blend), so each class's contribution is computed once.

    python experiments/teacher_calibration.py ../shared/real_av/grid
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from talkface.data import articulation
from talkface.data.articulation import ArticulationStyle, apply_mouth, mouth_trajectory, with_rest
from talkface.metrics import lip_sync_scores
from talkface.pipeline import TalkingFacePipeline
from train.real_video import RealClip, load_clip, real_clips

VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
CONSONANT_CLASSES = {"bilabial": "P B M", "labiodental": "F V", "dental": "TH DH", "alveolar": "T D N L",
                     "sibilant": "S Z", "postalveolar": "SH ZH CH JH", "approximant": "R W Y", "velar": "K G NG HH",
                     "silence": "sil"}
CLASS = {v: v for v in VOWELS} | {s: c for c, symbols in CONSONANT_CLASSES.items() for s in symbols.split()}
CLASSES = sorted(set(CLASS.values()))


def phones_at_rest(clip: RealClip) -> list:
    """The clip's phones with the mouth at rest around the speech, as the corpus teaches it (a2l_vs_teacher.py)."""
    spoken = [p for p in clip.phones if p.symbol != "sil"]
    inner = clip.phones[clip.phones.index(spoken[0]) : clip.phones.index(spoken[-1]) + 1]
    return with_rest(inner, -1.0, len(clip.points) / 25 + 1.0)


def _no_jaw(target: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return None if target is None else (0.0, *target[1:])


def jaw_columns(phones: list, n: int) -> np.ndarray:
    """(n, classes): the jaw trajectory each phone class contributes with today's targets (they sum to the whole)."""
    original = dict(articulation.VISEMES)
    columns = []
    try:
        for name in CLASSES:
            for symbol, viseme in original.items():
                if CLASS[symbol] == name:
                    articulation.VISEMES[symbol] = viseme
                    continue
                articulation.VISEMES[symbol] = dataclasses.replace(viseme, target=_no_jaw(viseme.target),
                                                                   target_end=_no_jaw(viseme.target_end))
            columns.append(mouth_trajectory(phones, n).jaw_open.astype(np.float64))
    finally:
        articulation.VISEMES.clear()
        articulation.VISEMES.update(original)
    return np.stack(columns, axis=1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--penalties", default="0,0.01,0.05", help="weights of the pull toward today's targets")
    args = p.parse_args(argv)
    pipe = TalkingFacePipeline.from_pretrained(backend="torch")
    clips = [load_clip(pipe, path) for path in real_clips(args.root)]
    clips = [c for c in clips if c.phones]
    print(f"{len(clips)} clips with phones: {', '.join(c.name for c in clips)}")

    print("\n1. timing (lag-0 correlation, best within ±3 frames), mean over clips")
    for lead in (0.0, 0.02, 0.04, 0.08):
        for speed in (0.8, 1.0, 1.25):
            scores = [lip_sync_scores(apply_mouth(c.photo.landmarks, mouth_trajectory(
                phones_at_rest(c), len(c.points), style=ArticulationStyle(lead=lead, speed=speed))), c.points)
                for c in clips]
            print(f"   lead {lead:.2f} s, speed {speed:.2f}: {np.mean([s['corr'] for s in scores]):.3f} "
                  f"(best lag {np.mean([s['best_corr'] for s in scores]):.3f})")

    base = [mouth_trajectory(phones_at_rest(c), len(c.points)) for c in clips]
    columns = [jaw_columns(phones_at_rest(c), len(c.points)) for c in clips]

    def score(i: int, theta: np.ndarray) -> float:
        jaw = np.clip(columns[i] @ theta, 0.0, 1.4).astype(np.float32)
        teacher = apply_mouth(clips[i].photo.landmarks, dataclasses.replace(base[i], jaw_open=jaw))
        return lip_sync_scores(teacher, clips[i].points)["corr"]

    def fit(train: list[int], penalty: float) -> np.ndarray:
        def loss(th: np.ndarray) -> float:
            return -np.mean([score(i, th) for i in train]) + penalty * np.mean((th - 1) ** 2)

        return minimize(loss, np.ones(len(CLASSES)), method="Powell", bounds=[(0.0, 3.0)] * len(CLASSES),
                        options={"maxiter": 3000, "xtol": 1e-2, "ftol": 1e-4}).x

    ones = np.ones(len(CLASSES))
    today = [score(i, ones) for i in range(len(clips))]
    print(f"\n2. jaw target per phone class ({len(CLASSES)} multipliers)\n   today's targets: "
          f"{' '.join(f'{x:.3f}' for x in today)}, mean {np.mean(today):.3f}")
    for penalty in (float(x) for x in args.penalties.split(",")):
        held_out = [score(i, fit([j for j in range(len(clips)) if j != i], penalty)) for i in range(len(clips))]
        theta = fit(list(range(len(clips))), penalty)
        fitted = np.mean([score(i, theta) for i in range(len(clips))])
        print(f"   penalty {penalty:g}: held out {' '.join(f'{x:.3f}' for x in held_out)}, mean "
              f"{np.mean(held_out):.3f}; fitted to all five (in-sample) {fitted:.3f}")
        print("      multipliers: " + ", ".join(f"{c} {t:.2f}" for c, t in zip(CLASSES, theta, strict=True)))


if __name__ == "__main__":
    main()
