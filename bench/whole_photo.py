"""Whole photo: what pasting the face back and encoding the photo's own size cost, before/after in one run.

    python bench/whole_photo.py            # 5.5 s of speech; memory at 5 s and 30 s (a few minutes on 2 cores)
    python bench/whole_photo.py --quick    # 2 s of speech, memory at 2 s and 6 s: checks that it all runs

For each photo, the same request three times in one process, alternating: the 256 x 256 face crop with a still
head (what the pipeline wrote before the whole-photo output), the whole photo (long side capped at 1280) with a
still head, and the default (the whole photo with blinks and head motion). Crop -> whole still is the cost of
paste-back + the bigger encode (+ one rest frame), whose target is <= 15% of the crop run's time at a 1280-pixel
long side; whole still -> whole is the living head's own. Peak memory (RSS, fresh process each) at two speech
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


KINDS = {  # name: (full_frame, still)
    "crop": (False, True),  # the 256² face crop, still head: the output before the whole-photo release
    "whole_still": (True, True),  # the whole photo, still head: the crop plus paste-back and the bigger encode
    "whole": (True, False),  # the default: the whole photo with blinks and head motion
}


def timed_runs(pipe, photo: Path, wav: Path, work: Path, repeats: int) -> dict:
    """Best-of-`repeats` wall time of each kind of run (alternating, so that a slow spell of the machine touches
    all of them), and the stage times of each best run."""
    best = {kind: np.inf for kind in KINDS}
    stages: dict[str, dict[str, float]] = {}
    size = None
    for _ in range(repeats):
        for kind, (full_frame, still) in KINDS.items():
            start = time.perf_counter()
            result = pipe.run(photo, wav, out=work / f"{kind}.mp4", full_frame=full_frame, still=still,
                              max_seconds=None)
            took = time.perf_counter() - start
            if took < best[kind]:
                best[kind], stages[kind] = took, dict(result.seconds)
                if full_frame:
                    size = result.video_size
    return {**{f"{kind}_s": best[kind] for kind in KINDS}, "stages": stages, "size": size,
            "frames": result.num_frames}


def child(photo: Path, seconds: float, checkpoints: Path, work: Path) -> dict:
    """One whole-photo generation in this process: its peak RSS."""
    from talkface.pipeline import TalkingFacePipeline

    pipe = TalkingFacePipeline.from_pretrained(checkpoint_dir=checkpoints, device="cpu")
    wav = write_speech(work / f"speech_{seconds:g}.wav", seconds)
    result = pipe.run(photo, wav, out=work / f"mem_{seconds:g}.mp4", max_seconds=None)
    return {"seconds": seconds, "frames": result.num_frames, "peak_rss_mib": peak_rss_mib()}


def run(quick: bool = False, work: Path | None = None, skip_memory: bool = False) -> list[Row]:
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
        crop, size = r["crop_s"], f"{r['size'][0]}x{r['size'][1]}"
        for kind, label, target in (("whole_still", "still", "<= +15% at 1280"), ("whole", "living head", "")):
            s = r["stages"][kind]
            rows.append(Row(SECTION, f"{name}: face crop 256, still -> whole photo {size}, {label} "
                                     f"({r['frames']} frames)",
                            f"{crop:.2f} s -> {r[kind + '_s']:.2f} s: {100 * (r[kind + '_s'] / crop - 1):+.0f}% "
                            f"(paste-back {s.get('paste', 0):.2f} s, encode {s.get('video', 0):.2f} s, "
                            f"L2F {s.get('l2f', 0):.2f} s against {r['stages']['crop'].get('l2f', 0):.2f} s)",
                            target))
            print(f"  {rows[-1].figure}: {rows[-1].value}", flush=True)
    for seconds in () if skip_memory else ((2.0, 6.0) if quick else (5.0, 30.0)):
        args = [__file__, "--child", str(seconds), "--photo", str(big), "--checkpoints", str(checkpoints),
                "--work", str(work)]
        m = fresh_python(args, {}, timeout=max(600.0, 20 * seconds))[0]
        rows.append(Row(SECTION, f"peak RSS, whole photo 1024x1280, {seconds:g} s of speech ({m['frames']} frames)",
                        f"{m['peak_rss_mib']:.0f} MiB", "flat in the audio's length"))
        print(f"  {rows[-1].figure}: {rows[-1].value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s of speech")
    parser.add_argument("--skip-memory", action="store_true", help="only the timings, no peak-memory runs")
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
    report("Whole photo", run(args.quick, skip_memory=args.skip_memory), header=header)


if __name__ == "__main__":
    main()
