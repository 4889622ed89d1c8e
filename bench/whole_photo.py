"""Whole photo: what pasting the face back and encoding the photo's own size cost, before/after in one run.

    python bench/whole_photo.py            # 5.5 s of speech; memory at 5 s and 30 s (a few minutes on 2 cores)
    python bench/whole_photo.py --quick    # 2 s of speech, memory at 2 s and 6 s: checks that it all runs

For each photo, the same request twice in one process: the 256 x 256 face crop with a still head (what the
pipeline wrote before the whole-photo output) and the default (the whole photo, long side capped at 1280, blinks
and head motion). The difference is the cost of paste-back + the bigger encode (+ one rest frame); the target is
<= 15% of the crop run's time at a 1280-pixel long side. Peak memory (RSS, fresh process each) at two speech
lengths says whether it stays flat in the audio's length.

Photos: the bundled portrait (512 x 512) and a 1200 x 1500 portrait made from it (the photo enlarged, padded
with its own edge: a face ~560 pixels wide at 1280, like a phone portrait).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.harness import (
    PHOTO,
    Row,
    benchmark_checkpoints,
    fresh_python,
    machine_line,
    peak_rss_mib,
    report,
    write_speech,
)

SECTION = "whole photo"


def portrait(work: Path) -> Path:
    """The bundled photo as a 1200 x 1500 portrait."""
    photo = cv2.imread(str(PHOTO))
    big = cv2.resize(photo, (1200, 1200), interpolation=cv2.INTER_CUBIC)
    out = cv2.copyMakeBorder(big, 150, 150, 0, 0, cv2.BORDER_REPLICATE)
    path = work / "portrait_1200x1500.jpg"
    cv2.imwrite(str(path), out, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def timed_runs(pipe, photo: Path, wav: Path, work: Path, repeats: int) -> dict:
    """Best-of-`repeats` wall time of the crop run and of the whole-photo run, and the latter's stage times."""
    best: dict[str, float] = {"crop": np.inf, "whole": np.inf}
    stages: dict[str, float] = {}
    size = None
    for _ in range(repeats):
        for kind in ("crop", "whole"):
            start = time.perf_counter()
            result = pipe.run(photo, wav, out=work / f"{kind}.mp4", full_frame=kind == "whole",
                              still=kind == "crop", max_seconds=None)
            took = time.perf_counter() - start
            if took < best[kind]:
                best[kind] = took
                if kind == "whole":
                    stages, size = dict(result.seconds), result.video_size
    return {"crop_s": best["crop"], "whole_s": best["whole"], "stages": stages, "size": size,
            "frames": result.num_frames}


def child(photo: Path, seconds: float, checkpoints: Path, work: Path) -> dict:
    """One whole-photo generation in this process: its peak RSS."""
    from talkface.pipeline import TalkingFacePipeline

    pipe = TalkingFacePipeline.from_pretrained(checkpoint_dir=checkpoints, device="cpu")
    wav = write_speech(work / f"speech_{seconds:g}.wav", seconds)
    result = pipe.run(photo, wav, out=work / f"mem_{seconds:g}.mp4", max_seconds=None)
    return {"seconds": seconds, "frames": result.num_frames, "peak_rss_mib": peak_rss_mib()}


def run(quick: bool = False, work: Path | None = None) -> list[Row]:
    from talkface.pipeline import TalkingFacePipeline

    work = Path(work or tempfile.mkdtemp(prefix="talkface-bench-"))
    checkpoints = benchmark_checkpoints(work)
    pipe = TalkingFacePipeline.from_pretrained(checkpoint_dir=checkpoints, device="cpu")
    wav = write_speech(work / "speech.wav", 2.0 if quick else None)
    rows = []
    big = portrait(work)
    for name, photo in (("bundled 512 x 512", PHOTO), ("portrait 1200 x 1500", big)):
        pipe.run(photo, wav, out=work / "warm.mp4", max_seconds=None)  # warm up
        r = timed_runs(pipe, photo, wav, work, repeats=1 if quick else 4)
        extra = r["whole_s"] - r["crop_s"]
        s = r["stages"]
        rows.append(Row(SECTION, f"{name}: face crop 256, still -> whole photo {r['size'][0]}x{r['size'][1]}, "
                                 f"living head ({r['frames']} frames)",
                        f"{r['crop_s']:.2f} s -> {r['whole_s']:.2f} s: +{100 * extra / r['crop_s']:.0f}% "
                        f"(paste-back {s.get('paste', 0):.2f} s, encode {s.get('video', 0):.2f} s, "
                        f"L2F {s.get('l2f', 0):.2f} s)", "<= +15% at 1280"))
        print(f"  {rows[-1].figure}: {rows[-1].value}", flush=True)
    for seconds in ((2.0, 6.0) if quick else (5.0, 30.0)):
        args = [__file__, "--child", str(seconds), "--photo", str(big), "--checkpoints", str(checkpoints),
                "--work", str(work)]
        m = fresh_python(args, {"OMP_WAIT_POLICY": "PASSIVE"}, timeout=max(600.0, 20 * seconds))[0]
        rows.append(Row(SECTION, f"peak RSS, whole photo 1024x1280, {seconds:g} s of speech ({m['frames']} frames)",
                        f"{m['peak_rss_mib']:.0f} MiB", "flat in the audio's length"))
        print(f"  {rows[-1].figure}: {rows[-1].value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s of speech")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--photo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.photo, args.child, args.checkpoints, args.work)))
        return
    header = machine_line()
    print(header, flush=True)
    report("Whole photo", run(args.quick), header=header)


if __name__ == "__main__":
    main()
