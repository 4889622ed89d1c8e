"""TalkFace demo: one photo + one speech recording -> a video of that face saying it (Gradio Blocks).

    python app.py                                  # http://127.0.0.1:7860, bundled checkpoints
    python app.py --checkpoints DIR --port 7861    # other checkpoints (or TALKFACE_CHECKPOINTS=DIR)
    python app.py --max-seconds 30                 # audio length limit (or TALKFACE_MAX_SECONDS)

Thin on purpose: every step is `talkface.pipeline`; this file turns its errors into plain messages, keeps
each request's files in one temporary folder, and lays the results out.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import logging
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import gradio as gr
import PIL.Image

from talkface import release_memory
from talkface.drawing import aligned_preview, mouth_opening_figure
from talkface.errors import TalkFaceError
from talkface.pipeline import (
    ABLATIONS,
    DEFAULT_A2L,
    MAX_ARTICULATION,
    TalkingFacePipeline,
    ablation,
    missing_checkpoints,
    switches,
)
from talkface.tempdir import new_dir

try:  # Hugging Face ZeroGPU: the GPU is lent only while a decorated function runs
    import spaces

    gpu = spaces.GPU(duration=120)
except ImportError:
    def gpu(fn):
        return fn

log = logging.getLogger("talkface.app")
HERE = Path(__file__).parent
EXAMPLES = HERE / "assets" / "examples"
# a shared server: shorter speech than the library's own limit (talkface.audio.MAX_SECONDS), unless asked
MAX_SECONDS = float(os.environ.get("TALKFACE_MAX_SECONDS", 120))
MAX_FILE_SIZE = "25mb"
KEEP_SECONDS = 3600  # a request's videos stay downloadable this long
TIMELINE_ENTRIES = 40
PREVIEW_WIDTH = 768

INTRO = """# TalkFace
Give it one face photo and a speech recording: it makes a video of that face saying it, lips in sync. The speech
is turned into 68 facial landmarks per frame (**A2L**, audio to landmarks), then into pictures (**L2F**,
landmarks to frames), after Zheng et al., *Talking Face Generation via Learning Semantic and Temporal
Synchronous Landmarks* (ICPR 2020). Trained on synthetic speakers only: see the README for how well it does on
real ones."""
WD_INFO = "Trained with a lip-reading judge, for mouth shapes that look like words (paper: word detector loss)."
TR_INFO = ("Trained to change with the sound frame by frame, for tighter timing "
           "(paper: temporal residual loss). Both off: Baseline, the closest to real mouths.")
WHOLE_PHOTO, FACE_CROP = "Whole photo", "Face crop (256×256)"
WORD_CONFIDENCE = 0.15  # below this the detector's best word is shown as a guess it is not sure of


def bundled_ffmpeg_first() -> bool:
    """Put the pip-installed ffmpeg (imageio-ffmpeg's static build, which the pipeline encodes with) first on this
    process's PATH, for Gradio's streaming video output.

    Why: Gradio starts `ffmpeg` three times for every streamed piece (its sound, its AAC, its mux). Debian's
    ffmpeg, linked against ~100 shared libraries, takes 70-160 ms just to start, the static build ~10 ms: Gradio
    has a piece ready in 0.15-0.20 s instead of 0.30-0.43 s (docs/benchmarks.md), on the way to the first moving
    frame, and leaves that CPU to the frames. False where it cannot be done (no bundled binary, no link)."""
    try:
        from talkface.tempdir import new_dir
        from talkface.video import ffmpeg_exe

        folder = new_dir("bin-")
        (folder / "ffmpeg").symlink_to(ffmpeg_exe())
    except (OSError, RuntimeError) as exc:  # imageio-ffmpeg raises RuntimeError without its binary
        log.info("Gradio's streaming keeps the system's ffmpeg: %s", exc)
        return False
    os.environ["PATH"] = os.pathsep.join([str(folder), os.environ.get("PATH", "")])
    return True


# Gradio's streaming video output needs ffmpeg and the system's ffprobe (it re-muxes each segment): where they
# are, the page plays each second of the video as soon as it is made; elsewhere it shows the video when done
STREAMING = os.environ.get("TALKFACE_STREAM") != "0" and bool(shutil.which("ffprobe"))
if STREAMING:
    bundled_ffmpeg_first()
    STREAMING = bool(shutil.which("ffmpeg"))


def photo_input(**kwargs) -> gr.Image:
    """A gr.Image that hands the pipeline the uploaded file as it is (EXIF, CMYK, 16-bit and transparency are
    handled in one place, talkface.face.load_image), and refuses a file that is not an image in a plain
    sentence: Gradio opens the upload with PIL before our function runs, and would fail there with a
    technical message. (Wrapped on the instance: subclassing a component makes Gradio write a .pyi file.)"""
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except PIL.Image.DecompressionBombError as exc:
            raise gr.Error("This picture has too many pixels to be a photo TalkFace can use; "
                           "please use a smaller photo.") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise gr.Error("This file is not an image TalkFace can read; please use a JPEG or PNG photo.") from exc

    image.preprocess = checked
    return image


class TalkFaceApp:
    """The app's state: one pipeline loaded on first use, and a temporary folder per request."""

    def __init__(self, checkpoint_dir: str | os.PathLike | None = None, max_seconds: float = MAX_SECONDS):
        self.checkpoint_dir = checkpoint_dir
        self.max_seconds = max_seconds
        # inside the process's temporary folder: removed at exit, and by the next start if this process is killed
        self.work_dir = new_dir("app-")
        self._pipeline: TalkingFacePipeline | None = None
        self._lock = threading.Lock()

    def pipeline(self) -> TalkingFacePipeline:
        """Loaded on the first request, so the app starts (and says what is missing) even without checkpoints;
        a failed load is retried on the next request."""
        with self._lock:
            if self._pipeline is None:
                self._pipeline = TalkingFacePipeline.from_pretrained(checkpoint_dir=self.checkpoint_dir)
            return self._pipeline

    def _request_dir(self) -> Path:
        cutoff = time.time() - KEEP_SECONDS
        for old in self.work_dir.iterdir():
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.work_dir))

    def generate(self, photo: str | None, audio: str | None, wd: bool, tr: bool, compare: bool,
                 articulation: float = 1.0, output: str = WHOLE_PHOTO, still: bool = False,
                 progress: gr.Progress = gr.Progress(),  # noqa: B008 (how Gradio injects it)
                 on_chunk: Callable[[Path], None] | None = None) -> Iterator[tuple]:
        """Photo + speech -> (status, aligned face, video, panel video, comparison video, preview frames, slider,
        first preview frame, mouth plot, words, details). Yields the aligned face first, as soon as it is found
        (before the models are loaded). Raises gr.Error with a plain sentence (the API's behaviour; the page
        keeps its last result instead: ``generate_in_page``)."""
        if not photo:
            raise gr.Error("Please add a photo of a face (upload one or take one with the webcam).")
        if not audio:
            raise gr.Error("Please add a speech recording (upload one or record with the microphone).")
        out = self._request_dir()
        try:
            progress(0.0, desc="Finding and aligning the face")
            start = time.perf_counter()
            aligned = TalkingFacePipeline.align(photo)
            seconds = {"face": time.perf_counter() - start}
            if aligned.num_faces > 1:
                gr.Warning(f"{aligned.num_faces} faces were found in the photo; the largest one is used.")
            yield ("Making the video…", aligned_preview(aligned), gr.skip(), gr.skip(),
                   gr.update(value=None, visible=compare), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                   gr.skip())
            pipe = self.pipeline()
            progress(0.03, desc="Reading the speech")
            read = time.perf_counter()
            speech = pipe.load_speech(audio, self.max_seconds)
            seconds["audio"] = time.perf_counter() - read
            name = ablation(wd, tr)
            result = pipe.run(aligned, speech, a2l=name, compare=compare, panels=True,
                              articulation=float(articulation), full_frame=output != FACE_CROP, still=bool(still),
                              out=out / _video_name(photo, name), max_seconds=None,
                              progress=lambda f, message: progress(f, desc=message), on_chunk=on_chunk)
            result.seconds.update(seconds)  # the stages that ran here, before the pipeline
            result.wall += sum(seconds.values())
            previews = []
            for frame in result.preview:
                panel = frame.panel()
                zoom = max(1, PREVIEW_WIDTH // panel.shape[1])  # small generators' frames, shown large
                panel = cv2.resize(panel, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
                path = out / f"preview_{frame.index:06d}.jpg"
                cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
                previews.append((frame.time, str(path)))
        except TalkFaceError as exc:
            shutil.rmtree(out, ignore_errors=True)
            raise gr.Error(str(exc)) from exc
        except Exception as exc:
            shutil.rmtree(out, ignore_errors=True)
            log.exception("generation failed")
            raise gr.Error("Something went wrong while making the video; please try again or use other files.") \
                from exc
        finally:
            release_memory()  # a failed request's too: the server returns to its idle size (bench/load.py)
        yield (
            f"Done: {result.num_frames} frames ({result.duration:.1f} s of speech) in "
            f"{result.wall:.1f} s.",
            aligned_preview(result.aligned),
            str(result.video_path),
            str(result.panel_video_path),
            gr.update(value=str(result.compare_video_path) if compare else None, visible=compare),
            previews,
            gr.update(value=0, minimum=0, maximum=max(previews[-1][0], 0.04), step=0.04, visible=True),
            previews[0][1],
            mouth_opening_figure(result),
            _words(result),
            _details(result),
        )

    def generate_in_page(self, photo: str | None, audio: str | None, wd: bool, tr: bool, compare: bool,
                         articulation: float = 1.0, output: str = WHOLE_PHOTO, still: bool = False,
                         progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008
        """``generate`` for the page's button, with one more output first, the live video: with STREAMING, each
        second of the video plays there as soon as it is made, and the finished mp4 replaces it. A bad input
        keeps the last result on the page and says why in the status line (until the next action) and in a
        notice, instead of replacing every output by an error badge."""
        skip = [gr.skip()] * len(OUTPUT_NAMES)
        try:
            if not STREAMING:
                for update in self.generate(photo, audio, wd, tr, compare, articulation, output, still, progress):
                    yield (gr.skip(), *update)
                return
            events: queue.Queue = queue.Queue()

            def work() -> None:
                try:
                    for update in self.generate(photo, audio, wd, tr, compare, articulation, output, still,
                                                progress, on_chunk=lambda path: events.put(("chunk", path))):
                        events.put(("update", update))
                    events.put(("done", None))
                except BaseException as exc:  # handed to the request's own thread, raised there
                    events.put(("error", exc))

            # the worker carries the request's context, so that its progress reports reach the page
            threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True).start()
            streaming, start = False, time.perf_counter()
            while True:
                kind, value = events.get()
                if kind == "chunk":
                    if not streaming:  # the live video takes the finished one's place while it plays
                        streaming = True
                        # how long a person waits, on the server's side (bench/first_frame.py breaks it down)
                        log.info("first piece of the live video %.2f s after the request", time.perf_counter() - start)
                        yield (gr.update(value=str(value), visible=True), *skip[:2], gr.update(visible=False),
                               *skip[3:])
                    else:
                        yield (str(value), *skip)
                elif kind == "update":
                    final = value[2] is not None and not isinstance(value[2], dict)
                    if final and streaming:  # the finished mp4 (the speech as recorded) back in its place
                        status, aligned, video, *rest = value
                        yield (gr.update(visible=False), status, aligned, gr.update(value=video, visible=True),
                               *rest)
                    else:
                        yield (gr.skip(), *value)
                elif kind == "error":
                    raise value
                else:
                    return
        except gr.Error as exc:
            gr.Warning(exc.message, title="Could not make the video")
            yield (gr.skip(), f"⚠ **Could not make the video.** {exc.message}", *skip[1:])

    @staticmethod
    def check_photo(photo: str | None) -> str:
        """The status line when a photo arrives: a plain sentence if it cannot be used, else what was found."""
        if not photo:
            return ""
        try:
            aligned = TalkingFacePipeline.align(photo)
        except TalkFaceError as exc:
            return f"⚠ **This photo cannot be used.** {exc}"
        extra = f" ({aligned.num_faces} faces: the largest one will speak)" if aligned.num_faces > 1 else ""
        return f"✓ A face was found{extra}."

    def check_speech(self, audio: str | None) -> str:
        """The status line when speech arrives: a plain sentence if it cannot be used, else its length."""
        if not audio:
            return ""
        try:
            speech = TalkingFacePipeline.load_speech(audio, self.max_seconds)
        except TalkFaceError as exc:
            return f"⚠ **This speech cannot be used.** {exc}"
        kind = "stereo" if speech.channels > 1 else "mono"
        return f"✓ {speech.duration:.1f} s of sound, {speech.sample_rate / 1000:g} kHz {kind} (the video keeps it so)."

    @staticmethod
    def show_frame(seconds: float, previews: list[tuple[float, str]]) -> str | None:
        """The sampled frame nearest to the slider's time."""
        if not previews:
            return None
        return min(previews, key=lambda p: abs(p[0] - seconds))[1]


OUTPUT_NAMES = ("status", "aligned", "video", "panels", "compare", "previews", "slider", "frame", "plot", "words",
                "details")


def _video_name(photo: str, a2l: str) -> str:
    """What the download is called: the photo's name, the model and the time (not talkface.mp4 every time)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(photo).stem).strip("_")[:40] or "photo"
    return f"{stem}_{a2l}_{time.strftime('%Y%m%d-%H%M%S')}.mp4"


def _words(result) -> str:
    """The word detector's read-out, for what it is: the closest of the 500 LRW words it knows, and how sure."""
    (best, p), rest = result.words[0], result.words[1:]
    best, rest = best.lower(), [(w.lower(), q) for w, q in rest]
    if p < WORD_CONFIDENCE:
        return (f"The word detector is not sure: none of the 500 words it knows (LRW's vocabulary) fits these lips "
                f"well (closest *{best}*, {p:.0%}). It checks the landmarks; it is not a lip-reader.")
    others = ", ".join(f"*{w}* {q:.0%}" for w, q in rest[:2])
    return (f"Closest of the 500 words the word detector knows (LRW's vocabulary): **{best}** ({p:.0%}); then "
            f"{others}. It checks the landmarks; it is not a lip-reader.")


# a client's videos waiting or being made at once
CLIENT_LIMIT = 2
TOO_MANY = (f"You already have {CLIENT_LIMIT} videos waiting or being made; please wait for one to finish "
            "before asking for another.")


def client_key(headers, host: str) -> str:
    """Who is asking: the first address of X-Forwarded-For (a Space's proxy puts the client there), else the
    connection's."""
    forwarded = headers.get("x-forwarded-for", "") if headers else ""
    return forwarded.split(",")[0].strip() or host or "unknown"


def unfinished_videos(demo: gr.Blocks, key: str) -> int:
    """The client's requests in the "generate" group that wait in Gradio's queue or run now. Read off the queue
    itself, so nothing is left to count down when a request fails before its function runs (a bad upload) or
    leaves the queue unrun. Gradio's own structures: pinned version; if they change, nobody is limited."""
    try:
        queue = demo._queue
        waiting = queue.event_queue_per_concurrency_id.get("generate")
        events = list(waiting.queue if waiting is not None else [])
        events += [event for job in queue.active_jobs if job for event in job]
        return sum(1 for event in events if event.concurrency_id == "generate" and client_key(
            event.request.headers, event.request.client.host if event.request.client else "") == key)
    except AttributeError:
        log.warning("Gradio's queue has changed: the per-client limit is off")
        return 0


class QueueDoor:
    """ASGI middleware on Gradio's app: a request to make a video is refused at the queue's door, with HTTP 429 and
    a sentence, when its client already has CLIENT_LIMIT unfinished (``unfinished_videos``, plus joins still
    being let in). Gradio's queue has no per-client limit, and a function runs only once its request leaves the
    queue: too late to stop one script from filling every place."""

    def __init__(self, app, demo: gr.Blocks, limit: int = CLIENT_LIMIT, count=unfinished_videos):
        self.app, self.demo, self.limit, self.count = app, demo, limit, count
        self.fn_indices = video_events(demo)
        self.joining: dict[str, int] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/queue/join"):
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            fn_index = json.loads(body).get("fn_index")
        except (ValueError, AttributeError):
            fn_index = None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = client_key(headers, (scope.get("client") or ("",))[0])
        counted = fn_index in self.fn_indices
        if counted:
            if self.count(self.demo, key) + self.joining.get(key, 0) >= self.limit:
                from starlette.responses import JSONResponse

                return await JSONResponse({"detail": TOO_MANY}, status_code=429)(scope, receive, send)
            self.joining[key] = self.joining.get(key, 0) + 1
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, send)  # the join's answer comes once the request is in the queue
        finally:
            if counted:
                self.joining[key] -= 1


def video_events(demo: gr.Blocks) -> set[int]:
    """The fn indices of the events that make a video (the button, the example click, the API)."""
    return {i for i, fn in demo.fns.items() if fn.fn is not None and "generate" in fn.fn.__name__}


def _details(result) -> str:
    s = result.seconds
    stages = ", ".join(f"{name} {s[name]:.1f} s" for name in ("audio", "face", "a2l", "words", "heatmaps", "l2f",
                                                             "video") if name in s)
    lines = [f"**{ABLATIONS[result.a2l]}** · articulation {result.articulation:g} · {result.num_frames} frames "
             f"({result.duration:.2f} s of speech) · "
             f"made in {result.wall:.1f} s ({stages}; L2F runs beside the rest)"]
    lines += [f"⚠ {note}" for note in result.notes]
    timeline = " · ".join(f"{t:.1f} s {word}" for t, word, _ in result.word_timeline[:TIMELINE_ENTRIES])
    more = " …" if len(result.word_timeline) > TIMELINE_ENTRIES else ""
    lines.append(f"Word by word (the detector's best guess per 1-second window): {timeline}{more}")
    return "\n\n".join(lines)


CSS = """
#talkface-status { min-height: 1.6em; }
#talkface-status p { margin: 0.2em 0; }
"""


def build_demo(app: TalkFaceApp) -> gr.Blocks:
    with gr.Blocks(title="TalkFace", delete_cache=(1800, KEEP_SECONDS)) as demo:
        gr.Markdown(INTRO)
        missing = missing_checkpoints(app.checkpoint_dir)
        if missing:
            gr.Markdown(f"⚠ **Checkpoint file missing: `{missing[0]}`** "
                        f"({len(missing)} file(s) in all) — generating will fail until it is in place.")
        with gr.Row():
            with gr.Column(scale=2, min_width=320) as input_column:
                photo = photo_input(label="Photo of a face", sources=["upload", "webcam"], height=240,
                                    elem_id="talkface-photo")
                photo_note = gr.Markdown("", elem_id="talkface-photo-note")
                audio = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"],
                                 elem_id="talkface-audio")
                speech_note = gr.Markdown(f"Up to {app.max_seconds:g} s; any common audio format.",
                                          elem_id="talkface-speech-note")
                default_wd, default_tr = switches(DEFAULT_A2L)
                wd = gr.Checkbox(value=default_wd, label="WD: word detector", info=WD_INFO, elem_id="talkface-wd")
                tr = gr.Checkbox(value=default_tr, label="TR: temporal sync", info=TR_INFO, elem_id="talkface-tr")
                compare = gr.Checkbox(value=False, label="Compare all four models side by side",
                                      info="Baseline, +WD, +TR, +WD+TR on the same speech (about 4× slower).")
                articulation = gr.Slider(0, MAX_ARTICULATION, value=1.0, step=0.1,
                                         label="Articulation: how far the mouth moves",
                                         info="1 is as measured on real speakers; 0 keeps the mouth still.",
                                         elem_id="talkface-articulation")
                with gr.Row():
                    output = gr.Radio([WHOLE_PHOTO, FACE_CROP], value=WHOLE_PHOTO, label="Video",
                                      elem_id="talkface-output")
                    still = gr.Checkbox(value=False, label="Still head", info="No blinks or head motion.",
                                        elem_id="talkface-still")
                button = gr.Button("Generate", variant="primary", elem_id="talkface-generate")
                status = gr.Markdown("", elem_id="talkface-status")  # under the button, where the user just looked
            with gr.Column(scale=5):
                with gr.Row():
                    live = gr.Video(label="Talking face, live while it is made", height=480, streaming=True,
                                    autoplay=True, interactive=False, visible=False, elem_id="talkface-live",
                                    scale=3)
                    video = gr.Video(label="Talking face, with the speech as recorded", height=480,
                                     interactive=False, autoplay=False, elem_id="talkface-video", scale=3)
                    with gr.Column(scale=1, min_width=160):
                        aligned = gr.Image(label="Face found", height=200, interactive=False,
                                           elem_id="talkface-aligned")
                        words = gr.Markdown("", elem_id="talkface-words")
                gr.Markdown("**Mouth opening against the speech**")
                plot = gr.Plot(show_label=False, elem_id="talkface-plot")
                compare_video = gr.Video(show_label=False, interactive=False, visible=False, height=420,
                                         elem_id="talkface-compare")
                with gr.Accordion("Inside: landmarks → heatmaps → frames", open=True):
                    panel_video = gr.Video(show_label=False, interactive=False, height=300,
                                           elem_id="talkface-panels")
                    previews = gr.State([])
                    slider = gr.Slider(0, 1, value=0, step=0.04, label="Time (s): step through the frames",
                                       visible=False)
                    frame = gr.Image(show_label=False, interactive=False, height=300, elem_id="talkface-frame")
                details = gr.Markdown(elem_id="talkface-details")
        outputs = [status, aligned, video, panel_video, compare_video, previews, slider, frame, plot, words, details]
        inputs = [photo, audio, wd, tr, compare, articulation, output, still]
        # One progress display (on the video), the aligned face shown as soon as it is found; on the page a bad
        # input keeps the last result. The API endpoint raises instead (a client gets the sentence as an error).
        run_in_page = dict(fn=gpu(app.generate_in_page), inputs=inputs, outputs=[live, *outputs],
                           api_visibility="private",
                           concurrency_id="generate", show_progress_on=[video])
        # trigger_mode "once": a page cannot queue a second video while its first is waiting or being made
        button.click(**run_in_page, trigger_mode="once")
        api = gr.Button(visible=False)
        api.click(gpu(app.generate), inputs, outputs, api_name="generate", concurrency_id="generate")
        # inputs are checked as they arrive, the reason shown under them; a new input clears the last run's status
        photo.change(lambda p: (app.check_photo(p), ""), photo, [photo_note, status], api_visibility="private",
                     show_progress="hidden")
        audio.change(lambda a: (app.check_speech(a), ""), audio, [speech_note, status], api_visibility="private",
                     show_progress="hidden")
        slider.change(app.show_frame, [slider, previews], frame, api_visibility="private", queue=False)
        with input_column:
            examples = gr.Examples(
                examples=[[str(EXAMPLES / "face.jpg"), str(EXAMPLES / "speech.wav"), default_wd, default_tr, grid,
                           1.0, WHOLE_PHOTO, False] for grid in (False, True)],
                inputs=inputs, cache_examples=False, elem_id="talkface-examples", api_visibility="private",
                label="Examples: one click runs them (the second compares all four models)",
            )
        # one click fills the inputs, then runs the same event as the button: in the "generate" concurrency
        # group (one video at a time on the server) and not an API endpoint of its own (run_on_click would be both)
        examples.load_input_event.then(**run_in_page, trigger_mode="once")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TalkFace demo (Gradio).")
    parser.add_argument("--checkpoints", default=os.environ.get("TALKFACE_CHECKPOINTS"),
                        help="folder with the checkpoints (default: assets/checkpoints)")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="longest speech accepted")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    app = TalkFaceApp(args.checkpoints, args.max_seconds)
    for path in missing_checkpoints(args.checkpoints):
        log.warning("checkpoint file missing: %s", path)
    # a plain `kill` (SIGTERM) should clean up like Ctrl-C does: atexit removes the request folders
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo = build_demo(app)
    demo.queue(default_concurrency_limit=1, max_size=20)
    from starlette.middleware import Middleware

    door = Middleware(QueueDoor, demo=demo)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_FILE_SIZE,
                theme=gr.themes.Soft(), css=CSS, app_kwargs={"middleware": [door]})


if __name__ == "__main__":
    main()
