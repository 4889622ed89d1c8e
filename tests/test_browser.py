"""The app as a person uses it: launched on 127.0.0.1 with tiny checkpoints, driven in headless Chromium.

Needs Debian's `chromium` (bash run.sh test installs it) and PyPI `playwright` (in requirements.txt; its own
browser downloads are not used). Screenshots go to /tmp/talkface_*.png.
"""

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import running_app

REPO = Path(__file__).parent.parent
PHOTO = REPO / "assets" / "examples" / "face.jpg"
SPEECH = REPO / "assets" / "examples" / "speech.wav"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tiny_checkpoints, tmp_path_factory):
    """The real app.py in its own process, as `bash run.sh demo` starts it, on tiny checkpoints."""
    with running_app(tiny_checkpoints, tmp_path_factory.mktemp("server") / "app.log", 30) as (url, _):
        yield url


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("browser_inputs")
    wave, rate = sf.read(SPEECH, dtype="float32")
    sf.write(d / "hello.wav", wave[: int(1.2 * rate)], rate)  # "Goodbye"
    sf.write(d / "silence.wav", np.zeros(rate, np.float32), rate)
    (d / "notes.wav").write_text("not a recording: a text file named like one")
    return {"speech": d / "hello.wav", "silence": d / "silence.wav", "text": d / "notes.wav"}


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: bash run.sh test installs the Debian package chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server)
    page.locator("#talkface-generate").wait_for(timeout=60_000)
    yield page
    page.close()


def _video_duration(page, elem_id: str, timeout_ms: int = 120_000) -> float:
    """Wait until the component's <video> has loaded its metadata; its duration in seconds."""
    selector = f"#{elem_id} video"
    page.wait_for_function(
        f"() => {{ const v = document.querySelector('{selector}'); return v && v.readyState >= 1; }}",
        timeout=timeout_ms)
    return page.evaluate(f"document.querySelector('{selector}').duration")


