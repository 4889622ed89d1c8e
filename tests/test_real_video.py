"""The real-video evaluation (train/real_video.py): GRID names, and the whole protocol on one clip.

The clip is one the product made itself from the bundled photo and speech, so its "real" mouth is known: the
product scoring its own video must find the mouths in step (first frame as the photo, the same speech).
"""

import json
import shutil

import numpy as np
import pytest

from talkface.pipeline import TalkingFacePipeline
from train.real_video import evaluate_real, grid_transcript, real_clips, transcript

EXAMPLE_PHOTO, EXAMPLE_SPEECH = "assets/examples/face.jpg", "assets/examples/speech.wav"


def test_grid_names_spell_their_sentences(tmp_path):
    assert grid_transcript("bbaf2n") == "bin blue at f two now"
    assert grid_transcript("lrwp9a") == "lay red with p nine again"
    assert grid_transcript("sbwz0s") is None  # '0' is no GRID digit (zero is 'z')
    assert grid_transcript("speech") is None
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    (tmp_path / "clip.txt").write_text("Text:  GOODBYE THANK YOU\nConf: 1\n")  # LRW's sidecar
    assert transcript(clip) == "goodbye thank you"
    (tmp_path / ".hidden.mp4").write_bytes(b"")
    assert real_clips(tmp_path) == [clip]


@pytest.mark.slow
def test_the_product_scored_on_its_own_video(tmp_path):
    pipe = TalkingFacePipeline.from_pretrained("baseline")
    clips = tmp_path / "clips"
    made = pipe.run(EXAMPLE_PHOTO, EXAMPLE_SPEECH, out=clips / "example.mp4")
    (clips / "example.txt").write_text("goodbye thank you for trying out the asterisk open source p b x\n")
    results = evaluate_real(clips, out=tmp_path / "eval", names=["baseline", "wd_tr"])

    scores = results["clips"]["example"]
    assert scores["transcript"].startswith("goodbye") and scores["aligned"]
    assert scores["real_frames_without_face"] == 0
    own = scores["ablations"]["baseline"]
    # the same model on the same photo and speech: its mouth moves with the "real" one, as far
    assert own["frames"]["corr"] > 0.8 and own["frames"]["best_lag"] == 0
    assert 0.75 < own["frames"]["range_ratio"] < 1.33
    assert own["landmarks"]["corr"] > 0.8
    assert np.isfinite(own["frames"]["bilabial"]) and np.isfinite(own["frames"]["bilabial_real"])
    other = scores["ablations"]["wd_tr"]["frames"]
    assert other["shape_distance"] > own["frames"]["shape_distance"]  # another model is further from it
    assert made.num_frames >= 100

    written = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert written["summary"]["baseline"]["clips"] == 1
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "| Baseline |" in table and "| +WD+TR |" in table and "GRID" in table
    assert (tmp_path / "eval" / "contact_example.jpg").stat().st_size > 10_000
    shutil.rmtree(clips)


@pytest.mark.slow
def test_calibration_finds_the_gain_a_video_was_made_with(tmp_path):
    """A clip the product made at its calibrated gain g: tried at g/2, g and 2g, calibration picks g (the range
    ratio nearest 1) and writes it into the checkpoint's JSON and model card."""
    from talkface.checkpoints import BUNDLED
    from train.real_video import calibrate

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for path in BUNDLED.iterdir():
        target = folder / path.name
        if path.suffix == ".safetensors":
            target.symlink_to(path)
        else:
            shutil.copy(path, target)
    pipe = TalkingFacePipeline.from_pretrained("baseline", checkpoint_dir=folder)
    gain = pipe.articulation_gain("baseline")
    pipe.run(EXAMPLE_PHOTO, EXAMPLE_SPEECH, out=tmp_path / "clips" / "example.mp4")
    config = json.loads((folder / "a2l_baseline.json").read_text())
    config["articulation_gain"] = 1.0
    (folder / "a2l_baseline.json").write_text(json.dumps(config))

    chosen = calibrate(tmp_path / "clips", folder, tmp_path / "out", ["baseline"], [gain / 2, gain, 2 * gain])
    assert chosen == {"baseline": gain}
    written = json.loads((folder / "a2l_baseline.json").read_text())
    assert written["articulation_gain"] == gain and written["articulation_calibration"]["clips"] == ["example"]
    assert f"**{gain:g}**" in (folder / "a2l_baseline.md").read_text()
    assert "| Baseline |" in (tmp_path / "out" / "calibration.md").read_text()
