"""Photo + speech -> talking face: the paper's two stages end to end, for the app, the CLI and the benchmarks.

    pipe = TalkingFacePipeline.from_pretrained()                  # bundled checkpoints, offline; GPU if present
    result = pipe.run("face.jpg", "speech.wav", out="out.mp4")   # landmarks, mouth opening, words, video paths

No frame stack is ever held, whatever the audio length: A2L runs over the speech in overlapping windows, a few
seconds ahead of the frames (``_Tracks``), and heatmaps and L2F go `batch_size` frames at a time straight into the
video writers.
Only `preview_frames` evenly spaced frames are kept, for the app's frame slider. What does grow with the audio
is small: the waveform, its MFCCs and the landmark tracks (T x 68 x 2); a 10-minute input peaked 0.3 GB above a
1-minute one, mostly the one-shot MFCC of the whole waveform.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import PIL.Image
import torch
from torch import nn

from talkface import drawing, release_memory
from talkface.audio import FPS, MAX_SECONDS, SAMPLE_RATE, Speech, check_speech, load_speech, mfcc_windows
from talkface.backends import (
    BACKENDS,
    candidates,
    choose,
    int8_available,
    int8_generator,
    native_bf16,
    onnx_generator,
    remembered,
)
from talkface.checkpoints import ABLATIONS, BUNDLED, load_checkpoint
from talkface.composite import MAX_SIDE, PasteBack
from talkface.data.articulation import living_head
from talkface.data.lrw import lrw_vocabulary
from talkface.data.render import blink_frame
from talkface.errors import CheckpointError, TalkFaceError
from talkface.face import (
    CROP_SIZE,
    AlignedFace,
    align_photo,
    denormalise_landmarks,
    mouth_opening,
    normalise_landmarks,
)
from talkface.losses import WORD_FRAMES
from talkface.renderer import L2FRenderer, to_pixels
from talkface.tempdir import new_dir
from talkface.video import AAC_CODER, OPENH264_MAX_MACROBLOCKS, VideoWriter, h264_encoders

# The default A2L: the one whose mouth follows real people best (train/real_video.py on GRID clips; README).
DEFAULT_A2L = "baseline"
log = logging.getLogger(__name__)
MAX_ARTICULATION = 2.0
CHECKPOINT_NAMES = ("l2f", "word_detector", *(f"a2l_{name}" for name in ABLATIONS))
WORD_STRIDE = 12  # about half a second between read-out windows
EXAMPLE_PHOTO = BUNDLED.parent / "examples" / "face.jpg"  # the bundled example, also the bf16 and int8 paths' check
# The shortest streamed piece: Gradio's streaming output decodes each piece's sound and fails on one of a frame or
# two (640 samples, under one AAC frame: "Output file #0 does not contain any stream"), failing the request;
# a short remainder joins the piece before it, a video this short is not streamed.
MIN_SEGMENT_FRAMES = 5
AHEAD_AFTER = 2.0  # seconds of a streamed video made one batch at a time before L2F runs ahead (``_one_ahead``)
FAST_ENCODE_PIXELS = 512 * 512  # above this the videos are encoded with LARGE_CODEC (or LARGE_PRESET)
# OpenH264 where the bundled ffmpeg has it: half x264's CPU time on a whole photo (talkface.video); otherwise x264
# superfast with B-frames and macroblock tree back on, the cheapest motion search and one thread: on a mostly still
# photo (1024x1280, 137 frames) 0.62 CPU-s against plain superfast's 1.16, 179 kB against 624, 41.0 dB against
# 43.2 from the frames given. One thread either way, which does not fight L2F's two.
LARGE_CODEC = "libopenh264"
LARGE_PRESET = "superfast"
LARGE_X264 = "bframes=3:mbtree=1:rc-lookahead=10:me=dia:subme=0"

Progress = Callable[[float, str], None]
T = TypeVar("T")
__all__ = ["ABLATIONS", "DEFAULT_A2L", "MAX_ARTICULATION", "TalkingFacePipeline", "TalkingFaceResult", "ablation",
           "articulate", "missing_checkpoints", "switches"]


_SWITCHES = {(False, False): "baseline", (True, False): "wd", (False, True): "tr", (True, True): "wd_tr"}


def ablation(wd: bool, tr: bool) -> str:
    """The A2L checkpoint the app's two toggles select: baseline, wd, tr or wd_tr."""
    return _SWITCHES[wd, tr]


def switches(name: str) -> tuple[bool, bool]:
    """The app's (WD, TR) toggles that select ablation `name`: the inverse of ``ablation``."""
    return next(key for key, value in _SWITCHES.items() if value == name)


_INNER_LIP_PAIRS = ([61, 62, 63], [67, 66, 65])  # upper inner-lip points and the lower ones facing them


