"""One recipe per model, in plain values (as nanoGPT's config/): how each shipped checkpoint was trained.

A trainer's defaults *are* its shipped recipe (train_a2l.py: `a2l_baseline`, train_word_detector.py:
`word_detector`, ...); `--recipe NAME` picks another; flags given on the command line still win. reproduce.py
runs the same recipes, and tests/test_reproduce.py checks every shipped checkpoint's recorded settings against
its recipe. Data (`--cache`, `--extra-cache`) and run folders are not part of a recipe: they are where, not how.

The shipped A2L side learns from the **exact** landmarks of the audio-only "a2l" corpus (`python -m
talkface.data.synth --preset a2l`, prepared with `--landmarks exact`); L2F from dlib's landmarks of the rendered
"default" corpus. The `*_dlib` recipes are the previous release's A2L side (dlib's landmarks of the rendered
corpus plus its "extra" takes): on real video its mouths were further from real ones (docs/real_video.md).
"""

from __future__ import annotations

import argparse
from typing import Any

A2L = {"max_steps": 2000, "batch_size": 64, "lr": 1e-3}
L2F = {"mode": "warp", "d_channels": 32, "batch_size": 4}

RECIPES: dict[str, dict[str, Any]] = {
    # the shipped A2L side (exact landmarks); λ_tr 1e-6: on exact landmarks 1e-5 fooled the MI estimator
    "word_detector": {"max_steps": 12000, "batch_size": 128, "lr": 3e-3},
    "mi_estimator": {"max_steps": 4000, "batch_size": 64, "lr": 1e-3},
    "a2l_baseline": {**A2L, "lambda_wd": 0.0, "lambda_tr": 0.0},
    "a2l_wd": {**A2L, "lambda_wd": 1e-5, "lambda_tr": 0.0},
    "a2l_tr": {**A2L, "lambda_wd": 0.0, "lambda_tr": 1e-6},
    "a2l_wd_tr": {**A2L, "lambda_wd": 1e-5, "lambda_tr": 1e-6},
    # L2F: plain warping first, then fine-tuned (--init the first) with the landmark flow, any frame as identity
    "l2f_base": {**L2F, "max_steps": 2400},
    "l2f": {**L2F, "max_steps": 4000, "landmark_flow": True, "identity_frame": "any"},
    # the previous release's A2L side (dlib landmarks)
    "word_detector_dlib": {"max_steps": 6000, "batch_size": 64, "lr": 2e-3},
    "mi_estimator_dlib": {"max_steps": 4000, "batch_size": 64, "lr": 1e-3},
    "a2l_baseline_dlib": {**A2L, "lambda_wd": 0.0, "lambda_tr": 0.0},
    "a2l_wd_dlib": {**A2L, "lambda_wd": 1e-5, "lambda_tr": 0.0},
    "a2l_tr_dlib": {**A2L, "lambda_wd": 0.0, "lambda_tr": 1e-5},
    "a2l_wd_tr_dlib": {**A2L, "lambda_wd": 1e-5, "lambda_tr": 1e-5},
}
SHIPPED = ("word_detector", "mi_estimator", "a2l_baseline", "a2l_wd", "a2l_tr", "a2l_wd_tr", "l2f")


def flags(name: str) -> list[str]:
    """A recipe as command-line flags (booleans as bare switches), for reproduce.py's printed commands."""
    out = []
    for key, value in RECIPES[name].items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not False:
            out += [flag, str(value)]
    return out


def apply_recipe(parser: argparse.ArgumentParser, default: str, argv: list[str] | None,
                 family: str) -> argparse.Namespace:
    """Parse `argv` with `parser`, whose defaults are first set to recipe `--recipe` (default `default`).
    `family` is the prefix of the recipes this trainer can run (e.g. "a2l_")."""
    names = sorted(n for n in RECIPES if n.startswith(family))
    parser.add_argument("--recipe", choices=names, default=default,
                        help=f"the settings to start from (train/recipes.py; default {default}, as shipped)")
    known, _ = parser.parse_known_args(argv)
    parser.set_defaults(**RECIPES[known.recipe])
    return parser.parse_args(argv)
