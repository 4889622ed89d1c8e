"""Reproduce every shipped checkpoint, and the README's tables, with one command.

    # the shipped checkpoints (hours on a 2-core CPU; resumable: rerun the same command after a stop)
    python -m train.reproduce --preset default --work /work/data --dest assets/checkpoints
    # the previous release's A2L side, on dlib's landmarks (docs/eval/dlib_landmarks/: measured, not shipped)
    python -m train.reproduce --preset dlib --work /work/data --dest docs/eval/dlib_landmarks/checkpoints
    # minutes: the same chain on the tiny corpus with tiny models, ending in an mp4 from its own checkpoints
    python -m train.reproduce --preset tiny --work /tmp/talkface-tiny

The chain: synthetic corpora (talkface.data.synth: the rendered "default" corpus for L2F, the audio-only "a2l"
corpus for the A2L side) -> preparation caches (talkface.data.prepare: dlib's landmarks and the frames; the
a2l corpus's exact landmarks) -> word detector -> MI estimator -> the four A2L predictors (Baseline, +WD, +TR,
+WD+TR, judged by the two frozen networks just trained) -> L2F -> evaluation tables (train/evaluate.py) ->
checkpoints copied to --dest. Every stage runs its recipe (train/recipes.py). The "dlib" preset is the
previous release: the A2L side on dlib's landmarks of the rendered corpus and its "extra" takes.
The articulation gain of each A2L checkpoint is then calibrated on real clips (not part of this chain, which
has none): python -m train.real_video ../shared/real_av/grid --calibrate --checkpoints DEST
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

from train.recipes import SHIPPED

REPO = Path(__file__).resolve().parent.parent

A2L_NAMES = ("a2l_baseline", "a2l_wd", "a2l_tr", "a2l_wd_tr")
# Per preset: the corpora, the recipe suffix of the A2L side ("" shipped, "_dlib" the previous release) and flags
# added to every run of a stage (the tiny preset's small models and few steps). The recipes themselves, the
# steps and weights of each model, are in train/recipes.py.
TINY = ["--size", "tiny", "--max-steps", "30", "--batch-size", "4", "--val-every", "15"]
TINY_L2F = ["--size", "tiny", "--max-steps", "2", "--batch-size", "2", "--val-frames", "4", "--lmd-frames", "0",
            "--sample-every", "2"]
PRESETS = {
    "tiny": {"corpus": "tiny", "recipes": "", "a2l": TINY, "word_detector": TINY, "mi_estimator": TINY,
             "l2f_base": TINY_L2F, "l2f": TINY_L2F, "evaluate": ["--l2f-clips", "2"]},
    # what ships: the A2L side on the exact landmarks of the audio-only "a2l" corpus, L2F on the rendered corpus
    "default": {"corpus": "default", "a2l_corpus": "a2l", "recipes": "", "evaluate": []},
    # the previous release: the A2L side on dlib's landmarks of the rendered corpus plus its "extra" takes
    "dlib": {"corpus": "default", "extra_corpus": "extra", "recipes": "_dlib", "evaluate": []},
}


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
    suffix = cfg["recipes"]
    for judge in ("word_detector", "mi_estimator"):
        stage(judge, runs / judge, runs / judge / judge,
              [py, "-m", f"train.train_{judge}", *a2l_data, "--recipe", judge + suffix, *cfg.get(judge, [])])
    judges = ["--detector", str(runs / "word_detector" / "word_detector"),
              "--estimator", str(runs / "mi_estimator" / "mi_estimator")]
    for name in A2L_NAMES:
        stage(name, runs / name, runs / name / name,
              [py, "-m", "train.train_a2l", *a2l_data, *judges, "--recipe", name + suffix, *cfg.get("a2l", [])])

    # 3. L2F (learns from ground-truth landmarks; needs no A2L)
    # first plain warping from the clip's first frame, then fine-tuned with the landmark flow and any frame of
    # the clip as the identity (train/train_l2f.py --help; the model card says why)
    stage("l2f_base", runs / "l2f_base", runs / "l2f_base" / "l2f",
          [py, "-m", "train.train_l2f", *common, "--recipe", "l2f_base", *cfg.get("l2f_base", [])])
    stage("l2f", runs / "l2f", runs / "l2f" / "l2f",
          [py, "-m", "train.train_l2f", *common, "--recipe", "l2f", "--init", str(runs / "l2f_base" / "l2f"),
           *cfg.get("l2f", [])])

    # 4. ship: checkpoint + JSON config + model card of each
    dest.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        for ext in (".safetensors", ".json", ".md"):
            shutil.copy2(runs / name / f"{name}{ext}", dest / f"{name}{ext}")
    print(f"\ncheckpoints in {dest}")

    # 5. the tables, from the shipped files
    run([py, "-m", "train.evaluate", "--cache", str(a2l_cache), "--frames-cache", str(cache),
         "--checkpoints", str(dest), "--out", str(work / "eval"), *cfg["evaluate"]])

    # 6. a real video from these checkpoints, the example photo and speech
    run([py, "-m", "talkface", "--photo", "assets/examples/face.jpg", "--audio", "assets/examples/speech.wav",
         "--checkpoints", str(dest), "--out", str(work / "example.mp4")])


if __name__ == "__main__":
    main()
