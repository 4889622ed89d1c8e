"""The app's main function (the one its Generate button and API call) on good and bad inputs.

Every bad input must end in a gr.Error with a plain sentence, leave nothing behind, and not stop the next
request; every odd-but-valid input (formats, rates, channels, image modes) must give a video.
"""

import importlib.util
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import cv2
import gradio as gr
import imageio_ffmpeg
import numpy as np
import PIL.Image
import pytest
import skimage.data
import soundfile as sf

from talkface.video import probe

REPO = Path(__file__).parent.parent
PHOTO = REPO / "assets" / "examples" / "face.jpg"
SPEECH = REPO / "assets" / "examples" / "speech.wav"
SOLVAY = Path("/usr/share/visp-images-data/ViSP-images/Solvay/Solvay_conference_1927_Version2_1280x881.png")


def _load_app_module():
    spec = importlib.util.spec_from_file_location("talkface_app", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app_module = _load_app_module()


def test_gradio_streams_with_the_bundled_ffmpeg(monkeypatch):
    """Gradio's ffmpeg calls for the streamed pieces go to the static ffmpeg the pipeline encodes with (it starts
    in ~10 ms, a system one linked against ~100 libraries in 70-160 ms); where no link can be made, PATH stays as
    it was and streaming falls back to the system's ffmpeg."""
    bundled = Path(imageio_ffmpeg.get_ffmpeg_exe()).resolve()
    if app_module.STREAMING:  # set up when the app was imported
        assert Path(shutil.which("ffmpeg")).resolve() == bundled
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert app_module.bundled_ffmpeg_first()
    assert Path(shutil.which("ffmpeg")).resolve() == bundled
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    assert version.splitlines()[0] == subprocess.run([str(bundled), "-version"], capture_output=True, text=True,
                                                     check=True).stdout.splitlines()[0]

    def refuse(self, target):
        raise OSError("links are not allowed here")

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(Path, "symlink_to", refuse)
    assert not app_module.bundled_ffmpeg_first() and os.environ["PATH"] == "/usr/bin:/bin"


@pytest.fixture(scope="module")
def app(tiny_checkpoints):
    app = app_module.TalkFaceApp(tiny_checkpoints, max_seconds=4.0)
    yield app
    shutil.rmtree(app.work_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Inputs of every kind, made from the example photo and speech."""
    d = tmp_path_factory.mktemp("inputs")
    wave, rate = sf.read(SPEECH, dtype="float32")
    short = wave[: int(0.6 * rate)]  # "Goodb...": enough speech for 15 frames
    sf.write(d / "speech.wav", short, rate)
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(d / "speech.wav")]
    for name, codec in [("speech.mp3", "libmp3lame"), ("speech.ogg", "libvorbis"), ("speech.webm", "libopus"),
                        ("speech.m4a", "aac")]:
        subprocess.run([*ffmpeg, "-c:a", codec, str(d / name)], check=True)
    subprocess.run([*ffmpeg, "-ar", "48000", "-ac", "2", str(d / "speech48k_stereo.wav")], check=True)
    sf.write(d / "silent.wav", np.zeros(rate, np.float32), rate)
    sf.write(d / "blip.wav", short[: rate // 10], rate)
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + np.random.default_rng(0).bytes(400))

    face = PIL.Image.open(PHOTO).resize((320, 320))
    face.save(d / "face.jpg", quality=92)
    face.convert("RGBA").save(d / "rgba.png")
    face.convert("L").save(d / "grey.jpg")
    face.convert("CMYK").save(d / "cmyk.jpg")
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write portraits
    face.transpose(PIL.Image.Transpose.ROTATE_90).save(d / "exif.jpg", exif=exif)
    big = cv2.resize(np.asarray(face), (5000, 5000), interpolation=cv2.INTER_CUBIC)
    PIL.Image.fromarray(big).save(d / "huge.jpg", quality=80)
    PIL.Image.fromarray(skimage.data.coffee()).save(d / "coffee.jpg")
    face.resize((24, 24)).save(d / "tiny.png")
    (d / "notes.jpg").write_text("this is not a picture")
    return d


def generate(app, photo, audio, wd=True, tr=True, compare=False) -> list[tuple]:
    """Run the app's main function the way Gradio does: a generator, consumed to the end."""
    return list(app.generate(str(photo) if photo else None, str(audio) if audio else None, wd, tr, compare))


def error_of(app, photo, audio) -> str:
    before = set(app.work_dir.iterdir())
    with pytest.raises(gr.Error) as info:
        generate(app, photo, audio)
    assert set(app.work_dir.iterdir()) <= before, "a failed request left files behind"
    return info.value.message


# good inputs


def test_generate_gives_every_output(app, files):
    updates = generate(app, files / "face.jpg", files / "speech.wav", wd=False, tr=True)
    first, last = updates[0], updates[-1]
    assert first[1].shape == (512, 512, 3)  # the aligned face is shown before the video is made
    status, _, video, panels, compare, previews, slider, frame, plot, words, details = last
    assert status.startswith("Done: 15 frames")
    for path in (video, panels):
        assert Path(path).is_relative_to(app.work_dir)
        info = probe(path)
        assert info["has_video"] and info["has_audio"] and info["frames"] == 15
    assert probe(video)["size"] == (320, 320) and probe(panels)["size"] == (192, 76)  # the whole photo; crops
    assert Path(video).name.startswith("face_tr_") and Path(panels).name.endswith("_panels.mp4")
    assert compare["visible"] is False
    assert len(previews) == 15 and frame == previews[0][1] and Path(frame).is_file()
    assert slider["visible"] and slider["maximum"] == pytest.approx(14 / 25)
    assert app.show_frame(0.33, previews) == previews[8][1]  # the frame nearest 0.33 s is frame 8 (0.32 s)
    assert len(plot.axes) == 2 and "not a lip-reader" in words and "+TR" in details


def test_compare_all_four(app, files):
    *_, last = generate(app, files / "face.jpg", files / "speech.wav", compare=True)
    compare = last[4]
    assert compare["visible"] is True and probe(compare["value"])["frames"] == 15
    assert len(last[8].axes[1].get_lines()) == 4  # one mouth-opening curve per model


@pytest.mark.parametrize("name", ["speech.mp3", "speech.ogg", "speech.webm", "speech.m4a", "speech48k_stereo.wav"])
def test_audio_formats(app, files, name):
    *_, last = generate(app, files / "face.jpg", files / name)
    assert abs(probe(last[2])["frames"] - 15) <= 1  # encoders pad or trim a few milliseconds


@pytest.mark.parametrize("name", ["rgba.png", "grey.jpg", "cmyk.jpg", "exif.jpg", "huge.jpg"])
def test_image_kinds(app, files, name):
    *_, last = generate(app, files / name, files / "speech.wav")
    assert probe(last[2])["frames"] == 15
    assert np.allclose(last[1].shape, (512, 512, 3))


def test_exif_rotation_is_undone(app, files):
    upright, rotated = (app.pipeline().align(files / n) for n in ("face.jpg", "exif.jpg"))
    assert np.abs(upright.landmarks - rotated.landmarks).max() < 3


def test_several_faces_use_the_largest_and_say_so(app, files):
    assert SOLVAY.exists(), "the Solvay photo comes with the Debian package visp-images-data (bash run.sh test)"
    with pytest.warns(UserWarning, match=r"\d+ faces were found in the photo; the largest one is used"):
        *_, last = generate(app, SOLVAY, files / "speech.wav")
    assert "faces were found" in last[-1]


# bad inputs


@pytest.mark.parametrize(("photo", "audio", "message"), [
    (None, "speech.wav", "Please add a photo"),
    ("face.jpg", None, "Please add a speech recording"),
    ("coffee.jpg", "speech.wav", "No face was found in this photo"),
    ("tiny.png", "speech.wav", "The photo is only 24x24 pixels"),
    ("notes.jpg", "speech.wav", "The file notes.jpg is not an image"),
    ("face.jpg", "silent.wav", "The audio is silent"),
    ("face.jpg", "blip.wav", "The audio is only 0.10 seconds long"),
    ("face.jpg", "corrupt.wav", "Could not read the audio file 'corrupt.wav'"),
    ("face.jpg", SPEECH, "The audio is longer than the 4-second limit"),
])
def test_bad_inputs_are_plain_errors(app, files, photo, audio, message):
    photo = files / photo if photo else None
    audio = files / audio if isinstance(audio, str) else audio
    assert message in error_of(app, photo, audio)


def test_the_app_keeps_serving_after_errors(app, files):
    error_of(app, files / "coffee.jpg", files / "speech.wav")
    *_, last = generate(app, files / "face.jpg", files / "speech.wav")
    assert probe(last[2])["has_video"]


def test_missing_and_damaged_checkpoints_are_named(tiny_checkpoints, files, tmp_path):
    root = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints, root)
    (root / "l2f.json").unlink()
    app = app_module.TalkFaceApp(root)
    try:
        assert "l2f.json is missing" in error_of(app, files / "face.jpg", files / "speech.wav")
        shutil.copy(tiny_checkpoints / "l2f.json", root)
        (root / "a2l_wd_tr.safetensors").write_bytes(b"not weights")
        assert "a2l_wd_tr.safetensors is damaged" in error_of(app, files / "face.jpg", files / "speech.wav")
        shutil.copy(tiny_checkpoints / "a2l_wd_tr.safetensors", root)
        *_, last = generate(app, files / "face.jpg", files / "speech.wav")  # fixed files: the next request works
        assert probe(last[2])["has_video"]
    finally:
        shutil.rmtree(app.work_dir, ignore_errors=True)


def test_the_page_keeps_its_last_result_after_a_bad_input(app, files):
    """On the page (not the API) an error changes only the status line and raises no gr.Error."""
    with pytest.warns(UserWarning, match="The audio is silent"):
        updates = list(app.generate_in_page(str(files / "face.jpg"), str(files / "silent.wav"), False, False, False))
    live, status, *rest = updates[-1]  # the page's outputs: the live video first
    assert "Could not make the video" in status and "The audio is silent" in status
    assert live == gr.skip() and all(update == gr.skip() for update in rest)


@pytest.mark.parametrize(("kind", "name", "expected"), [
    ("speech", "speech48k_stereo.wav", "0.6 s of sound, 48 kHz stereo"),
    ("speech", "notes.jpg", "This speech cannot be used.** Could not read the audio file 'notes.jpg'"),
    ("speech", "silent.wav", "This speech cannot be used.** The audio is silent"),
    ("photo", "face.jpg", "A face was found."),
    ("photo", "coffee.jpg", "This photo cannot be used.** No face was found"),
    ("photo", "notes.jpg", "This photo cannot be used.** The file notes.jpg is not an image"),
])
def test_inputs_are_checked_when_they_arrive(app, files, kind, name, expected):
    check = app.check_speech if kind == "speech" else app.check_photo
    assert expected in check(str(files / name))
    assert check(None) == ""


def test_non_image_upload_is_refused_before_the_pipeline(files):
    photo = app_module.photo_input()
    with pytest.raises(gr.Error, match="not an image TalkFace can read"):
        photo.preprocess(gr.FileData(path=str(files / "notes.jpg"), orig_name="notes.jpg"))
    assert photo.preprocess(gr.FileData(path=str(files / "cmyk.jpg"), orig_name="cmyk.jpg")) \
        == str(files / "cmyk.jpg")  # handed over untouched: load_image reads CMYK, EXIF, 16-bit...


def test_nothing_is_written_outside_the_temp_dir(app, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate(app, files / "face.jpg", files / "speech.wav")
    error_of(app, files / "face.jpg", files / "silent.wav")
    assert list(tmp_path.iterdir()) == []


def test_the_demo_builds_and_warns_about_missing_checkpoints(tiny_checkpoints, tmp_path):
    app = app_module.TalkFaceApp(tmp_path)  # an empty folder: nothing there
    try:
        demo = app_module.build_demo(app)
        config = demo.get_config_file()
        texts = [c["props"].get("value") for c in config["components"] if c["type"] == "markdown"]
        assert any(t and "Checkpoint file missing" in t and "l2f.json" in t for t in texts)
        assert any(d.get("api_name") == "generate" for d in config["dependencies"])
        # every event that makes a video (button, example click, API) waits in the one "generate" group, and the
        # API has no other way in: one video at a time on the server
        makers = [fn for fn in demo.fns.values() if fn.fn is not None and "generate" in fn.fn.__name__]
        assert len(makers) == 3 and all(fn.concurrency_id == "generate" for fn in makers)
        public = [fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"]
        assert public == ["generate"]
    finally:
        shutil.rmtree(app.work_dir, ignore_errors=True)


def test_the_queue_door_counts_a_clients_unfinished_videos(tiny_checkpoints):
    """QueueDoor (the ASGI middleware on Gradio's app): a join of a video event is refused with HTTP 429 and the
    sentence when its client (X-Forwarded-For, else the connection) already has two unfinished; other events and
    other clients pass; the count is read off the queue, so a finished or failed request frees its place."""
    import asyncio
    import json as jsonlib

    app = app_module.TalkFaceApp(tiny_checkpoints)
    demo = app_module.build_demo(app)
    video_fn = min(app_module.video_events(demo))
    other_fn = next(i for i in demo.fns if i not in app_module.video_events(demo))
    unfinished = {"203.0.113.7": 2}
    passed = []

    async def inner(scope, receive, send):
        passed.append(jsonlib.loads((await receive())["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    door = app_module.QueueDoor(inner, demo, count=lambda _, key: unfinished.get(key, 0))

    def join(fn_index: int, forwarded: str = "203.0.113.7") -> tuple[int, bytes]:
        sent = []
        body = jsonlib.dumps({"fn_index": fn_index, "data": []}).encode()
        scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "client": ("10.0.0.1", 5),
                 "headers": [(b"x-forwarded-for", forwarded.encode())]}

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(door(scope, receive, send))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    try:
        status, body = join(video_fn)
        assert status == 429 and "You already have 2 videos waiting or being made" in jsonlib.loads(body)["detail"]
        assert join(other_fn)[0] == 200 and join(video_fn, forwarded="198.51.100.2")[0] == 200
        unfinished["203.0.113.7"] = 1  # one of them finished
        assert join(video_fn)[0] == 200 and len(passed) == 3
        assert app_module.unfinished_videos(demo, "203.0.113.7") == 0  # the real count: an idle queue
    finally:
        shutil.rmtree(app.work_dir, ignore_errors=True)
