"""Bad inputs through the running app, as a public Space meets them: app.py in its own process (tiny checkpoints),
called through gradio_client like the README's API example.

Each bad photo or recording must come back as its plain sentence (no traceback, no bare "Error"), the server must
keep serving, its memory must come back near where it was, and a failed request must leave nothing in its
temporary folder.
"""

from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
import skimage.data
import soundfile as sf
from conftest import running_app

REPO = Path(__file__).parent.parent
PHOTO = REPO / "assets" / "examples" / "face.jpg"
SPEECH = REPO / "assets" / "examples" / "speech.wav"
SOLVAY = Path("/usr/share/visp-images-data/ViSP-images/Solvay/Solvay_conference_1927_Version2_1280x881.png")

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tiny_checkpoints, tmp_path_factory):
    """app.py with its own TMPDIR, so that its temporary folder can be inspected; (url, pid, tmpdir, log)."""
    tmp = tmp_path_factory.mktemp("server_tmp")
    log = tmp_path_factory.mktemp("server_log") / "app.log"
    with running_app(tiny_checkpoints, log, 4, {"TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}) \
            as (url, process):
        yield url, process.pid, tmp, log


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sweep")
    wave, rate = sf.read(SPEECH, dtype="float32")
    sf.write(d / "speech.wav", wave[: int(1.2 * rate)], rate)
    sf.write(d / "silent.wav", np.zeros(rate, np.float32), rate)
    sf.write(d / "empty.wav", np.zeros(0, np.float32), rate)
    sf.write(d / "long.wav", np.tile(wave, 2), rate)  # 11 s, the server allows 4
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + np.random.default_rng(0).bytes(400))
    (d / "notes.wav").write_text("a text file named like a recording")
    face = PIL.Image.open(PHOTO).resize((320, 320))
    face.save(d / "face.jpg", quality=92)
    face.save(d / "face.gif")
    face.convert("CMYK").save(d / "cmyk.jpg")
    PIL.Image.fromarray(np.asarray(face.convert("L"), np.uint16) * 257).save(d / "grey16.png")
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    face.transpose(PIL.Image.Transpose.ROTATE_90).save(d / "exif.jpg", exif=exif)
    PIL.Image.fromarray(skimage.data.coffee()).save(d / "coffee.jpg")
    PIL.Image.fromarray(skimage.data.camera()).save(d / "profile.png")
    face.resize((24, 24)).save(d / "tiny.png")
    PIL.Image.new("L", (13000, 13000), 200).save(d / "bomb13k.png")
    PIL.Image.new("L", (20000, 20000), 200).save(d / "bomb20k.png")
    big = cv2.resize(np.asarray(face), (5000, 5000), interpolation=cv2.INTER_CUBIC)
    PIL.Image.fromarray(big).save(d / "huge.jpg", quality=80)
    frames = np.repeat(np.asarray(face)[None], 10, axis=0)
    from talkface.video import write_video

    write_video(d / "clip.mp4", frames)
    return d


GOOD = "speech.wav"
BAD_PHOTOS = {
    "coffee.jpg": "No face was found in this photo",
    "tiny.png": "The photo is only 24x24 pixels",
    "profile.png": "turned too far to the side",
    "bomb13k.png": "is 13000x13000 pixels (169 megapixels), more than TalkFace reads",
    "bomb20k.png": "too many pixels to be a photo TalkFace can use",
    "clip.mp4": "not an image TalkFace can read",
}
BAD_SPEECH = {
    "silent.wav": "The audio is silent",
    "empty.wav": "The audio contains no sound at all",
    "long.wav": "The audio is longer than the 4-second limit",
    "corrupt.wav": "Could not read the audio file",
    "notes.wav": "Could not read the audio file",
}
ODD_PHOTOS = ["face.gif", "cmyk.jpg", "grey16.png", "exif.jpg", "huge.jpg"]


def test_bad_inputs_through_the_running_app(server, files):
    from gradio_client import Client, handle_file

    url, pid, tmp, log = server
    client = Client(url, verbose=False)

    def call(photo: str, audio: str):
        return client.predict(handle_file(str(files / photo)), handle_file(str(files / audio)), False, False,
                              False, 1.0, "Whole photo", False, api_name="/generate")

    def request_dirs() -> list[Path]:
        return [p for p in tmp.glob("talkface-*/app-*/*") if p.is_dir()]

    status = call("face.jpg", GOOD)[0]  # warm up: models loaded, one request's folder kept for its download
    assert status.startswith("Done")
    baseline, kept = _rss_mib(pid), len(request_dirs())
    messages = {}
    for photo, expected in BAD_PHOTOS.items():
        with pytest.raises(Exception) as info:
            call(photo, GOOD)
        messages[photo] = str(info.value)
        assert expected in messages[photo], (photo, messages[photo])
    for audio, expected in BAD_SPEECH.items():
        with pytest.raises(Exception) as info:
            call("face.jpg", audio)
        messages[audio] = str(info.value)
        assert expected in messages[audio], (audio, messages[audio])
    assert len(request_dirs()) == kept  # failed requests left nothing behind
    for photo in ODD_PHOTOS:  # odd but valid: a video
        assert call(photo, GOOD)[0].startswith("Done"), photo
    assert SOLVAY.exists(), "visp-images-data (bash run.sh test) provides the group photo"
    status, *_, details = client.predict(handle_file(str(SOLVAY)), handle_file(str(files / GOOD)), False, False,
                                         False, 1.0, "Face crop (256×256)", True, api_name="/generate")
    assert status.startswith("Done") and "faces were found in the photo; the largest one is used" in details
    assert call("face.jpg", GOOD)[0].startswith("Done")  # still serving
    after = _rss_mib(pid)
    print(f"server RSS: {baseline:.0f} MiB after the first request, {after:.0f} MiB after the sweep")
    assert after < baseline + 300, (baseline, after)
    text = log.read_text()
    assert "Traceback" not in text or "generation failed" not in text  # no unexpected failure was logged
    for name, message in messages.items():
        assert "Traceback" not in message and message.strip() != "Error", name


def test_one_client_cannot_fill_the_queue(server, files):
    """Two unfinished videos per client at most: a third request while two wait or run is refused at the queue's
    door with a sentence; once they are done the client may ask again."""
    from gradio_client import Client, handle_file

    url, *_ = server
    client = Client(url, verbose=False)
    wave, rate = sf.read(SPEECH, dtype="float32")
    sf.write(files / "four.wav", wave[: int(3.9 * rate)], rate)
    args = (handle_file(str(files / "face.jpg")), handle_file(str(files / "four.wav")), False, False, True, 1.0,
            "Whole photo", False)
    jobs = [client.submit(*args, api_name="/generate") for _ in range(3)]
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result()[0])
        except Exception as exc:
            outcomes.append(f"refused: {exc}")
    assert sum(o.startswith("Done") for o in outcomes) == 2, outcomes
    assert any("429 Too Many Requests" in o for o in outcomes), outcomes  # the sentence: test_app's QueueDoor test
    assert client.predict(*args, api_name="/generate")[0].startswith("Done")
