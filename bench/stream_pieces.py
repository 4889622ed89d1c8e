"""Gradio's share of the live video: seconds its streaming output takes to make each piece the pipeline hands it
ready for the browser (ffprobe, the sound decoded and encoded to AAC, the segment muxed: four ffmpeg/ffprobe runs),
with the system's ffmpeg and with the bundled static one, put first on PATH by the app's own `bundled_ffmpeg_first`.

    python bench/stream_pieces.py             # the 5.5-s example, whole photo: 7 pieces, 3 rounds
    python bench/stream_pieces.py --rounds 5

The pieces are made once by `TalkingFacePipeline.run(on_chunk=)` (as the app streams them), then handed to
`gr.Video(streaming=True).stream_output` one after the other, as Gradio does for the app, each way in turn.
Needs the system's ffmpeg and ffprobe (as the app's streaming does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.harness import PHOTO, SPEECH, Row, machine_line, report

SECTION = "streamed pieces"


def pieces(work: Path) -> list[Path]:
    """The example's whole-photo video in the pieces the app streams."""
    from talkface.pipeline import TalkingFacePipeline

    made: list[Path] = []
    pipe = TalkingFacePipeline.from_pretrained()
    pipe.run(PHOTO, SPEECH, out=work / "video.mp4",
             on_chunk=lambda path: made.append(Path(shutil.copy(path, work / f"piece{len(made)}.ts"))))
    return made


async def stream(files: list[Path], output_id: str) -> list[float]:
    """Seconds Gradio's streaming video output takes for each piece, in order (one stream)."""
    import gradio as gr

    video = gr.Video(streaming=True)
    seconds = []
    for i, path in enumerate(files):
        start = time.perf_counter()
        await video.stream_output(str(path), output_id, i == 0)
        seconds.append(time.perf_counter() - start)
    await video.flush_stream_output(output_id)
    return seconds


def run(rounds: int = 3, work: Path | None = None) -> list[Row]:
    system = os.environ.get("PATH", "")  # before app.py's import, which puts the bundled ffmpeg first
    found = shutil.which("ffmpeg")
    if not (found and shutil.which("ffprobe")):
        return [Row(SECTION, "Gradio's work a piece", "not measured: no system ffmpeg/ffprobe")]
    import app  # the app's own way of putting the bundled ffmpeg first, measured as it runs

    os.environ["PATH"] = system
    if not app.bundled_ffmpeg_first():
        return [Row(SECTION, "Gradio's work a piece", "not measured: the bundled ffmpeg could not be linked")]
    ways = {f"system ffmpeg ({found})": system, "bundled static ffmpeg (the app's)": os.environ["PATH"]}
    os.environ["PATH"] = system
    work = Path(work or tempfile.mkdtemp(prefix="talkface-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    files = pieces(work)
    times: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for k in range(rounds):
            for name, path in (ways.items() if k % 2 == 0 else reversed(ways.items())):
                os.environ["PATH"] = path
                times[name] += asyncio.run(stream(files, f"bench-{k}-{len(times[name])}"))
    finally:
        os.environ["PATH"] = system
    rows = [Row(SECTION, "pieces", f"{len(files)} (the example, whole photo), each way {rounds} time(s)")]
    for name, seconds in times.items():
        first = seconds[:: len(files)]
        rows.append(Row(SECTION, f"Gradio's work a piece, {name}",
                        f"{min(seconds):.2f}-{max(seconds):.2f} s (median {sorted(seconds)[len(seconds) // 2]:.2f}; "
                        f"the first piece {min(first):.2f}-{max(first):.2f} s)"))
        print(f"  {rows[-1].figure}: {rows[-1].value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    header = machine_line()
    print(header, flush=True)
    report("Streamed pieces", run(args.rounds), header=header)


if __name__ == "__main__":
    main()
