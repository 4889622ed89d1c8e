"""The shipped checkpoints themselves: they load offline, and the bundled example's lips move with its speech.

These are the models a user gets from `bash run.sh demo`; the other tests use tiny random-weight copies.
"""

import numpy as np
import pytest

from talkface.audio import FPS, SAMPLE_RATE
from talkface.checkpoints import BUNDLED
from talkface.pipeline import ABLATIONS, TalkingFacePipeline, missing_checkpoints

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
