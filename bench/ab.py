"""Before/after: this checkout against another (a `git worktree` of an older commit), alternating fresh processes.

    git worktree add /tmp/old_wt HEAD~1
    python bench/ab.py --repo /tmp/old_wt              # 3 rounds: old, new; new, old; old, new
    python bench/ab.py --repo /tmp/old_wt --rounds 5 --photo big.jpg --audio long.wav
    python bench/ab.py --repo /tmp/old_wt --backend int8   # this checkout's int8 path against PyTorch's float32

A CPU shared with other machines can swing by a third from one minute to the next, more than most changes
measured here: so each round runs both checkouts, one after the other (in turns: before first, then after
first), each in a fresh process, and every round is printed, not just a best. Each process loads the pipeline
(PyTorch's float32 path for both unless `--backend` / `--before-backend` say otherwise: a backend chosen by timing
would differ from one run to the next), makes the video `--repeats`
times as a face crop with a still head and as the whole photo with the living head (the CLI's default), and
times L2F's generator at batch 4 as the renderer runs it: the best of each, as RTF (wall time / speech
duration) and frames/s. Environment variables pass through (e.g. `ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2` for both), except OpenMP's: each checkout sets its own defaults, as when it ships.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KINDS = {"crop": (False, True), "whole": (True, False)}  # name: (full_frame, still)


def child(tree: Path, photo: Path, audio: Path, repeats: int, backend: str) -> None:
    """One checkout's figures, as a JSON line: run with that checkout first on the path."""
    sys.path.insert(0, str(tree))
    import talkface  # noqa: F401, I001 - before torch: OpenMP's spin-wait as the CLI and the app have it
    import torch

    from talkface import backends
    from talkface.pipeline import TalkingFacePipeline

    pipe = TalkingFacePipeline.from_pretrained(backend=backend)
    renderer = pipe.renderer
    prepared, heatmaps, landmarks = backends.example(renderer, batch=4)
    best = dict.fromkeys(KINDS, float("inf"))
    generator = []
    with tempfile.TemporaryDirectory() as work:
        for _ in range(repeats):
            for kind, (full_frame, still) in KINDS.items():
                start = time.perf_counter()
                result = pipe.run(photo, audio, out=Path(work) / f"{kind}.mp4", full_frame=full_frame, still=still,
                                  max_seconds=None)
                best[kind] = min(best[kind], time.perf_counter() - start)
            with torch.inference_mode():  # warm-up, then the best of 3 (as the backends are timed)
                generator.append(4 / backends._seconds(lambda: renderer.generate(prepared, heatmaps, landmarks)))
    print(json.dumps({**{f"{kind}_rtf": round(best[kind] / result.duration, 3) for kind in KINDS},
                      "generator_fps": round(max(generator), 1)}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="the other checkout (the 'before')")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="videos of each kind per process (best kept)")
    parser.add_argument("--photo", type=Path, default=REPO / "assets" / "examples" / "face.jpg")
    parser.add_argument("--audio", type=Path, default=REPO / "assets" / "examples" / "speech.wav")
    parser.add_argument("--backend", default="torch", help="L2F's backend in this checkout (default torch)")
    parser.add_argument("--before-backend", default="torch", help="L2F's backend in the other (default torch)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.photo.resolve(), args.audio.resolve(), args.repeats, args.backend)
        return
    sys.path.insert(0, str(REPO))
    from bench.harness import fresh_python, machine_line

    print(machine_line(), flush=True)
    trees = {"before": args.repo.resolve(), "after": REPO}
    backends = {"before": args.before_backend, "after": args.backend}
    figures: dict[str, list[dict]] = {name: [] for name in trees}
    for k in range(args.rounds):
        for name, tree in list(trees.items())[:: 1 if k % 2 == 0 else -1]:  # before, after; then after, before
            found, _ = fresh_python([str(Path(__file__).resolve()), "--child", str(tree), "--photo",
                                     str(args.photo.resolve()), "--audio", str(args.audio.resolve()),
                                     "--repeats", str(args.repeats), "--repo", str(args.repo),
                                     "--backend", backends[name]], timeout=1800)
            figures[name].append(found)
            print(f"  round {k + 1}, {name} ({tree}, {backends[name]}): {found}", flush=True)
    for key in ("crop_rtf", "whole_rtf", "generator_fps"):
        print(f"{key}: " + "; ".join(f"{name} {' / '.join(str(f[key]) for f in runs)}"
                                     for name, runs in figures.items()))


if __name__ == "__main__":
    main()
