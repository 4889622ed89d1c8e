"""L2F's generator per batch size, 1 to 8 frames, on the backend the pipeline chose here (as shipped: "auto").

    python bench/batch_sizes.py             # median of 4 rounds, each size 3 calls after a warm-up
    python bench/batch_sizes.py --backend torch

Why it matters: a video's frames go through L2F a batch at a time, and its two threads share a batch's frames, so
a batch of one frame (or any odd one) leaves a thread waiting. The pipeline never ends a video on a batch of one
(``pipeline._batches``); this shows what that saves on this machine. Rounds alternate the sizes, so a swing of the
machine's speed (a third, minute to minute, on a shared 2-core VM) falls on every size alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.harness import Row, machine_line, report  # noqa: I001 - imports talkface before torch
import torch

from talkface import backends
from talkface.pipeline import TalkingFacePipeline

SECTION = "batch sizes"


def run(backend: str = "auto", rounds: int = 4, sizes: range = range(1, 9)) -> list[Row]:
    pipe = TalkingFacePipeline.from_pretrained(device="cpu", backend=backend)
    renderer = pipe.renderer
    inputs = {b: backends.example(renderer, batch=b) for b in sizes}
    seconds: dict[int, list[float]] = {b: [] for b in sizes}
    with torch.inference_mode():
        for _ in range(rounds):
            for b in sizes:
                renderer.generate(*inputs[b])  # warm-up: a new batch size makes oneDNN build its kernels
                start = time.perf_counter()
                for _ in range(3):
                    renderer.generate(*inputs[b])
                seconds[b].append((time.perf_counter() - start) / 3)
    path = f"{renderer.backend}, {torch.get_num_threads()} threads, the batch it chose {renderer.batch_size}"
    rows = [Row(SECTION, "L2F path", path)]
    for b in sizes:
        median = statistics.median(seconds[b])
        rows.append(Row(SECTION, f"batch of {b}", f"{1000 * median:.1f} ms, {1000 * median / b:.1f} ms a frame"))
        print(f"  batch of {b}: {rows[-1].value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="auto", help="L2F's backend (default: auto, as shipped)")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    header = machine_line()
    report("L2F's generator per batch size", run(args.backend, args.rounds), header=header)


if __name__ == "__main__":
    main()