def articulate(landmarks: torch.Tensor, reference: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Scale the speech motion of normalised landmarks (T, 68, 2) about the photo's own (68, 2): 0 keeps the
    photo still, 2 moves every point twice as far (like SadTalker's expression scale).

    A2L trained under L2 shrinks the motion toward the mean; each A2L checkpoint records the gain that gives the
    real opening range back, calibrated on real video (``articulation_gain`` in its JSON, written by
    ``train/real_video.py --calibrate``). The pipeline scales by that gain times the user's articulation.
    Lips meet but never pass through each other: where the photo's mouth is open and a frame closes it, the
    closing is scaled only until the inner lips touch (the frame's scale is lowered, never below 1).
    """
    motion = landmarks - reference
    if scale > 1:
        upper, lower = _INNER_LIP_PAIRS
        gap = reference[lower, 1] - reference[upper, 1]  # (3,) canonical y points down
        closing = motion[:, lower, 1] - motion[:, upper, 1]  # (T, 3), negative where the frame closes the mouth
        limit = torch.where(closing < 0, gap / -closing.clamp(max=-1e-9), torch.full_like(closing, scale))
        frame_scale = limit.min(dim=1).values.clamp(min=1.0, max=scale)  # (T,)
        return reference + frame_scale[:, None, None] * motion
    return reference + scale * motion


def missing_checkpoints(checkpoint_dir: str | os.PathLike | None = None) -> list[Path]:
    """Checkpoint files the pipeline needs that are not in `checkpoint_dir` (default: the bundled ones)."""
    root = Path(checkpoint_dir) if checkpoint_dir is not None else BUNDLED
    return [root / f"{name}{suffix}" for name in CHECKPOINT_NAMES for suffix in (".json", ".safetensors")
            if not (root / f"{name}{suffix}").is_file()]


# results


@dataclass
class PreviewFrame:
    """One sampled frame of the generation: what the app's frame slider shows."""

    index: int
    landmarks: np.ndarray  # the predicted landmarks drawn on black, S x S x 3 uint8
    heatmaps: np.ndarray  # the generator's heatmap input, coloured by facial part, S x S x 3 uint8
    frame: np.ndarray  # the generated frame, S x S x 3 uint8

    @property
    def time(self) -> float:
        return self.index / FPS

    def panel(self) -> np.ndarray:
        """Landmarks | heatmaps | frame, side by side and labelled, as in the panel video."""
        return drawing.panel(self.landmarks, self.heatmaps, self.frame)


@dataclass
class TalkingFaceResult:
    """Everything one run produced. Landmarks are in pixels of the 256 x 256 aligned crop."""

    landmarks: np.ndarray  # (T, 68, 2) of the selected A2L model
    mouth_opening: np.ndarray  # (T,) inner-lip gap in crop pixels
    video_path: Path  # generated frames with the speech: the whole photo, or the face crop
    panel_video_path: Path | None  # landmarks | heatmaps | frames, when panels were asked for
    compare_video_path: Path | None  # 2 x 2 grid of the four ablations, when compare was asked for
    tracks: dict[str, np.ndarray]  # ablation -> (T, 68, 2): the selected one, or all four with compare
    words: list[tuple[str, float]]  # the word detector's top 5 over the whole sequence, with probabilities
    word_timeline: list[tuple[float, str, float]]  # (window start in s, top word, probability) per window
    aligned: AlignedFace  # the crop and the landmarks the system saw
    num_faces: int
    preview: list[PreviewFrame]
    waveform: np.ndarray  # the speech at 16 kHz, as the model read it (the videos carry it as recorded)
    a2l: str
    articulation: float = 1.0  # the user's setting (the checkpoint's calibrated gain times this scales the motion)
    full_frame: bool = True  # the main video is the whole photo (else the 256 x 256 face crop)
    still: bool = False  # no blinks or head motion were added
    video_size: tuple[int, int] = (256, 256)  # the main video's (width, height)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage (they overlap: see `wall`)
    # start to finish: less than the stages' sum, as L2F runs ahead of the paste-back and the encoders
    wall: float = 0.0
    notes: list[str] = field(default_factory=list)  # things the person should know (several faces...)

    @property
    def num_frames(self) -> int:
        return len(self.landmarks)

    @property
    def duration(self) -> float:
        return len(self.waveform) / SAMPLE_RATE


# the pipeline


class TalkingFacePipeline:
    """A2L (one of the four ablations) + L2F + the word detector, loaded once and run on many requests."""

    def __init__(self, a2l: dict[str, nn.Module], renderer: L2FRenderer, word_detector: nn.Module,
                 vocabulary: list[str], *, checkpoint_dir: Path):
        self.device = renderer.device
        self.checkpoint_dir = checkpoint_dir
        self.default_a2l = next(iter(a2l))
        self._a2l = dict(a2l)
        self._lock = threading.Lock()
        self.renderer = renderer
        self.word_detector = word_detector
        self.vocabulary = vocabulary

    @classmethod
    def from_pretrained(cls, a2l: str = DEFAULT_A2L, device: str | torch.device | None = None,
                        checkpoint_dir: str | os.PathLike | None = None, backend: str | None = None
                        ) -> TalkingFacePipeline:
        """Load the A2L checkpoint `a2l_<a2l>`, `l2f` and `word_detector` from `checkpoint_dir` (default: the
        bundled assets/checkpoints), on CUDA when there is one. Raises CheckpointError naming a bad file.
        `backend` (default ``TALKFACE_BACKEND``, else "auto"): where L2F's generator runs on a CPU: "torch",
        "onnx" (ONNX Runtime), "bf16" (PyTorch in bfloat16, only on CPUs that compute it natively), "int8"
        (PyTorch with int8 convolutions, x86) or "auto", whichever is fastest on this machine
        (``talkface.backends``)."""
        if a2l not in ABLATIONS:
            raise CheckpointError(f"There is no A2L model '{a2l}'; choose one of {', '.join(ABLATIONS)}.")
        root = Path(checkpoint_dir) if checkpoint_dir is not None else BUNDLED
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        predictor = _load_a2l(root / f"a2l_{a2l}", device)
        renderer = L2FRenderer.from_checkpoint(root / "l2f", device=device)
        _choose_backend(renderer, root / "l2f.safetensors", backend or os.environ.get("TALKFACE_BACKEND", "auto"))
        detector, wd_config = load_checkpoint(root / "word_detector", device=device)
        vocabulary = wd_config.get("vocabulary") or lrw_vocabulary()
        if len(vocabulary) != detector.fc2.out_features:
            raise CheckpointError(f"The checkpoint {root / 'word_detector.json'} knows "
                                  f"{detector.fc2.out_features} words but its vocabulary lists {len(vocabulary)}.")
        return cls({a2l: predictor}, renderer, detector, vocabulary, checkpoint_dir=root)

    def a2l_model(self, name: str) -> nn.Module:
        """The A2L predictor of one ablation, loaded on first use (only a comparison needs all four)."""
        if name not in ABLATIONS:
            raise CheckpointError(f"There is no A2L model '{name}'; choose one of {', '.join(ABLATIONS)}.")
        with self._lock:
            if name not in self._a2l:
                self._a2l[name] = _load_a2l(self.checkpoint_dir / f"a2l_{name}", self.device)
            return self._a2l[name]

    def articulation_gain(self, name: str) -> float:
        """The motion gain A2L checkpoint `name` was calibrated with on real video (1.0 if it records none)."""
        return float(getattr(self.a2l_model(name), "articulation_gain", 1.0))

    # the stages, public so that the app can show the aligned face before the video is done

    @staticmethod
    def align(photo: str | os.PathLike | np.ndarray | PIL.Image.Image) -> AlignedFace:
        """Read a photo of any format and align its largest face (raises FaceError with a plain sentence)."""
        return align_photo(photo)

    @staticmethod
    def load_speech(audio: str | os.PathLike | tuple[int, np.ndarray] | Speech,
                    max_seconds: float | None = MAX_SECONDS) -> Speech:
        """Any audio file or (rate, samples) -> ``Speech``: mono 16 kHz for the model (``.waveform``) and the
        recording as it was made, for the videos; raises AudioError if unusable or silent."""
        speech = load_speech(audio, max_seconds=max_seconds)
        check_speech(speech.waveform)
        return speech

    @torch.inference_mode()
    def predict_landmarks(self, aligned: AlignedFace, waveform: np.ndarray, names: list[str],
                          articulation: float = 1.0) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
        """A2L for each named ablation: (crop pixels (T,68,2) numpy, normalised (T,68,2) tensors) per name,
        the motion scaled by `articulation` (``articulate``)."""
        tracks = _Tracks(self, aligned, waveform, names, articulation, still=True)
        tracks.until(tracks.num_frames)
        return tracks.pixels, tracks.normalised

    @torch.inference_mode()
    def read_words(self, landmarks: torch.Tensor, top: int = 5
                   ) -> tuple[list[tuple[str, float]], list[tuple[float, str, float]]]:
        """The word detector on normalised landmarks (T,68,2): the top words over all 25-frame windows
        (probabilities averaged), and each window's top word with its start time."""
        t = len(landmarks)
        starts = list(range(0, max(1, t - WORD_FRAMES + 1), WORD_STRIDE))
        if t > WORD_FRAMES and starts[-1] != t - WORD_FRAMES:
            starts.append(t - WORD_FRAMES)  # the last frames get a window too
        windows = torch.stack([landmarks[s : s + WORD_FRAMES] for s in starts])
        probs = torch.softmax(self.word_detector(windows.float()), dim=-1).cpu()
        mean = probs.mean(0)
        best = mean.topk(min(top, len(mean)))
        words = [(self.vocabulary[i], float(p)) for p, i in zip(best.values, best.indices)]
        p_top, i_top = probs.max(dim=-1)
        timeline = [(s / FPS, self.vocabulary[i], float(p)) for s, p, i in zip(starts, p_top, i_top.tolist())]
        return words, timeline

    def run(
        self,
        photo: str | os.PathLike | np.ndarray | PIL.Image.Image | AlignedFace,
        audio: str | os.PathLike | tuple[int, np.ndarray] | Speech,
        *,
        a2l: str | None = None,
        compare: bool = False,
        panels: bool = False,
        articulation: float = 1.0,
        full_frame: bool = True,
        max_side: int = MAX_SIDE,
        still: bool = False,
        out: str | os.PathLike | None = None,
        max_seconds: float | None = MAX_SECONDS,
        batch_size: int | None = None,
        preview_frames: int = 48,
        progress: Progress | None = None,
        on_chunk: Callable[[Path], None] | None = None,
        chunk_seconds: float = 0.2,
    ) -> TalkingFaceResult:
        """Photo + speech -> a video of that face saying it (written to `out`, default a new temp dir).

        `compare` also runs the other three A2L ablations and writes `<out>_compare.mp4`, a 2 x 2 grid;
        `panels` writes `<out>_panels.mp4` (landmarks | heatmaps | frames). `articulation` scales how far the
        mouth moves (0 still, 1 as calibrated on real video, up to 2: ``articulate``). `full_frame`: the main
        video is the whole photo, its long side capped at `max_side` (``talkface.composite``), else the aligned
        256 x 256 crop (the panels and the grid are always crops). `still`: no blinks or head motion (by
        default the face blinks and moves its head a little: ``living_head``). All videos carry the speech
        as recorded and have one frame per 1/25 s of it. Raises a TalkFaceError subclass with a plain sentence for
        anything the person can fix. `batch_size` frames go through L2F at once (default: the renderer's, 4, or 8
        where the backend "auto" measured 8 faster on this machine's first run: ``backends.choose``; 16 and more
        are slower on a 2-core CPU, `python bench/run_all.py`) and memory stays flat.
        `on_chunk`: called with each piece of the main video as soon as it is encoded (an MPEG-TS segment with the
        16 kHz speech, next to `out`): the app streams them while the rest is made. The first is `chunk_seconds`
        long, so that something plays early (0.2 s: the first moving frame 1.9-2.3 s after Generate in the
        browser, against 2.7-3.1 s with 0.5 s; bench/first_frame.py), and so is the second: a player that does
        not start on the first piece alone then finds the next one in its first playlist instead of waiting ~1 s
        for the next (8 of 8 runs within 1.2-1.5 s, against 6 of 8 within 2 s); each next one twice as long, up
        to 2 s, as every segment costs the streaming its own mux; none shorter than MIN_SEGMENT_FRAMES.
        """
        began = time.perf_counter()
        report = progress or (lambda fraction, message: None)
        name = a2l or self.default_a2l
        if name not in ABLATIONS:
            raise CheckpointError(f"There is no A2L model '{name}'; choose one of {', '.join(ABLATIONS)}.")
        if not 0.0 <= articulation <= MAX_ARTICULATION:
            raise TalkFaceError(f"Articulation must be between 0 and {MAX_ARTICULATION:g}, not {articulation:g}.")
        if full_frame and max_side < 2:
            raise TalkFaceError(f"The longest side of the video must be at least 2 pixels, not {max_side}.")
        if batch_size is not None and batch_size < 1:
            raise TalkFaceError(f"The batch size must be at least 1 frame, not {batch_size}.")
        batch_size = batch_size or self.renderer.batch_size
        names = list(ABLATIONS) if compare else [name]
        seconds: dict[str, float] = {}

        report(0.0, "Reading the speech")
        with _timed(seconds, "audio"):
            speech = self.load_speech(audio, max_seconds)
        waveform = speech.waveform
        if not isinstance(photo, AlignedFace):
            report(0.05, "Finding and aligning the face")
            with _timed(seconds, "face"):
                photo = self.align(photo)
        aligned = photo
        notes = []
        if aligned.num_faces > 1:
            notes.append(f"{aligned.num_faces} faces were found in the photo; the largest one is used.")

        report(0.15, "Predicting landmarks from the speech")
        with _timed(seconds, "a2l"):
            for other in names:
                self.a2l_model(other)  # a missing comparison checkpoint fails here, before any work
            tracks = _Tracks(self, aligned, waveform, names, articulation, still, seconds)
        # the first seconds only (timed as "a2l" too): the rest as the frames need it, so that a video streamed
        # while it is made starts as soon for two minutes of speech as for two seconds (``_Tracks``)
        tracks.until(1)

        # out=None: a new file in the process's temporary folder (talkface.tempdir), removed when the process ends
        video = Path(out) if out is not None else new_dir("run-") / "talkface.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        panel_video = video.with_name(f"{video.stem}_panels.mp4") if panels else None
        compare_video = video.with_name(f"{video.stem}_compare.mp4") if compare else None
        paste = None
        if full_frame:
            with _timed(seconds, "paste"):  # the part of the photo that moves, grown as the tracks come
                paste = PasteBack(aligned, max_side, region="lower" if still else "face",
                                  rest=self._rest_frame(aligned), extent=tracks.pixels[name][: tracks.ready])
        # a video too short to be cut into pieces Gradio can stream is just shown when done (MIN_SEGMENT_FRAMES)
        streamable = on_chunk is not None and tracks.num_frames >= MIN_SEGMENT_FRAMES
        chunks = (on_chunk, max(MIN_SEGMENT_FRAMES, round(chunk_seconds * FPS))) if streamable else None
        try:
            preview = self._generate(aligned, speech, tracks, name, video, panel_video, compare_video, paste,
                                     batch_size, preview_frames, seconds, report, chunks)
            with _timed(seconds, "words"):  # once the video is made: nothing in it waits for them
                words, timeline = self.read_words(tracks.normalised[name])
        finally:
            release_memory()  # what the frames' layers kept on the heap (talkface._malloc_settings)
        report(1.0, "Done")
        return TalkingFaceResult(
            landmarks=tracks.pixels[name],
            mouth_opening=mouth_opening(tracks.pixels[name]),
            video_path=video,
            panel_video_path=panel_video,
            compare_video_path=compare_video,
            tracks=tracks.pixels,
            words=words,
            word_timeline=timeline,
            aligned=aligned,
            num_faces=aligned.num_faces,
            preview=preview,
            waveform=waveform,
            a2l=name,
            articulation=articulation,
            full_frame=full_frame,
            still=still,
            video_size=(paste.width, paste.height) if paste else (self.renderer.image_size,) * 2,
            seconds=seconds,
            notes=notes,
            wall=time.perf_counter() - began,
        )

    @torch.inference_mode()
    def _rest_frame(self, aligned: AlignedFace) -> np.ndarray:
        """The generator's frame for the photo's own landmarks: how it renders this face at rest (its colour
        cast, which the paste-back removes)."""
        renderer = self.renderer
        photo = _photo_tensor(aligned)
        points = torch.from_numpy(aligned.landmarks)[None].float()
        frame = to_pixels(renderer(photo, points[0], points))[0]
        return frame

    @torch.inference_mode()
    def _generate(self, aligned: AlignedFace, speech: Speech, landmarks: _Tracks, name: str,
                  video: Path, panel_video: Path | None, compare_video: Path | None, paste: PasteBack | None,
                  batch_size: int, preview_frames: int, seconds: dict[str, float], report: Progress,
                  chunks: tuple[Callable[[Path], None], int] | None = None) -> list[PreviewFrame]:
        """Heatmaps -> L2F -> (blinks) -> (paste-back) -> video writers, `batch_size` frames at a time, the next
        batch's L2F (and A2L's next piece when it gets there) on a worker thread while this one is pasted and
        written (``_one_ahead``; in a streamed video only after its first AHEAD_AFTER seconds); returns the
        sampled preview. Where the tracks blink, L2F draws the eyes open (``_Tracks.eyes_open``) and each
        frame's eyes are then closed (``render.blink_frame``)."""
        renderer = self.renderer
        s = renderer.image_size
        num_frames = landmarks.num_frames
        tracks, eyes_open = landmarks.pixels, landmarks.eyes_open
        keep = set(np.linspace(0, num_frames - 1, min(num_frames, preview_frames)).round().astype(int).tolist())
        photo = _photo_tensor(aligned)
        identity = renderer.prepare(photo, torch.from_numpy(aligned.landmarks))
        preview = []
        with ExitStack() as stack:
            def writer(path: Path, width: int, height: int) -> VideoWriter:
                return stack.enter_context(VideoWriter(path, (width, height), FPS, soundtrack=speech,
                                                       **_encoding(width, height, "veryfast")))

            main = writer(video, paste.width, paste.height) if paste else writer(video, s, s)
            segment, segment_start, segment_frames, segments = None, 0, 0, 0

            def close_segment() -> None:
                """Finish the current segment and hand it over (streamed while the rest is made)."""
                nonlocal segment
                if segment is not None:
                    segment.close()
                    chunks[0](segment.path)
                    segment = None

            stack.callback(lambda: segment is not None and segment.close(ok=False))  # a failed run: no segment
            panel = writer(panel_video, 3 * s, s + drawing.caption_height(s)) if panel_video else None
            grid = writer(compare_video, 2 * s, 2 * s) if compare_video else None

            # CUDA's current device is per thread too: the worker uses this thread's (where "cuda" put the models)
            cuda = torch.cuda.current_device() if renderer.device.type == "cuda" else None

            names = list(tracks)
            ahead: dict[tuple[int, str], Future[torch.Tensor]] = {}  # heatmaps being drawn, by (batch start, track)

            def points(start: int, track: str) -> torch.Tensor:
                """What L2F draws of batch `start` of `track`: its landmarks, with the eyes open if it blinks."""
                drawn = tracks[track] if eyes_open is None else eyes_open[track]
                return torch.from_numpy(drawn[start : min(start + batch_size, num_frames)])

            def render(start: int) -> tuple[dict[str, Callable[[], np.ndarray]], torch.Tensor]:
                """Batch `start` of every track started through L2F (``L2FRenderer.submit``: its frames when called)
                and the heatmaps of the one shown, on a worker thread; the heatmaps of the next (track or batch)
                are drawn while these frames are made, when its landmarks are known by then
                (``L2FRenderer.heatmaps_ahead``)."""
                end = min(start + batch_size, num_frames)
                pending, maps = {}, None
                with torch.inference_mode(), torch.cuda.device(cuda) if cuda is not None else nullcontext():
                    landmarks.until(end)
                    for i, track in enumerate(names):
                        these = points(start, track)
                        with _timed(seconds, "heatmaps"):
                            drawing = ahead.pop((start, track), None)
                            heat = renderer.heatmaps(these) if drawing is None else drawing.result()
                        following = (start, names[i + 1]) if i + 1 < len(names) else (end, names[0])
                        if following[0] < num_frames and landmarks.ready >= min(following[0] + batch_size,
                                                                                num_frames):
                            drawing = renderer.heatmaps_ahead(points(*following))
                            if drawing is not None:
                                ahead[following] = drawing
                        # started, not timed here: "l2f" is the time the main thread waits for its frames
                        pending[track] = renderer.submit(identity, heat, these, pixels=True)
                        if track == name:
                            maps = heat
                    # the next batch's landmarks (A2L's next piece, every 64 windows) while these frames are made
                    next_end = min(end + batch_size, num_frames)
                    if end < num_frames and landmarks.ready < next_end:
                        landmarks.until(next_end)
                        drawing = renderer.heatmaps_ahead(points(end, names[0]))
                        if drawing is not None:
                            ahead[(end, names[0])] = drawing
                return pending, maps

            def run_ahead(start: int) -> bool:
                """Not in the first seconds of a video that is streamed while it is made: its first pieces are
                encoded, handed over and played first (the app's first moving frame), then L2F runs ahead."""
                return chunks is None or start >= AHEAD_AFTER * FPS

            for start, (pending, maps) in _one_ahead(render, range(0, num_frames, batch_size), stack, run_ahead):
                end = min(start + batch_size, num_frames)
                frames = {}
                for track, made in pending.items():
                    with _timed(seconds, "l2f"):
                        frames[track] = made()
                    if eyes_open is not None:
                        with _timed(seconds, "blinks"):
                            _add_blinks(frames[track], eyes_open[track][start:end], tracks[track][start:end])
                report(0.2 + 0.78 * start / num_frames, f"Generating frames {start + 1}-{end} of {num_frames}")
                if paste is not None:
                    with _timed(seconds, "paste"):
                        paste.include(tracks[name][start:end])
                for i in range(end - start):
                    if paste is None:
                        picture = frames[name][i]
                    else:
                        with _timed(seconds, "paste"):
                            picture = paste(frames[name][i], tracks[name][start + i], yuv=True)
                    with _timed(seconds, "video"):
                        main.write(picture)
                        if chunks is not None:
                            t = start + i
                            if segment is None:
                                segment_start = t  # pieces of 1, 1, 2, 4... times the first, up to 2 s
                                segment_frames = min(chunks[1] << max(segments - 1, 0), 2 * FPS)
                                if num_frames - t - segment_frames < MIN_SEGMENT_FRAMES:
                                    segment_frames = num_frames - t  # no short piece at the end: see below
                                samples = speech.waveform[t * SAMPLE_RATE // FPS :
                                                          (t + segment_frames) * SAMPLE_RATE // FPS]
                                segment = VideoWriter(video.with_name(f"{video.stem}.part{segments:04d}.ts"),
                                                      main.size, FPS, samples, SAMPLE_RATE, aac_coder=AAC_CODER,
                                                      **_encoding(*main.size, "ultrafast", "ultrafast", None))
                                segments += 1
                            segment.write(picture)
                            if t + 1 - segment_start == segment_frames:
                                close_segment()
                with _timed(seconds, "video"):
                    for i in range(end - start):
                        t = start + i
                        if panel is None and t not in keep:
                            continue
                        parts = (drawing.draw_track(tracks[name][t], s), drawing.heatmap_picture(maps[i], s),
                                 frames[name][i])
                        if panel is not None:
                            panel.write(drawing.panel(*parts))
                        if t in keep:
                            preview.append(PreviewFrame(t, *parts))
                    if grid is not None:
                        for i in range(end - start):
                            grid.write(drawing.grid([drawing.label(frames[k][i], ABLATIONS[k]) for k in ABLATIONS]))
            close_segment()  # the last, shorter one
            report(0.99, "Finishing the video")
            with _timed(seconds, "video"):
                stack.close()  # flush the encoders and move the finished files into place
        return preview


# helpers


class _Tracks:
    """A run's landmark tracks, filled piece by piece as A2L goes (``LandmarkPredictor.iter_sequence``): the first
    seconds at once, the rest as the frames need them (``until``), so that the video starts as early whatever
    the speech's length. Every ablation asked for advances together.

    `pixels`: (T, 68, 2) crop pixels per ablation, with the head's motion and blinks (``living_head``) unless
    `still`; `eyes_open`: the same without the blinks, which L2F draws (None when `still`); `normalised`: A2L's
    own (T, 68, 2), what the word detector reads. Only frames before `ready` are filled.
    """

    def __init__(self, pipe: TalkingFacePipeline, aligned: AlignedFace, waveform: np.ndarray, names: list[str],
                 articulation: float, still: bool, seconds: dict[str, float] | None = None):
        wav = torch.from_numpy(waveform).to(pipe.device)
        reference, self._similarity = normalise_landmarks(aligned.landmarks)
        self._reference = torch.from_numpy(reference).float().to(pipe.device)
        mfcc: dict[bool, torch.Tensor] = {}  # by the features each model learnt from (audio.mfcc_windows)
        self._pieces, self._scale = {}, {}
        for name in names:
            model = pipe.a2l_model(name)
            energy = bool(getattr(model, "energy", False))
            if energy not in mfcc:
                mfcc[energy] = mfcc_windows(wav, energy=energy)
            self._pieces[name] = model.iter_sequence(mfcc[energy], self._reference)
            self._scale[name] = pipe.articulation_gain(name) * articulation
        self.num_frames = t = len(mfcc[energy])
        self.pixels = {name: np.zeros((t, 68, 2), np.float32) for name in names}
        self.normalised = {name: torch.zeros(t, 68, 2, device=pipe.device) for name in names}
        # L2F draws the moved head with open eyes; the blinks are added to its frames
        self._head = None if still else living_head(t, aligned.landmarks)
        self.eyes_open = None if still else {name: np.zeros((t, 68, 2), np.float32) for name in names}
        self.ready = 0
        self._seconds = seconds if seconds is not None else {}

    @torch.inference_mode()
    def until(self, end: int) -> None:
        """Run A2L until the first `end` frames are filled."""
        while self.ready < min(end, self.num_frames):
            with _timed(self._seconds, "a2l"):
                start, stop = self.ready, None
                for name, pieces in self._pieces.items():
                    piece = articulate(next(pieces), self._reference, self._scale[name])
                    if stop is not None and start + len(piece) != stop:  # the same windows for every model
                        raise RuntimeError(f"A2L '{name}' gave {len(piece)} frames where the others gave "
                                           f"{stop - start}")
                    stop = start + len(piece)
                    self.normalised[name][start:stop] = piece
                    pixels = denormalise_landmarks(piece.cpu().double().numpy(), self._similarity).astype(np.float32)
                    if self._head is not None:
                        self.eyes_open[name][start:stop] = self._head.apply(pixels, blink=False, start=start)
                        pixels = self._head.apply(pixels, start=start)
                    self.pixels[name][start:stop] = pixels
                self.ready = stop


def _choose_backend(renderer: L2FRenderer, checkpoint: Path, backend: str) -> None:
    """Put L2F's generator on the backend asked for (``talkface.backends``); PyTorch where nothing else applies.
    "auto" looks up the choice remembered on this machine first: then only the chosen backend is loaded."""
    if backend not in BACKENDS:
        raise TalkFaceError(f"The backend must be one of {', '.join(BACKENDS)}, not {backend!r}.")
    if backend == "torch" or renderer.device.type != "cpu":
        return
    if backend == "bf16":
        if not native_bf16():
            raise TalkFaceError("This CPU does not compute bfloat16 natively (it needs AVX-512 BF16 or AMX), where "
                                "the bf16 backend would be several times slower: use the torch, onnx or auto backend.")
        renderer.use_bf16()
        return
    if backend == "onnx":
        onnx = onnx_generator(renderer, checkpoint)
        if onnx is None:
            raise TalkFaceError("The ONNX Runtime backend is not available here (is onnxruntime installed?); "
                                "use the torch or auto backend.")
        renderer.use_onnx(onnx)
        return
    if backend == "int8":
        if not int8_available():
            raise TalkFaceError("The int8 backend is not available here (it needs PyTorch's oneDNN int8 "
                                "convolutions, on an x86 CPU); use the torch or auto backend.")
        int8 = int8_generator(renderer, checkpoint, _example_face)
        if int8 is None:
            raise TalkFaceError("The int8 backend could not be set up here (the log above says why); use the torch "
                                "or auto backend.")
        renderer.use_int8(int8)
        return
    names = candidates()
    if names == ["torch"]:
        return
    choice, onnx, int8 = remembered(renderer, checkpoint, names), None, None
    if choice is None:
        onnx = onnx_generator(renderer, checkpoint) if "onnx" in names else None
        face = _example_face() if {"bf16", "int8"} & set(names) else None
        int8 = int8_generator(renderer, checkpoint, lambda: face) if "int8" in names else None
        choice = choose(renderer, checkpoint, names, onnx, face, int8)
    best, renderer.batch_size = choice.backend, choice.batch
    if best == "onnx":
        renderer.use_onnx(onnx or onnx_generator(renderer, checkpoint))
    elif best == "bf16":
        renderer.use_bf16()
    elif best == "int8":
        int8 = int8 or int8_generator(renderer, checkpoint, _example_face)
        renderer.use_int8(int8)  # None (the float32 generator) if it cannot be built any more
        if int8 is None:
            renderer.batch_size = 4  # the batch was measured for int8


def _example_face() -> tuple[torch.Tensor, torch.Tensor] | None:
    """The bundled example photo, aligned, as (3, 256, 256) in [-1, 1] and (68, 2): the real face the bfloat16
    and int8 paths are checked (and int8 calibrated) on before they are used (None, and neither, if it cannot be
    read)."""
    try:
        aligned = TalkingFacePipeline.align(EXAMPLE_PHOTO)
    except (OSError, TalkFaceError) as exc:
        log.warning("bfloat16 and int8 paths not tried: the example photo %s could not be used (%s)",
                    EXAMPLE_PHOTO, exc)
        return None
    return _photo_tensor(aligned), torch.from_numpy(aligned.landmarks).float()


def _photo_tensor(aligned: AlignedFace) -> torch.Tensor:
    """The aligned crop as the generator takes it: (3, 256, 256) float in [-1, 1]."""
    return torch.from_numpy(aligned.image).permute(2, 0, 1).float() / 127.5 - 1


def _large_codec(width: int, height: int) -> str:
    """The encoder for big frames: LARGE_CODEC where ffmpeg has it and the frame is within OpenH264's limit
    (36864 macroblocks, e.g. 4096 x 2304: it refuses a 12-MP photo at its own size), x264 otherwise."""
    fits = -(-width // 16) * -(-height // 16) <= OPENH264_MAX_MACROBLOCKS
    return LARGE_CODEC if fits and LARGE_CODEC in h264_encoders() else "libx264"


def _encoding(width: int, height: int, preset: str, large_preset: str = LARGE_PRESET,
              large_x264: str | None = LARGE_X264) -> dict:
    """VideoWriter's encoder settings for frames of this size, all in one encoder thread, which does not fight L2F's
    two (ffmpeg's CPU for the example's whole photo 0.48 -> 0.44 s, RTF 0.532 -> 0.521: docs/benchmarks.md). x264's
    time grows with the pixels: up to FAST_ENCODE_PIXELS x264 `preset`; above, OpenH264 (_large_codec), or x264
    `large_preset` with `large_x264` where it does not apply (bench/whole_photo.py)."""
    if width * height <= FAST_ENCODE_PIXELS:
        return {"preset": preset, "threads": 1}
    return {"preset": large_preset, "x264": large_x264, "threads": 1, "codec": _large_codec(width, height)}


def _load_a2l(stem: Path, device: torch.device) -> nn.Module:
    """An A2L checkpoint, with the articulation gain its JSON records kept on the model."""
    model, config = load_checkpoint(stem, device=device)
    model.energy = bool(config.get("features", {}).get("energy", False))  # its MFCC windows carry the loudness
    gain = config.get("articulation_gain", 1.0)
    if not isinstance(gain, int | float) or not 0.0 < gain <= 5.0:
        raise CheckpointError(f"The checkpoint {stem}.json records an articulation gain of {gain!r}; "
                              "it must be a number above 0 and at most 5.")
    model.articulation_gain = float(gain)
    return model


def _one_ahead(work: Callable[[int], T], items: Iterable[int], stack: ExitStack,
               ahead: Callable[[int], bool] = lambda item: True) -> Iterator[tuple[int, T]]:
    """(item, work(item)) in order, each item's work done on a worker thread, the next one's while the caller
    uses this one, unless ``ahead(item)`` says not to while the caller uses `item`.

    The pipeline's main thread pastes and encodes a batch while the next one goes through L2F: on a 2-core CPU
    that work otherwise leaves L2F's streams (and a core) waiting. One batch ahead at most, so memory stays
    that of two batches. The worker is shut down with `stack` (after any work in flight has finished)."""
    pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="talkface-ahead"))
    items = iter(items)
    item = next(items, None)
    future = None if item is None else pool.submit(work, item)
    while future is not None:
        result = future.result()
        following = next(items, None)
        future = pool.submit(work, following) if following is not None and ahead(item) else None
        yield item, result
        if following is not None and future is None:  # not run ahead: its work starts now
            future = pool.submit(work, following)
        item = following


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall time of the block to `seconds[stage]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


def _add_blinks(frames: np.ndarray, eyes_open: np.ndarray, landmarks: np.ndarray) -> None:
    """Close the eyes of the frames (N, S, S, 3) whose landmarks (crop pixels) ask it, in place."""
    k = frames.shape[1] / CROP_SIZE
    for i in range(len(frames)):
        if np.abs(landmarks[i, 36:48] - eyes_open[i, 36:48]).max() > 0.25:  # a blink under way
            frames[i] = blink_frame(frames[i], (eyes_open[i] + 0.5) * k - 0.5, (landmarks[i] + 0.5) * k - 0.5)



