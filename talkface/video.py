"""Video in and out: the one place that talks to ffmpeg about pictures.

We stream frames through the ffmpeg binary that `imageio-ffmpeg` ships (no system ffmpeg needed), so a
10-minute video is written frame by frame with bounded memory and the audio is muxed in the same call.
Audio *decoding* lives in `talkface.audio` (which also reads the audio track of a video file).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import soundfile as sf

from talkface.audio import FPS


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame of a video: (T, H, W, 3) uint8 RGB and the frame rate."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
    if not frames:
        raise ValueError(f"{path} contains no video frames")
    return np.stack(frames), float(meta["fps"])


def iter_video(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Frames one at a time (H, W, 3) uint8, for long videos."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    for buf in reader:
        yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)


def video_fps(path: str | os.PathLike) -> float:
    """The frame rate a video declares."""
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        return float(next(reader)["fps"])
    finally:
        reader.close()


def _temporary_wav(audio: np.ndarray, sample_rate: int) -> str:
    """Mono audio as a 16-bit WAV in a temporary file (the caller deletes it), for ffmpeg to mux."""
    fd, wav = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    sf.write(wav, np.asarray(audio, dtype=np.float32), sample_rate, subtype="PCM_16")
    return wav


class VideoWriter:
    """Write RGB frames to an H.264 mp4 as they come, with an optional audio track.

    Use as a context manager; the file appears at ``path`` only once the writer closed cleanly (it is
    written to a temporary name first), so an interrupted run never leaves a half-written video behind.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: tuple[int, int],
        fps: float = FPS,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        crf: int = 20,
        preset: str = "veryfast",
    ) -> None:
        self.path = Path(path)
        self.size = size  # (width, height)
        self._tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.mp4")
        self._wav: str | None = None
        if audio is not None:
            self._wav = _temporary_wav(audio, sample_rate)
        self._gen = imageio_ffmpeg.write_frames(
            str(self._tmp),
            size,
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            output_params=["-crf", str(crf), "-preset", preset, "-movflags", "+faststart"]
            + (["-shortest"] if audio is not None else []),
            audio_path=self._wav,
            audio_codec="aac" if audio is not None else None,
            ffmpeg_log_level="error",
        )
        self._gen.send(None)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.shape != (self.size[1], self.size[0], 3):
            raise ValueError(f"frame shape {frame.shape} does not match the video size {self.size}")
        self._gen.send(frame)
        self.frames_written += 1

    def write_all(self, frames: Iterable[np.ndarray]) -> None:
        for frame in frames:
            self.write(frame)

    def close(self, ok: bool = True) -> None:
        try:
            self._gen.close()
        finally:
            if self._wav is not None:
                Path(self._wav).unlink(missing_ok=True)
        if ok:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = FPS,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    **kwargs,
) -> Path:
    """Write frames (an array or any iterable of H x W x 3 uint8) and optional mono audio to ``path``."""
    it = iter(frames)
    first = np.asarray(next(it))
    with VideoWriter(path, (first.shape[1], first.shape[0]), fps, audio, sample_rate, **kwargs) as w:
        w.write(first)
        w.write_all(it)
    return Path(path)


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """Mono audio alone in an mp4 (AAC, as `write_video` muxes it), written atomically.

    For clips that need no pictures (the A2L side's corpus): the same container and codec as a video's
    audio track, so the features computed from it match those of a rendered clip.
    """
    path = Path(path)
    wav = _temporary_wav(audio, sample_rate)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    try:
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", wav, "-c:a", "aac",
                        "-movflags", "+faststart", str(tmp)], check=True, capture_output=True)
        os.replace(tmp, path)
    finally:
        Path(wav).unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


def probe(path: str | os.PathLike) -> dict:
    """Streams, frame count and duration of a media file, read from ffmpeg's own report.

    Counts frames by decoding (``-f null``), which is exact for the short clips we check.
    """
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0?", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    info = {"has_video": " Video: " in out, "has_audio": " Audio: " in out, "frames": 0, "duration": None}
    for line in out.replace("\r", "\n").splitlines():
        line = line.strip()
        if line.startswith("frame="):
            info["frames"] = int(line.split("=", 1)[1].split()[0])
        if line.startswith("Duration:"):
            hh, mm, ss = line.split()[1].rstrip(",").split(":")
            info["duration"] = int(hh) * 3600 + int(mm) * 60 + float(ss)
    return info


def contact_sheet(rows: list[list[np.ndarray]], labels: list[str] | None = None, scale: float = 1.0) -> np.ndarray:
    """Tile rows of equally sized RGB images into one picture, each row optionally labelled on its left.

    Used wherever a person should look at results: corpus frames, L2F samples, evaluation sheets.
    """
    import cv2

    h, w = rows[0][0].shape[:2]
    n = max(len(r) for r in rows)
    pad = 140 if labels else 0
    sheet = np.full((len(rows) * h, pad + n * w, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            img = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
            sheet[i * h : (i + 1) * h, pad + j * w : pad + (j + 1) * w] = img
        if labels:
            cv2.putText(sheet, labels[i][:18], (4, i * h + h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                        cv2.LINE_AA)
    if scale != 1.0:
        sheet = cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return sheet
