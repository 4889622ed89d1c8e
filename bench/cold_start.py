"""Cold start: from starting a process to the first finished video of the bundled example (photo + 5.5 s of
speech), as a person meets it with the command line.

    python bench/cold_start.py

The command `python -m talkface --photo assets/examples/face.jpg --audio assets/examples/speech.wav` runs in
a fresh process, as shipped and with OMP_WAIT_POLICY=PASSIVE; then a fresh process doing the same steps
reports when each was done (imports, checkpoints loaded, face aligned with its detectors loaded, video
written), to show where the start-up time goes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.harness import (
    PHOTO,
    SPEECH,
    Row,
    benchmark_checkpoints,
    checkpoint_note,
    fresh_python,
    machine_line,
    report,
)

SECTION = "cold start"


def child(spawned: float, checkpoints: str, out: str) -> dict:
    """The CLI's steps, timed from when the parent started this process (wall clock, same machine)."""
    marks = {"python + torch imported": time.time() - spawned}  # bench.harness imports torch
    from talkface.pipeline import TalkingFacePipeline

    marks["talkface imported (torchaudio, cv2, librosa...)"] = time.time() - spawned
    pipe = TalkingFacePipeline.from_pretrained(checkpoint_dir=checkpoints)
    marks["checkpoints loaded"] = time.time() - spawned
    aligned = pipe.align(PHOTO)
    marks["face aligned (detectors loaded)"] = time.time() - spawned
    pipe.run(aligned, SPEECH, out=out)
    marks["video written"] = time.time() - spawned
    return marks


def run(quick: bool = False, work: Path | None = None) -> list[Row]:
    """`quick` changes nothing here: the figure is about the bundled example, whose length is fixed."""
    work = Path(work or tempfile.mkdtemp(prefix="talkface-bench-"))
    checkpoints = benchmark_checkpoints(work / "checkpoints")
    rows = [Row(SECTION, "models", checkpoint_note(checkpoints))]
    cli = ["-c", "import sys, json; from talkface.__main__ import main; rc = main(sys.argv[1:]); "
           "print(json.dumps({'rc': rc}))", "--photo", str(PHOTO), "--audio", str(SPEECH),
           "--checkpoint-dir", str(checkpoints)]
    for label, env in (("as shipped", {}), ("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"})):
        out = work / f"cli_{len(rows)}.mp4"
        result, wall = fresh_python([*cli, "--out", str(out)], env)
        if result["rc"] != 0 or not out.is_file():
            raise RuntimeError(f"the command line failed ({result})")
        rows.append(Row(SECTION, f"process start to the example's video, CLI ({label})", f"{wall:.1f} s"))
        print(f"  {rows[-1].figure}: {rows[-1].value}", flush=True)
    marks, _ = fresh_python([__file__, "--child", str(time.time()), "--checkpoints", str(checkpoints),
                             "--out", str(work / "child.mp4")])
    previous = 0.0
    steps = []
    for step, at in marks.items():
        steps.append(f"{step} +{at - previous:.1f} s")
        previous = at
    rows.append(Row(SECTION, "where it goes (fresh process, as shipped)", ", ".join(steps)))
    print(f"  {rows[-1].figure}: {rows[-1].value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="accepted for run_all; the example is fixed")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.checkpoints, args.out)))
        return
    header = machine_line()
    print(header, flush=True)
    report("Cold start", run(args.quick), header=header)


if __name__ == "__main__":
    main()
