"""The shipped checkpoints themselves: they load offline, and the bundled example's lips move with its speech.

These are the models a user gets from `bash run.sh demo`; the other tests use tiny random-weight copies.
"""

import numpy as np
import pytest

from talkface.audio import FPS, SAMPLE_RATE
from talkface.checkpoints import BUNDLED
from talkface.face import detect_landmarks, mouth_opening
from talkface.pipeline import ABLATIONS, TalkingFacePipeline, missing_checkpoints
from talkface.video import read_video

EXAMPLE_PHOTO, EXAMPLE_SPEECH = "assets/examples/face.jpg", "assets/examples/speech.wav"


def test_every_bundled_checkpoint_is_there():
    assert missing_checkpoints(BUNDLED) == []
    for name in ("word_detector", "mi_estimator", *(f"a2l_{a}" for a in ABLATIONS), "l2f"):
        assert (BUNDLED / f"{name}.md").exists(), f"{name} has no model card"


@pytest.mark.slow
def test_the_example_speaks(tmp_path):
    pipe = TalkingFacePipeline.from_pretrained("wd_tr")
    result = pipe.run(EXAMPLE_PHOTO, EXAMPLE_SPEECH, compare=True, out=tmp_path / "example.mp4")
    wave = result.waveform
    # speech energy per video frame, and where the speaker is clearly talking or clearly pausing
    hop = SAMPLE_RATE // FPS
    energy = np.array([np.sqrt(np.mean(wave[i * hop : (i + 1) * hop] ** 2)) for i in range(result.num_frames)])
    loud = energy > np.percentile(energy, 60)
    quiet = energy < np.percentile(energy, 15)
    for name, track in result.tracks.items():
        opening = np.linalg.norm(track[:, 62] - track[:, 66], axis=-1)  # inner-lip gap, crop pixels
        assert opening.std() > 0.3, f"{name}: the mouth hardly moves"
        assert opening[loud].mean() > opening[quiet].mean() + 0.5, f"{name}: the mouth is not more open in speech"


@pytest.mark.slow
def test_the_generated_mouth_follows_the_landmarks(tmp_path):
    """On the bundled photo (a wide smile, unlike the corpus's faces) the mouth in the generated frames opens and
    closes as the predicted landmarks do: dlib, run on the output video, finds the same inner-lip gap track.

    Twice: with the model's own motion (articulation 1 / its calibrated gain), where L2F must close the mouth as
    far as asked; and as the app runs it, where the gain asks this smile to close fully in some frames and L2F
    gets it only part of the way (a known limit, docs/real_video.md): there the mouth must still close to well
    under the photo's own gap."""
    pipe = TalkingFacePipeline.from_pretrained("baseline")
    photo_gap = mouth_opening(pipe.align(EXAMPLE_PHOTO).landmarks)
    for articulation in (1 / pipe.articulation_gain("baseline"), 1.0):
        result = pipe.run(EXAMPLE_PHOTO, EXAMPLE_SPEECH, out=tmp_path / "example.mp4", articulation=articulation,
                          full_frame=False, still=True)  # the crop L2F drew, where dlib finds the aligned face
        frames, _ = read_video(result.video_path)
        assert len(frames) == result.num_frames
        seen = mouth_opening(np.stack([detect_landmarks(f) for f in frames]))
        asked = mouth_opening(result.landmarks)
        assert asked.std() > 1.0  # the landmarks do move (crop pixels)
        assert np.corrcoef(seen, asked)[0, 1] > 0.6, "the generated mouth does not follow the landmarks"
        assert seen.max() - seen.min() > 0.7 * (asked.max() - asked.min()), "the generated mouth barely moves"
        closed = asked <= np.percentile(asked, 10)
        if articulation < 1:
            # it closes as far as asked, from a photo whose own mouth is open (the L2F before the landmark flow
            # never closed it: dlib found a gap of 5 px or more in every frame where the landmarks asked ~1-3 px)
            assert seen[closed].mean() < asked[closed].mean() + 2.0, "the mouth does not close with the landmarks"
        else:
            assert seen[closed].mean() < 0.5 * photo_gap, "the generated mouth does not close"