def _set_speech(page, path: Path) -> None:
    """Upload speech, clearing the one already there first (a loaded player has no file input)."""
    clear = page.locator("#talkface-audio button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator("#talkface-audio input[type=file]").set_input_files(str(path))


def _video_src(page) -> str | None:
    return page.evaluate("() => { const v = document.querySelector('#talkface-video video'); return v && v.src; }")


@pytest.mark.browser
def test_upload_toggle_generate_and_play(page, inputs):
    page.locator("#talkface-photo input[type=file]").set_input_files(str(PHOTO))
    page.locator("#talkface-audio input[type=file]").set_input_files(str(inputs["speech"]))
    page.locator("#talkface-photo-note").get_by_text("A face was found").wait_for()  # checked on arrival
    page.locator("#talkface-speech-note").get_by_text("1.2 s of sound, 16 kHz mono").wait_for()
    assert not page.get_by_label("WD: word detector").is_checked()  # the default, Baseline
    page.get_by_label("TR: temporal sync").check()  # +TR alone
    page.locator("#talkface-articulation input[type=number]").fill("1.5")
    page.locator("#talkface-articulation input[type=number]").press("Enter")
    start = time.monotonic()
    page.locator("#talkface-generate").click()
    page.locator("#talkface-aligned img").wait_for(timeout=60_000)
    aligned_after = time.monotonic() - start
    duration = _video_duration(page, "talkface-video")
    video_after = time.monotonic() - start
    # the face it found is on the page before the video is done (the target: within 1 s; timed here and
    # printed, not asserted: benchmarks, not tests, hold timings)
    print(f"aligned face shown after {aligned_after:.2f} s, video after {video_after:.2f} s")
    assert aligned_after <= video_after
    assert duration == pytest.approx(1.2, abs=0.1)
    assert _video_duration(page, "talkface-panels") == pytest.approx(duration, abs=0.05)
    # it plays: the clock moves
    playing = page.evaluate("""async () => {
        const v = document.querySelector('#talkface-video video');
        v.muted = true; await v.play();
        await new Promise(r => setTimeout(r, 600));
        return v.currentTime; }""")
    assert playing > 0.1
    assert page.evaluate("document.querySelector('#talkface-video video').videoWidth") == 512  # the whole photo
    page.locator("#talkface-words").get_by_text("not a lip-reader").wait_for()
    page.get_by_text("+TR · articulation 1.5 ·").wait_for()  # the details name the model and articulation asked
    assert "face_tr_" in _video_src(page)  # the download is named after the photo and the model
    # one progress display: no output but the video was ever covered (no progress bars left on the page)
    assert page.locator(".progress-bar").count() == 0
    page.screenshot(path="/tmp/talkface_browser.png", full_page=True)


@pytest.mark.browser
def test_an_example_runs_with_one_click(page):
    page.locator("#talkface-examples tbody tr").nth(1).click()  # the astronaut, all four compared
    duration = _video_duration(page, "talkface-video", timeout_ms=240_000)
    assert duration == pytest.approx(sf.info(SPEECH).duration, abs=0.1)
    assert _video_duration(page, "talkface-compare") == pytest.approx(duration, abs=0.05)
    page.screenshot(path="/tmp/talkface_browser_example.png", full_page=True)


@pytest.mark.browser
def test_bad_speech_is_refused_on_arrival_and_an_error_keeps_the_last_result(page, inputs):
    page.locator("#talkface-photo input[type=file]").set_input_files(str(PHOTO))
    page.locator("#talkface-audio input[type=file]").set_input_files(str(inputs["text"]))
    page.locator("#talkface-speech-note").get_by_text("This speech cannot be used.").wait_for(timeout=30_000)
    page.get_by_text("Could not read the audio file 'notes.wav'").first.wait_for()  # before any Generate
    page.screenshot(path="/tmp/talkface_browser_refused.png")

    _set_speech(page, inputs["speech"])
    page.locator("#talkface-generate").click()
    _video_duration(page, "talkface-video")
    good = _video_src(page)
    _set_speech(page, inputs["silence"])
    page.locator("#talkface-speech-note").get_by_text("The audio is silent").wait_for(timeout=30_000)
    page.locator("#talkface-generate").click()
    status = page.locator("#talkface-status")
    status.get_by_text("Could not make the video.").wait_for(timeout=60_000)
    assert "The audio is silent; please use a recording of someone speaking." in status.inner_text()
    page.wait_for_timeout(11_000)  # longer than a notice stays: the reason is still where the user looks
    assert "The audio is silent" in status.inner_text()
    assert _video_src(page) == good  # the last good video is still there
    assert page.get_by_text("Error", exact=True).count() == 0  # no error badges over the outputs
    page.screenshot(path="/tmp/talkface_browser_error.png")


def test_gradio_client_calls_the_api(server, inputs):
    """The README's gradio_client example, against the running app."""
    from gradio_client import Client, handle_file

    from talkface.video import probe

    client = Client(server, verbose=False)
    status, aligned, video, panels, grid, slider, frame, plot, words, details = client.predict(
        handle_file(str(PHOTO)), handle_file(str(inputs["speech"])), True, True, False, 1.0, "Whole photo", False,
        api_name="/generate")
    assert status.startswith("Done: 30 frames") and Path(aligned).is_file() and Path(frame).is_file()
    for path in (video, panels):
        info = probe(path)
        assert info["has_video"] and info["has_audio"] and info["frames"] == 30
    assert probe(video)["size"] == (512, 512)
    assert grid["visible"] is False and slider["maximum"] == pytest.approx(29 / 25)
    assert plot["type"] == "matplotlib"
    assert "word detector" in words and "+WD+TR" in details
    with pytest.raises(Exception, match="The audio is silent"):  # the API raises the plain sentence
        client.predict(handle_file(str(PHOTO)), handle_file(str(inputs["silence"])), False, False, False, 1.0,
                       "Face crop (256×256)", True, api_name="/generate")


@pytest.mark.browser
def test_the_video_plays_while_it_is_made(page, inputs):
    """With the system's ffmpeg and ffprobe (Gradio's streaming output needs them), each second of the video is
    streamed to the page as soon as it is made (HLS segments), then the finished mp4 takes the live video's place.
    The time to the first moving frame is printed (benchmarks hold timings, not tests)."""
    import shutil

    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        pytest.skip("no system ffmpeg/ffprobe: the app shows the video when done (bash run.sh test installs them)")
    streamed = []
    page.on("response", lambda r: streamed.append(r.url) if "/stream/" in r.url else None)
    page.locator("#talkface-photo input[type=file]").set_input_files(str(PHOTO))
    page.locator("#talkface-audio input[type=file]").set_input_files(str(SPEECH))
    page.locator("#talkface-speech-note").get_by_text("5.5 s of sound").wait_for()
    start = time.monotonic()
    page.locator("#talkface-generate").click()
    duration = _video_duration(page, "talkface-video", timeout_ms=240_000)
    done = time.monotonic() - start
    assert duration == pytest.approx(sf.info(SPEECH).duration, abs=0.1)
    assert any(url.endswith(".m3u8") for url in streamed) and any(".ts" in url or ".aac" in url for url in streamed)
    assert not page.locator("#talkface-live").is_visible()  # the finished mp4 is in its place
    print(f"streamed {len(streamed)} requests; finished video after {done:.1f} s")
