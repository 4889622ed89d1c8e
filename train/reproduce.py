"""Reproduce every shipped checkpoint, and the README's tables, with one command.

    # the shipped checkpoints (hours on a 2-core CPU; resumable: rerun the same command after a stop)
    python train/reproduce.py --preset default --work /work/data --dest assets/checkpoints
    # the A2L side on the corpus's exact landmarks (docs/eval/exact_landmarks/: measured, not shipped)
    python train/reproduce.py --preset exact --work /work/data --dest docs/eval/exact_landmarks/checkpoints
    # minutes: the same chain on the tiny corpus with tiny models, ending in an mp4 from its own checkpoints
    python train/reproduce.py --preset tiny --work /tmp/talkface-tiny

The chain: synthetic corpus (talkface.data.synth; for the default preset also its "extra" takes) ->
preparation cache (talkface.data.prepare, dlib's landmarks and the frames) -> word detector -> MI
estimator -> the four A2L predictors (Baseline, +WD, +TR, +WD+TR, judged by the two frozen networks just
trained) -> L2F -> evaluation tables (train/evaluate.py) -> checkpoints copied to --dest. The "exact"
preset gives the A2L side the exact landmarks of its own audio-only corpus instead (synth preset "a2l",
prepared with --landmarks exact); L2F still learns from the dlib cache.
Every stage is skipped when its output exists and resumed (--resume) when it was interrupted, so a
stopped run continues where it stopped. Each stage runs as its own process, exactly the command a person
would type, printed before it runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# name -> (lambda_wd, lambda_tr) per landmark source, chosen on the val split (train_a2l.py says why):
# dlib's landmarks: 1e-5 of {1e-4, 1e-5, 1e-6}; exact landmarks: λ_tr 1e-6 (docs/eval/exact_landmarks/sweep/val_tr.md)
A2L_VARIANTS = {
    "a2l_baseline": (0.0, 0.0),
    "a2l_wd": (1e-5, 0.0),
    "a2l_tr": (0.0, 1e-5),
    "a2l_wd_tr": (1e-5, 1e-5),
}
EXACT_VARIANTS = {**A2L_VARIANTS, "a2l_tr": (0.0, 1e-6), "a2l_wd_tr": (1e-5, 1e-6)}
# the steps each shipped L2F was trained with: 2,400 steps of plain warping, then 4,000 with the landmark flow
L2F_DEFAULT = {"l2f_base": ["--max-steps", "2400", "--d-channels", "32", "--batch-size", "4"],
               "l2f": ["--max-steps", "4000", "--d-channels", "32", "--batch-size", "4"]}
# Per preset: corpus preset, steps and sizes of each stage.
PRESETS = {
    "tiny": {
        "corpus": "tiny", "a2l": ["--size", "tiny", "--max-steps", "30", "--batch-size", "4", "--val-every", "15"],
        "word_detector": ["--size", "tiny", "--max-steps", "30", "--batch-size", "4", "--val-every", "15"],
        "mi_estimator": ["--size", "tiny", "--max-steps", "30", "--batch-size", "4", "--val-every", "15"],
        "l2f_base": ["--size", "tiny", "--max-steps", "2", "--batch-size", "2", "--val-frames", "4",
                     "--lmd-frames", "0", "--sample-every", "2"],
        "l2f": ["--size", "tiny", "--max-steps", "2", "--batch-size", "2", "--val-frames", "4", "--lmd-frames", "0",
                "--sample-every", "2"],
        "evaluate": ["--l2f-clips", "2"],
    },
    "default": {
        # the steps each shipped checkpoint records (tests/test_reproduce.py checks them against its JSON);
        # the A2L side also learns from a second corpus of 18 more takes per word (synth preset "extra")
        "corpus": "default", "extra_corpus": "extra", "a2l": ["--max-steps", "2000"],
        "word_detector": ["--max-steps", "6000"], "mi_estimator": ["--max-steps", "4000"],
        **L2F_DEFAULT, "evaluate": [],
    },
    "exact": {
        # as docs/eval/exact_landmarks/checkpoints record: the A2L side on the exact landmarks of the audio-only
        # "a2l" corpus (64 takes per word); the word detector trained longer, on bigger batches
        "corpus": "default", "a2l_corpus": "a2l", "variants": EXACT_VARIANTS, "a2l": ["--max-steps", "2000"],
        "word_detector": ["--max-steps", "12000", "--batch-size", "128", "--lr", "3e-3"],
        "mi_estimator": ["--max-steps", "4000"], **L2F_DEFAULT, "evaluate": [],
    },
}
SHIPPED = ("word_detector", "mi_estimator", *A2L_VARIANTS, "l2f")


def run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(cmd), flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(cmd, check=True, cwd=REPO, env=env)


def stage(name: str, out: Path, product: Path, cmd: list[str]) -> None:
    """Run a training stage unless its product exists; resume it if it left a state behind."""
    if product.with_suffix(".md").exists():  # written last: weights and config are complete
        print(f"[{name}] done: {product}")
        return
    resume = ["--resume"] if (out / "last.safetensors").exists() else []
    run([*cmd, "--out", str(out), *resume])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--work", required=True, help="folder for the corpus, the cache and the training runs")
    p.add_argument("--dest", help="copy the final checkpoints here (default: WORK/checkpoints)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    cfg = PRESETS[a.preset]
    work = Path(a.work).resolve()
    corpus, cache, runs = work / "corpus", work / "cache", work / "runs"
    dest = Path(a.dest).resolve() if a.dest else work / "checkpoints"
    py = sys.executable

    # 1. corpus and preparation (each resumes by itself)
    def corpus_and_cache(preset: str, corpus: Path, cache: Path, landmarks: str) -> None:
        if not (corpus / "manifest.json").exists():
            run([py, "-m", "talkface.data.synth", "--preset", preset, "--out", str(corpus),
                 "--workers", str(a.workers)])
        if not (cache / "manifest.json").exists():
            run([py, "-m", "talkface.data.prepare", "--dataset", "lrw", "--root", str(corpus), "--out", str(cache),
                 "--workers", str(a.workers), "--landmarks", landmarks])

    corpus_and_cache(cfg["corpus"], corpus, cache, "dlib")
    common = ["--cache", str(cache)]
    a2l_cache, a2l_landmarks = cache, "dlib"
    if cfg.get("a2l_corpus"):  # the A2L side learns from the exact landmarks of its own audio-only corpus
        a2l_cache, a2l_landmarks = work / "cache_a2l", "exact"
        corpus_and_cache(cfg["a2l_corpus"], work / "corpus_a2l", a2l_cache, a2l_landmarks)
    a2l_extra = []
    if cfg.get("extra_corpus"):  # more training takes per word for the A2L side, in their own root and cache
        corpus_and_cache(cfg["extra_corpus"], work / "corpus_extra", work / "cache_extra", a2l_landmarks)
        a2l_extra = ["--extra-cache", str(work / "cache_extra")]
    a2l_data = ["--cache", str(a2l_cache), *a2l_extra]

    # 2. the judges, then the four A2L predictors they judge
    for judge in ("word_detector", "mi_estimator"):
        stage(judge, runs / judge, runs / judge / judge,
              [py, f"train/train_{judge}.py", *a2l_data, *cfg[judge]])
    judges = ["--detector", str(runs / "word_detector" / "word_detector"),
              "--estimator", str(runs / "mi_estimator" / "mi_estimator")]
    for name, (wd, tr) in cfg.get("variants", A2L_VARIANTS).items():
        stage(name, runs / name, runs / name / name,
              [py, "train/train_a2l.py", *a2l_data, *judges, "--lambda-wd", str(wd), "--lambda-tr", str(tr),
               *cfg["a2l"]])

    # 3. L2F (learns from ground-truth landmarks; needs no A2L)
    # first plain warping from the clip's first frame, then fine-tuned with the landmark flow and any frame of
    # the clip as the identity (train/train_l2f.py --help; the model card says why)
    stage("l2f_base", runs / "l2f_base", runs / "l2f_base" / "l2f",
          [py, "train/train_l2f.py", *common, "--mode", "warp", *cfg["l2f_base"]])
    stage("l2f", runs / "l2f", runs / "l2f" / "l2f",
          [py, "train/train_l2f.py", *common, "--mode", "warp", "--landmark-flow", "--identity-frame", "any",
           "--init", str(runs / "l2f_base" / "l2f"), *cfg["l2f"]])

    # 4. ship: checkpoint + JSON config + model card of each
    dest.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        for ext in (".safetensors", ".json", ".md"):
            shutil.copy2(runs / name / f"{name}{ext}", dest / f"{name}{ext}")
    print(f"\ncheckpoints in {dest}")

    # 5. the tables, from the shipped files
    run([py, "train/evaluate.py", "--cache", str(a2l_cache), "--frames-cache", str(cache), "--checkpoints", str(dest),
         "--out", str(work / "eval"), *cfg["evaluate"]])

    # 6. a real video from these checkpoints, the example photo and speech
    run([py, "-m", "talkface", "--photo", "assets/examples/face.jpg", "--audio", "assets/examples/speech.wav",
         "--checkpoints", str(dest), "--out", str(work / "example.mp4")])


if __name__ == "__main__":
    main()
