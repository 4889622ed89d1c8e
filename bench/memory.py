"""Memory: peak resident memory (RSS) of one generation for 5 s, 60 s and (optionally) 10 min of speech.

    python bench/memory.py                 # 5 s and 60 s (a few minutes on a 2-core CPU)
    python bench/memory.py --ten-minutes   # also 10 min of speech (about an hour on a 2-core CPU)
    python bench/memory.py --quick         # 2 s and 8 s: checks that it all runs

Each length runs in a fresh Python process (the pipeline as the CLI runs it: load the checkpoints, then
photo + speech -> mp4), which reports its own peak RSS (VmHWM) and, sampled every 50 ms, that of
itself plus the ffmpeg encoders it started. Chunked generation should keep the peak flat: the target is
60 s within 1.3x of 5 s. The shortest and longest lengths run again with MALLOC_MMAP_THRESHOLD_=131072,
which makes glibc hand large freed blocks back to the system at once instead of keeping them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.harness import (
    PHOTO,
    PeakSampler,
    Row,
    benchmark_checkpoints,
    checkpoint_note,
    fresh_python,
    machine_line,
    peak_rss_mib,
    report,
    rss_mib,
    write_speech,
)

SECTION = "memory"
MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # large blocks by mmap: freed memory goes back at once


def child(seconds: float, checkpoints: Path, work: Path) -> dict:
    """One generation in this process; returns what the parent reports."""
    start = time.perf_counter()
    from talkface.pipeline import TalkingFacePipeline

    pipe = TalkingFacePipeline.from_pretrained(checkpoint_dir=checkpoints, device="cpu")
    loaded = rss_mib()
    wav = write_speech(work / f"speech_{seconds:g}.wav", seconds)
    sampler = PeakSampler(os.getpid())
    sampler.start()
    result = pipe.run(PHOTO, wav, out=work / f"out_{seconds:g}.mp4", max_seconds=None)
    return {"seconds": seconds, "frames": result.num_frames, "rss_loaded_mib": loaded,
            "peak_rss_mib": peak_rss_mib(), "with_ffmpeg_peak_rss_mib": sampler.stop(),
            "wall_s": time.perf_counter() - start}


def measure(seconds: float, checkpoints: Path, work: Path, env: dict[str, str] | None = None) -> dict:
    """`child` in a fresh interpreter, so that earlier runs leave no trace in its peak. OpenMP's threads
    sleep rather than spin while they wait: the same memory, in a third of the time on a busy CPU."""
    args = [__file__, "--child", str(seconds), "--checkpoints", str(checkpoints), "--work", str(work)]
    env = {"OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    return fresh_python(args, env, timeout=max(600.0, 20 * seconds))[0]


def peak_row(r: dict, label: str = "") -> Row:
    row = Row(SECTION, f"peak RSS, {r['seconds']:g} s of speech ({r['frames']} frames){label}",
              f"{r['peak_rss_mib']:.0f} MiB (after loading the models: {r['rss_loaded_mib']:.0f} MiB; "
              f"with the ffmpeg encoders, sampled: {r['with_ffmpeg_peak_rss_mib']:.0f} MiB); "
              f"took {r['wall_s']:.0f} s")
    print(f"  {row.figure}: {row.value}", flush=True)
    return row


def run(quick: bool = False, ten_minutes: bool = False, work: Path | None = None) -> list[Row]:
    work = Path(work or tempfile.mkdtemp(prefix="talkface-bench-"))
    checkpoints = benchmark_checkpoints(work / "checkpoints")
    lengths = [2.0, 8.0] if quick else [5.0, 60.0] + ([600.0] if ten_minutes else [])
    from talkface.pipeline import TalkingFacePipeline

    batch = TalkingFacePipeline.from_pretrained(checkpoint_dir=checkpoints, device="cpu").renderer.batch_size
    rows = [Row(SECTION, "models", f"{checkpoint_note(checkpoints)}; CPU, batch {batch}, OMP_WAIT_POLICY=PASSIVE")]
    results = []
    for seconds in lengths:
        results.append(measure(seconds, checkpoints, work))
        rows.append(peak_row(results[-1]))
    base = results[0]
    for r in results[1:]:
        target = "<= 1.3x" if r["seconds"] <= 60 else "flat"
        rows.append(Row(SECTION, f"peak RSS {r['seconds']:g} s / {base['seconds']:g} s",
                        f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x (growth above the loaded models: "
                        f"{r['peak_rss_mib'] - r['rss_loaded_mib']:.0f} vs "
                        f"{base['peak_rss_mib'] - base['rss_loaded_mib']:.0f} MiB)", target))
    name, value = next(iter(MMAP_THRESHOLD.items()))
    for seconds in (lengths[0], lengths[-1]):
        rows.append(peak_row(measure(seconds, checkpoints, work, MMAP_THRESHOLD), f", {name}={value}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s and 8 s of speech")
    parser.add_argument("--ten-minutes", action="store_true", help="also 10 minutes of speech (slow on CPU)")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.checkpoints, args.work)))
        return
    header = machine_line()
    print(header, flush=True)
    report("Memory", run(args.quick, args.ten_minutes), header=header)


if __name__ == "__main__":
    main()
