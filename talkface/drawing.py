"""What the app and the videos draw around the generated frames: the landmark and heatmap panels, captions, the
comparison grid, the aligned face, and the mouth-opening plot."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from talkface.audio import FPS, SAMPLE_RATE
from talkface.checkpoints import ABLATIONS
from talkface.face import CROP_SIZE, AlignedFace, mouth_opening
from talkface.heatmaps import draw_landmarks, heatmap_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from talkface.pipeline import TalkingFaceResult


def heatmap_picture(heatmaps: torch.Tensor, size: int) -> np.ndarray:
    """The generator's heatmap input, coloured by facial part, at the frame's size."""
    picture = heatmap_image(heatmaps)
    return picture if picture.shape[0] == size else cv2.resize(picture, (size, size), interpolation=cv2.INTER_LINEAR)


def draw_track(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Landmarks (crop pixels) drawn on black at `size` x `size`."""
    scale = size / CROP_SIZE
    scaled = (landmarks + 0.5) * scale - 0.5  # pixel centres map like an image resize
    return draw_landmarks(np.zeros((size, size, 3), np.uint8), scaled, points=size >= 128)


def put_text(canvas: np.ndarray, text: str, centre_x: int, baseline_y: int, max_width: int, max_height: int
              ) -> None:
    """Draw white text with a dark outline, as large as fits in max_width x max_height (any frame size)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = min(max_width / w, max_height / h)
    thickness = max(1, round(scale * 1.5))
    (w, _), _ = cv2.getTextSize(text, font, scale, thickness)
    org = (centre_x - w // 2, baseline_y)
    cv2.putText(canvas, text, org, font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, org, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def label(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with `text` along its top edge (the comparison grid's cells)."""
    out = image.copy()
    s = image.shape[0]
    put_text(out, text, image.shape[1] // 2, s // 10, image.shape[1] * 3 // 5, s // 14)
    return out


def caption_height(size: int) -> int:
    """Height of the panel video's caption strip: even, as H.264's 4:2:0 needs for the whole frame."""
    return 2 * max(6, size // 24)


def panel(landmarks: np.ndarray, heatmaps: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Landmarks | heatmaps | frame under a caption strip."""
    s = frame.shape[0]
    strip = np.full((caption_height(s), 3 * s, 3), 40, np.uint8)
    for i, text in enumerate(("landmarks", "heatmaps", "frame")):
        put_text(strip, text, i * s + s // 2, strip.shape[0] * 4 // 5, s * 3 // 4, strip.shape[0] * 3 // 5)
    return np.concatenate([strip, np.concatenate([landmarks, heatmaps, frame], axis=1)], axis=0)


def grid(images: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.concatenate(images[:2], axis=1), np.concatenate(images[2:], axis=1)], axis=0)


def aligned_preview(aligned: AlignedFace) -> np.ndarray:
    """The aligned crop with its detected landmarks, at twice the size: what the system saw."""
    big = cv2.resize(aligned.image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    return draw_landmarks(big, aligned.landmarks * 2 + 0.5, thickness=2)


def mouth_opening_figure(result: TalkingFaceResult) -> Figure:
    """Speech waveform above, mouth opening of every landmark track below, on one time axis."""
    from matplotlib.figure import Figure  # here: matplotlib's import is a third of a second the CLI never needs

    fig = Figure(figsize=(8, 4), layout="constrained")
    wave_ax, mouth_ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.4])
    wave = result.waveform
    # min/max per bucket: the envelope a waveform display shows, at a fixed cost for any length
    buckets = max(1, len(wave) // 2000)
    env = wave[: len(wave) // buckets * buckets].reshape(-1, buckets)
    t_env = (np.arange(len(env)) + 0.5) * buckets / SAMPLE_RATE
    wave_ax.fill_between(t_env, env.min(1), env.max(1), color="0.45", linewidth=0)
    wave_ax.set_ylabel("speech")
    wave_ax.set_yticks([])
    t = np.arange(result.num_frames) / FPS
    for name, track in result.tracks.items():
        main = name == result.a2l
        mouth_ax.plot(t, mouth_opening(track), label=ABLATIONS[name], linewidth=2 if main else 1,
                      alpha=1 if main else 0.7, zorder=3 if main else 2)
    mouth_ax.set_ylabel("mouth opening (px)")
    mouth_ax.set_xlabel("time (s)")
    mouth_ax.set_xlim(0, max(result.duration, 1 / FPS))
    if len(result.tracks) > 1:
        mouth_ax.legend(loc="upper right", fontsize="small", ncols=4)
    mouth_ax.grid(alpha=0.3)
    return fig

