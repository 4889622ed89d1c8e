"""TalkFace demo: one photo + one speech recording -> a video of that face saying it (Gradio Blocks).

    python app.py                                  # http://127.0.0.1:7860, bundled checkpoints
    python app.py --checkpoints DIR --port 7861    # other checkpoints (or TALKFACE_CHECKPOINTS=DIR)
    python app.py --max-seconds 30                 # audio length limit (or TALKFACE_MAX_SECONDS)

Thin on purpose: every step is `talkface.pipeline`; this file turns its errors into plain messages, keeps
each request's files in one temporary folder, and lays the results out.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import gradio as gr

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
One face photo and a speech recording in, a video of that face saying it out. Audio → 68 facial landmarks
per frame (A2L) → frames (L2F), after Zheng et al., *Talking Face Generation via Learning Semantic and
Temporal Synchronous Landmarks* (ICPR 2020). **WD** (word detector) and **TR** (temporal residual) pick which
of the four trained A2L models speaks (both off, Baseline, follows real mouths best); *compare all four* runs them
side by side; **articulation** sets how far the mouth moves."""


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
        except (OSError, ValueError, SyntaxError) as exc:
            raise gr.Error("This file is not an image TalkFace can read; please use a JPEG or PNG photo.") from exc

    image.preprocess = checked
    return image


class TalkFaceApp:
    """The app's state: one pipeline loaded on first use, and a temporary folder per request."""

    def __init__(self, checkpoint_dir: str | os.PathLike | None = None, max_seconds: float = MAX_SECONDS):
        self.checkpoint_dir = checkpoint_dir
        self.max_seconds = max_seconds
        self.work_dir = Path(tempfile.mkdtemp(prefix="talkface-app-"))
        atexit.register(shutil.rmtree, self.work_dir, ignore_errors=True)
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
                 articulation: float = 1.0,
                 progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008 (how Gradio injects it)
        """Photo + speech -> (aligned face, video, panel video, comparison video, preview frames, slider,
        first preview frame, mouth plot, top-5 words, details). Yields the aligned face first."""
        if not photo:
            raise gr.Error("Please add a photo of a face (upload one or take one with the webcam).")
        if not audio:
            raise gr.Error("Please add a speech recording (upload one or record with the microphone).")
        out = self._request_dir()
        try:
            pipe = self.pipeline()
            progress(0.0, desc="Reading the speech")
            start = time.perf_counter()
            speech = pipe.load_speech(audio, self.max_seconds)
            progress(0.05, desc="Finding and aligning the face")
            read = time.perf_counter()
            aligned = pipe.align(photo)
            seconds = {"audio": read - start, "face": time.perf_counter() - read}
            if aligned.num_faces > 1:
                gr.Warning(f"{aligned.num_faces} faces were found in the photo; the largest one is used.")
            yield (aligned_preview(aligned), None, None, gr.update(value=None, visible=compare), [],
                   gr.update(value=0, maximum=1, visible=False), None, None, None, "")
            result = pipe.run(aligned, speech, a2l=ablation(wd, tr), compare=compare, panels=True,
                              articulation=float(articulation), out=out / "talkface.mp4", max_seconds=None,
                              progress=lambda f, message: progress(f, desc=message))
            result.seconds.update(seconds)  # the stages that ran here, before the pipeline
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
            _release_memory()
        yield (
            aligned_preview(result.aligned),
            str(result.video_path),
            str(result.panel_video_path),
            gr.update(value=str(result.compare_video_path) if compare else None, visible=compare),
            previews,
            gr.update(value=0, minimum=0, maximum=max(previews[-1][0], 0.04), step=0.04, visible=True),
            previews[0][1],
            mouth_opening_figure(result),
            dict(result.words),
            _details(result),
        )

    @staticmethod
    def show_frame(seconds: float, previews: list[tuple[float, str]]) -> str | None:
        """The sampled frame nearest to the slider's time."""
        if not previews:
            return None
        return min(previews, key=lambda p: abs(p[0] - seconds))[1]


