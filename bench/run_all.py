"""Every benchmark, one after the other, and one Markdown table of all their figures.

    python bench/run_all.py                  # the full set (about half an hour on a 2-core CPU)
    python bench/run_all.py --quick          # short inputs everywhere: checks that it all runs (~8 min)
    python bench/run_all.py --ten-minutes    # the memory benchmark also with 10 minutes of speech
    python bench/run_all.py --only speed,memory

Figures from a busy machine are figures of that moment: the machine line above the table says how loaded it
was when the run started, and again when it ended.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench import cold_start, encoders, load, memory, openmp, speed, stream_pieces, training, whole_photo
from bench.harness import Row, default_device, machine_line, markdown_table

BENCHMARKS = ("speed", "openmp", "whole_photo", "encoders", "stream_pieces", "memory", "cold_start", "training",
              "load")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short inputs everywhere")
    parser.add_argument("--ten-minutes", action="store_true", help="memory with 10 minutes of speech too")
    parser.add_argument("--compile", action="store_true", help="speed: also torch.compile (slow to compile)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), metavar="NAMES",
                        help=f"a comma-separated subset of {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    device = default_device()
    header = machine_line(device)
    print(header, flush=True)
    work = Path(tempfile.mkdtemp(prefix="talkface-bench-"))  # one checkpoint set-up shared by all
    runners = {
        "speed": lambda: speed.run(args.quick, device, args.compile, work=work),
        "openmp": lambda: openmp.run(args.quick),
        "whole_photo": lambda: whole_photo.run(args.quick, work=work),
        "encoders": lambda: encoders.run(args.quick, work=work / "encoders"),
        "stream_pieces": lambda: stream_pieces.run(1 if args.quick else 3, work=work / "stream_pieces"),
        "memory": lambda: memory.run(args.quick, args.ten_minutes, work=work),
        "cold_start": lambda: cold_start.run(args.quick, work=work),
        "training": lambda: training.run(args.quick, device),
        "load": lambda: load.run(args.quick, work=work),
    }
    rows: list[Row] = []
    start = time.perf_counter()
    for name in chosen:
        print(f"\n# {name}", flush=True)
        rows += runners[name]()
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python bench/run_all.py", *given])
    print(f"\n## TalkFace benchmarks: `{command}`\n")
    print(header)
    print(machine_line(device).replace("at start", f"at the end, {time.perf_counter() - start:.0f} s later"))
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
