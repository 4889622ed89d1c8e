"""Blinks as the viewer sees them: dlib's eye aspect ratio (EAR) on the frames of a generated whole-photo video.

    python experiments/measure_blinks.py [--photo P] [--speech S] [--seconds 40] [--out DIR]

The speech is repeated up to `--seconds`; the default request (whole photo, living head) is generated with the
bundled checkpoints; dlib's 68 points are found on every output frame (``face.track_landmarks``, independent of
the landmarks the model was given). EAR = (|p2-p6| + |p3-p5|) / (2 |p1-p4|), both eyes averaged (Soukupová &
Čech 2016); a frame is closed when its EAR is under 75% of the median (open) EAR; a blink is a run of closed
frames. Printed: blinks per minute, their durations, and how many of the blinks asked of L2F (the landmarks'
own eyelids) were seen.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from talkface.face import track_landmarks
from talkface.pipeline import TalkingFacePipeline
from talkface.video import read_video

REPO = Path(__file__).resolve().parent.parent
CLOSED = 0.75  # of the median EAR


def eye_aspect_ratio(points: np.ndarray) -> np.ndarray:
    """(T, 68, 2) -> (T,) mean EAR of both eyes (NaN where no face was found)."""
    def one(eye):
        p = points[:, eye]
        vertical = np.linalg.norm(p[:, 1] - p[:, 5], axis=-1) + np.linalg.norm(p[:, 2] - p[:, 4], axis=-1)
        return vertical / (2 * np.linalg.norm(p[:, 0] - p[:, 3], axis=-1))

    return (one(list(range(36, 42))) + one(list(range(42, 48)))) / 2


def blink_runs(ear: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of frames whose EAR is under CLOSED x the median."""
    closed = ear < CLOSED * np.nanmedian(ear)
    runs, start = [], None
    for t, c in enumerate(closed):
        if c and start is None:
            start = t
        if not c and start is not None:
            runs.append((start, t - start))
            start = None
    if start is not None:
        runs.append((start, len(closed) - start))
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photo", default=str(REPO / "assets" / "examples" / "face.jpg"))
    p.add_argument("--speech", default=str(REPO / "assets" / "examples" / "speech.wav"))
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--out", default=None, help="keep the video here (default: a temporary folder)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="talkface-blinks-"))
    out.mkdir(parents=True, exist_ok=True)
    wave, rate = sf.read(args.speech, dtype="float32", always_2d=True)
    reps = int(np.ceil(args.seconds * rate / len(wave)))
    long = np.tile(wave, (reps, 1))[: int(args.seconds * rate)]
    speech = out / "speech.wav"
    sf.write(speech, long, rate)

    pipe = TalkingFacePipeline.from_pretrained()
    result = pipe.run(args.photo, speech, out=out / "blinks.mp4")
    frames, fps = read_video(result.video_path)
    seen = eye_aspect_ratio(track_landmarks(frames))
    asked = eye_aspect_ratio(result.landmarks)
    minutes = len(frames) / fps / 60
    for name, ear in (("asked (the landmarks, eyelids included)", asked), ("seen (dlib on the output video)", seen)):
        runs = blink_runs(ear)
        lengths = np.array([n for _, n in runs]) / fps
        print(f"{name}: {len(runs)} blinks in {minutes * 60:.1f} s = {len(runs) / minutes:.1f} per minute; "
              f"duration under {CLOSED:.0%} of the open EAR: mean {lengths.mean() if len(runs) else 0:.2f} s "
              f"(range {lengths.min() if len(runs) else 0:.2f}-{lengths.max() if len(runs) else 0:.2f} s); "
              f"median EAR {np.nanmedian(ear):.3f}, lowest {np.nanmin(ear):.3f}")
    seen_runs = blink_runs(seen)
    found = sum(any(abs(s - a) <= 3 for s, _ in seen_runs) for a, _ in blink_runs(asked))
    print(f"asked blinks seen in the video (within 3 frames): {found} of {len(blink_runs(asked))}; "
          f"video {result.video_size[0]}x{result.video_size[1]}, {len(frames)} frames: {result.video_path}")


if __name__ == "__main__":
    main()
