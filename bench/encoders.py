"""Encoders for the whole photo: x264 (several settings) against OpenH264 on the frames the pipeline makes.

    python bench/encoders.py            # the 5.5-s example on a 1200 x 1500 portrait: 137 frames of 1024 x 1280
    python bench/encoders.py --quick    # 2 s of speech
    python bench/encoders.py --example  # the bundled example's own photo: 137 frames of its whole-photo size

The frames are those `TalkingFacePipeline.run` hands its main writer for the whole photo (I420, the living head),
captured once and written to a raw file; each encoder then reads that file in a fresh ffmpeg (the bundled one),
one thread, as the pipeline runs it beside L2F. Reported: ffmpeg's CPU time (best of 3), the file's size, and the
luma PSNR against the frames given, over the pixels that change in the video (the face) and over the rest (the
photo around it, which only the first frame's coding decides), and the worst single frame's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.harness import PHOTO, Row, machine_line, report, write_speech
from bench.whole_photo import portrait
from talkface.pipeline import LARGE_CODEC, LARGE_PRESET, LARGE_X264

SECTION = "encoders"
SETTINGS = {  # name: (codec, x264 preset, x264's own options) as talkface.video.encoder_options takes them
    "x264 veryfast (up to 512²: the crop, the example's whole photo)": ("libx264", "veryfast", None),
    "x264 ultrafast": ("libx264", "ultrafast", None),
    "x264 superfast + B-frames, mbtree (LARGE_X264, the fallback)": ("libx264", LARGE_PRESET, LARGE_X264),
    "OpenH264, 0.1 bit a pixel (LARGE_CODEC, shipped)": (LARGE_CODEC, None, None),
}


def capture(work: Path, seconds: float | None, example: bool = False) -> tuple[Path, tuple[int, int], int]:
    """The pipeline's I420 frames of the whole portrait (`example`: of the bundled photo), in a raw file:
    (path, (width, height), frames)."""
    import talkface.video as video
    from talkface.pipeline import TalkingFacePipeline

    raw, size = work / "frames.yuv", None
    original = video.VideoWriter.write

    def write(self, frame):  # the main writer's frames (the panels and the pieces are not made here)
        nonlocal size
        if self.path.suffix == ".mp4":
            size = self.size
            with open(raw, "ab") as f:
                f.write(np.ascontiguousarray(frame).tobytes())
        original(self, frame)

    pipe = TalkingFacePipeline.from_pretrained(device="cpu")
    video.VideoWriter.write = write
    try:
        speech = write_speech(work / "speech.wav", seconds)
        result = pipe.run(PHOTO if example else portrait(work), speech, out=work / "whole.mp4", max_seconds=None)
    finally:
        video.VideoWriter.write = original
    return raw, size, result.num_frames


def encode(raw: Path, size: tuple[int, int], options: list[str], out: Path) -> float:
    """ffmpeg's CPU seconds (user + system) to encode the raw frames with these options, best of 3."""
    from talkface.video import ffmpeg_exe

    best = np.inf
    for _ in range(3):
        before = os.times()
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s",
                        f"{size[0]}x{size[1]}", "-r", "25", "-i", str(raw), *options, "-threads", "1",
                        "-pix_fmt", "yuv420p", str(out)], check=True)
        after = os.times()
        best = min(best, after.children_user - before.children_user + after.children_system - before.children_system)
    return best


def luma_psnr(out: Path, frames: np.ndarray, moving: np.ndarray) -> tuple[float, float, float, int]:
    """PSNR of the decoded luma against the frames given: over the moving pixels, over the rest, and the worst
    single frame's (with its index): an encoder whose rate control starts soft shows there, not in the means."""
    import imageio_ffmpeg

    height, width = moving.shape
    reader = imageio_ffmpeg.read_frames(str(out), pix_fmt="yuv420p", bits_per_pixel=12)
    next(reader)
    error = np.zeros((height, width))
    per_frame = []
    for k, buf in enumerate(reader):
        luma = np.frombuffer(buf, np.uint8).reshape(-1, width)[:height].astype(np.float64)
        squared = (luma - frames[k, :height]) ** 2
        error += squared
        per_frame.append(10 * np.log10(255**2 / max(squared.mean(), 1e-10)))
    error /= len(frames)
    face, rest = (10 * np.log10(255**2 / error[m].mean()) for m in (moving, ~moving))
    return face, rest, min(per_frame), int(np.argmin(per_frame))


def run(quick: bool = False, work: Path | None = None, example: bool = False) -> list[Row]:
    from talkface.video import encoder_options, h264_encoders

    work = Path(work or tempfile.mkdtemp(prefix="talkface-bench-"))
    raw, size, count = capture(work, 2.0 if quick else None, example)
    frames = np.fromfile(raw, np.uint8).reshape(count, size[1] * 3 // 2, size[0])
    moving = frames[:, : size[1]].std(0) > 0
    photo = "example photo" if example else "portrait"
    rows = [Row(SECTION, "frames", f"{count} of {size[0]} x {size[1]} (the whole {photo}, living head); "
                                   f"{100 * moving.mean():.1f}% of the pixels change")]
    for name, (codec, preset, x264) in SETTINGS.items():
        if codec not in h264_encoders():
            rows.append(Row(SECTION, name, "not in this ffmpeg"))
            continue
        out = work / "out.mp4"
        cpu = encode(raw, size, ["-c:v", codec, *encoder_options(codec, size, 25, 20, preset, x264)], out)
        face, rest, worst, at = luma_psnr(out, frames, moving)
        rows.append(Row(SECTION, name, f"{cpu:.2f} CPU-s ({1000 * cpu / count:.1f} ms a frame), "
                                       f"{out.stat().st_size / 1000:.0f} kB, luma PSNR face {face:.1f} dB, "
                                       f"rest {rest:.1f} dB, worst frame {worst:.1f} dB (frame {at})"))
        print(f"  {name}: {rows[-1].value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s of speech")
    parser.add_argument("--example", action="store_true", help="the bundled example photo, not the portrait")
    args = parser.parse_args(argv)
    header = machine_line()
    print(header, flush=True)
    report("Encoders", run(args.quick, example=args.example), header=header)


if __name__ == "__main__":
    main()
