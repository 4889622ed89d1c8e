"""Where A2L loses the timing on real video: the network against its own teacher, on real and on TTS speech.

For each real clip (first frame as the photo, its speech, its transcript force-aligned to it):
- teacher: the corpus's articulation model (``mouth_trajectory`` + ``apply_mouth``, the average speaker) driven
  by the clip's true phones, on the photo's landmarks: what A2L was trained to reproduce;
- A2L: the shipped checkpoint's landmarks for the clip's speech (before L2F);
- real: dlib's points on the clip's frames.
Then the same sentence spoken by eSpeak voices the corpus trains on: A2L on that speech against the teacher
driven by eSpeak's own phones. If A2L follows the teacher on TTS speech but not on the real speech, the voices
(the audio domain) are what it loses; if it follows neither, the sentence-length input is.

    python experiments/a2l_vs_teacher.py ../shared/real_av/grid [--checkpoints DIR] [--ablation baseline]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from talkface.audio import SAMPLE_RATE
from talkface.data.articulation import apply_mouth, mouth_trajectory, with_rest
from talkface.data.speech import Espeak
from talkface.metrics import lip_sync_scores
from talkface.pipeline import TalkingFacePipeline
from train.real_video import load_clip, real_clips

VOICES = ("en-us", "en-gb-x-rp+m3", "en-us+f2", "en+klatt2", "en-gb-scotland+f4")


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Inner-lip opening correlation at lag 0 of two (T, 68, 2) landmark tracks, as the real-video tables score it."""
    return lip_sync_scores(a, b)["corr"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--checkpoints", default=None)
    p.add_argument("--ablation", default="baseline")
    args = p.parse_args(argv)
    kw = {"checkpoint_dir": args.checkpoints} if args.checkpoints else {}
    pipe = TalkingFacePipeline.from_pretrained(a2l=args.ablation, **kw)
    espeak = Espeak()
    rows = []
    for path in real_clips(args.root):
        clip = load_clip(pipe, path)
        ref = clip.photo.landmarks
        n = len(clip.frames)
        # the mouth at rest around the speech, as the "a2l_pauses" corpus teaches it (with_rest)
        spoken = [p for p in clip.phones if p.symbol != "sil"]
        inner = clip.phones[clip.phones.index(spoken[0]) : clip.phones.index(spoken[-1]) + 1]
        teacher = apply_mouth(ref, mouth_trajectory(with_rest(inner, -1.0, n / 25 + 1.0), n))
        pred = pipe.predict_landmarks(clip.photo, clip.waveform, [args.ablation])[0][args.ablation]
        row = {
            "clip": clip.name,
            "teacher~real": corr(teacher, clip.points),
            "a2l~real": corr(pred, clip.points),
            "a2l~teacher": corr(pred, teacher),
        }
        tts = []
        for voice in VOICES:
            utt = espeak.synthesize(clip.text, voice=voice)
            m = int(len(utt.waveform) / utt.sample_rate * 25)
            wave = utt.waveform if utt.sample_rate == SAMPLE_RATE else None
            assert wave is not None, utt.sample_rate
            t = apply_mouth(ref, mouth_trajectory(with_rest(utt.phones, -1.0, m / 25 + 1.0), m))
            pr = pipe.predict_landmarks(clip.photo, wave, [args.ablation])[0][args.ablation]
            tts.append(corr(pr, t))
        row["a2l~teacher (eSpeak)"] = float(np.mean(tts))
        rows.append(row)
        print(" | ".join(f"{k} {v:.3f}" if isinstance(v, float) else str(v) for k, v in row.items()), flush=True)
    keys = [k for k in rows[0] if k != "clip"]
    print("mean | " + " | ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in keys))


if __name__ == "__main__":
    main()
