"""Can a post-process of the A2L output bring the mouth nearer a real one? Scored on the predicted landmarks
(before L2F, seconds per setting) against dlib on the real frames, with `train/real_video.py`'s measures.

    python experiments/real_video_postprocess.py ../shared/real_av/grid

Three ideas, each printed per ablation (mean over clips; per-clip correlation and range ratio):
- gain: the motion scaled about the photo's landmarks (the pipeline's `articulate`);
- silence: the motion faded out where the speech's energy is low (a voice-activity gate), so lips rest in pauses;
- closed: the photo's mouth closed first (the corpus's `apply_mouth` with all parameters 0) and given to A2L.
Notes and the figures measured on 2026-12-05: docs/real_video.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d, maximum_filter1d

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from talkface.audio import FPS, SAMPLE_RATE, mfcc_windows
from talkface.data.articulation import MouthParams, apply_mouth
from talkface.data.speech import align
from talkface.face import denormalise_landmarks, normalise_landmarks, track_landmarks
from talkface.metrics import lip_sync_scores
from talkface.pipeline import ABLATIONS, TalkingFacePipeline
from talkface.video import read_video
from train.real_video import real_clips, transcript


def speech_gate(waveform: np.ndarray, num_frames: int, threshold: float = 0.35) -> np.ndarray:
    """1 where a video frame's speech energy is above `threshold` of the way from the floor to the peak (dB),
    0 in silence; widened by 2 frames each way (lips move before and after the sound) and smoothed."""
    hop = SAMPLE_RATE // FPS
    rms = np.array([np.sqrt(np.mean(waveform[i * hop : (i + 1) * hop] ** 2) + 1e-12) for i in range(num_frames)])
    db = 20 * np.log10(rms + 1e-6)
    floor, peak = np.percentile(db, 10), np.percentile(db, 98)
    gate = np.clip((db - (floor + threshold * (peak - floor))) / 6 + 0.5, 0, 1)
    return gaussian_filter1d(maximum_filter1d(gate, 5), 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="real clips (GRID .mpg, .mp4) with their speech")
    args = p.parse_args()
    pipe = TalkingFacePipeline.from_pretrained()
    clips = []
    for clip in real_clips(args.root):
        frames, _ = read_video(clip)
        waveform = pipe.load_speech(str(clip)).waveform
        phones, _ = align(waveform, SAMPLE_RATE, transcript(clip))
        clips.append((track_landmarks(frames), waveform, phones, pipe.align(frames[0]).landmarks))
    closed_mouth = MouthParams.from_array(np.zeros((1, 6), np.float32))

    for name in ABLATIONS:
        settings: dict[str, list[dict]] = {}
        for real, waveform, phones, photo in clips:
            mfcc = mfcc_windows(torch.from_numpy(waveform))
            for closed in (False, True):
                ref, sim = normalise_landmarks(apply_mouth(photo, closed_mouth)[0] if closed else photo)
                with torch.inference_mode():
                    pred = pipe.a2l_model(name).predict_sequence(mfcc, torch.from_numpy(ref).float()).numpy()
                motion = pred - ref
                variants = {"closed": motion} if closed else {
                    **{f"gain {g}": g * motion for g in (1.0, 1.2, 1.5, 2.0)},
                    "silence": motion * speech_gate(waveform, len(pred))[:, None, None]}
                for label, scaled in variants.items():
                    points = denormalise_landmarks(ref + scaled, sim)
                    settings.setdefault(label, []).append(lip_sync_scores(points, real, phones))
        for label, rows in settings.items():
            mean = {k: np.nanmean([r[k] for r in rows]) for k in ("corr", "range_ratio", "shape_distance", "bilabial")}
            print(f"{ABLATIONS[name]:8s} {label:9s} " + " ".join(f"{k} {v:.3f}" for k, v in mean.items())
                  + f"  corr per clip {[round(r['corr'], 2) for r in rows]}"
                  + f"  range per clip {[round(r['range_ratio'], 2) for r in rows]}")


if __name__ == "__main__":
    main()