def _release_memory() -> None:
    """Hand freed heap back to the system after a request: glibc keeps it in per-thread arenas otherwise, and a
    few bursts of requests left the server at 2-3x its idle memory (bench/load.py). A no-op off glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _details(result) -> str:
    s = result.seconds
    stages = ", ".join(f"{name} {s[name]:.1f} s" for name in ("audio", "face", "a2l", "words", "heatmaps", "l2f",
                                                             "video") if name in s)
    lines = [f"**{ABLATIONS[result.a2l]}** · articulation {result.articulation:g} · {result.num_frames} frames "
             f"({result.duration:.2f} s of speech) · "
             f"made in {sum(s.values()):.1f} s ({stages})"]
    lines += [f"⚠ {note}" for note in result.notes]
    timeline = " · ".join(f"{t:.1f} s {word}" for t, word, _ in result.word_timeline[:TIMELINE_ENTRIES])
    more = " …" if len(result.word_timeline) > TIMELINE_ENTRIES else ""
    lines.append(f"Word by word (the detector's best guess per 1-second window): {timeline}{more}")
    return "\n\n".join(lines)


def build_demo(app: TalkFaceApp) -> gr.Blocks:
    with gr.Blocks(title="TalkFace", delete_cache=(1800, KEEP_SECONDS)) as demo:
        gr.Markdown(INTRO)
        missing = missing_checkpoints(app.checkpoint_dir)
        if missing:
            gr.Markdown(f"⚠ **Checkpoint file missing: `{missing[0]}`** "
                        f"({len(missing)} file(s) in all) — generating will fail until it is in place.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300) as input_column:
                photo = photo_input(label="Photo of a face", sources=["upload", "webcam"], height=260,
                                    elem_id="talkface-photo")
                audio = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"],
                                 elem_id="talkface-audio")
                gr.Markdown(f"Up to {app.max_seconds:g} seconds of speech; any common audio format.")
                default_wd, default_tr = switches(DEFAULT_A2L)
                with gr.Row():
                    wd = gr.Checkbox(value=default_wd, label="WD: word detector loss")
                    tr = gr.Checkbox(value=default_tr, label="TR: temporal residual loss")
                compare = gr.Checkbox(value=False, label="Compare all four (Baseline, +WD, +TR, +WD+TR)")
                articulation = gr.Slider(0, MAX_ARTICULATION, value=1.0, step=0.1,
                                         label="Articulation: how far the mouth moves (1: as calibrated on real video)",
                                         elem_id="talkface-articulation")
                button = gr.Button("Generate", variant="primary", elem_id="talkface-generate")
            with gr.Column(scale=2):
                with gr.Row():
                    aligned = gr.Image(label="What the system saw", height=300, interactive=False)
                    video = gr.Video(label="Talking face (with the speech)", height=300, interactive=False,
                                     autoplay=False, elem_id="talkface-video")
                panel_video = gr.Video(label="Landmarks | heatmaps | frames, in sync", interactive=False,
                                       height=300, elem_id="talkface-panels")
                compare_video = gr.Video(label="The four A2L models: Baseline, +WD / +TR, +WD+TR",
                                         interactive=False, visible=False, height=420, elem_id="talkface-compare")
                previews = gr.State([])
                slider = gr.Slider(0, 1, value=0, step=0.04, label="Time (s): step through the frames",
                                   visible=False)
                frame = gr.Image(label="Landmarks | heatmaps | frame at that time", interactive=False, height=300)
                with gr.Row():
                    plot = gr.Plot(label="Mouth opening against the speech", scale=2)
                    words = gr.Label(num_top_classes=5, label="What the lips say (word detector, top 5)", scale=1,
                                     show_heading=False)
                details = gr.Markdown(label="Details")
        outputs = [aligned, video, panel_video, compare_video, previews, slider, frame, plot, words, details]
        generate = gpu(app.generate)
        inputs = [photo, audio, wd, tr, compare, articulation]
        button.click(generate, inputs, outputs, api_name="generate",
                     concurrency_id="generate")
        slider.change(app.show_frame, [slider, previews], frame, api_visibility="private", queue=False)
        with input_column:
            gr.Examples(
                examples=[[str(EXAMPLES / "face.jpg"), str(EXAMPLES / "speech.wav"), default_wd, default_tr, grid, 1.0]
                          for grid in (False, True)],
                example_labels=[f"Astronaut, {ABLATIONS[DEFAULT_A2L]}", "Astronaut, compare all four"],
                inputs=inputs, outputs=outputs, fn=generate,
                run_on_click=True, cache_examples=False, label="Examples (one click runs them)",
            )
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
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_FILE_SIZE,
                theme=gr.themes.Soft())


if __name__ == "__main__":
    main()
