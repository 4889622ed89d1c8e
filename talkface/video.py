"""Video in and out: the one place that talks to ffmpeg about pictures.

Frames are streamed one at a time to the ffmpeg binary that `imageio-ffmpeg` ships (no system ffmpeg needed),
so a 10-minute video takes bounded memory, and the sound is muxed by the same ffmpeg process: the speech as it was
recorded (its own file, its rate up to 48 kHz, stereo kept, AAC 192 kb/s), not the 16 kHz mono the model reads.
Audio *decoding* lives in `talkface.audio`.

Why not moviepy's streaming writer (`FFMPEG_VideoWriter`): it only takes RGB frames, and ffmpeg's RGB -> YUV
conversion is a third of the encode at the whole photo's size. Frames go in as YUV 4:2:0 converted by OpenCV
(SIMD, ~0.7 ms per 1024 x 1280 frame): 137 frames of 1024 x 1280 encode in 0.85 s against 1.22 s from RGB
(2-core AMD EPYC, x264 superfast), the same colours after decoding (mean |error| 1.71 vs 1.65 grey levels).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import soundfile as sf

from talkface.audio import FPS, MAX_TRACK_RATE, Speech
from talkface.tempdir import new_file

AUDIO_BITRATE = "192k"
# ffmpeg's AAC encoder's "fast" coder for the speech the videos carry: half the CPU of its default ("twoloop": 0.12
# against 0.05 CPU-s for the example's 5.5 s, 0.15-0.22 against 0.08-0.11 for 3 s of GRID's 44.1-kHz stereo), which
# at high bit rates also sounds no better (its maintainer, making "fast" the default in 2018); 40.6 dB SNR against
# twoloop's 38.8 on the example at 192 kb/s (docs/benchmarks.md).
AAC_CODER = "fast"
# imageio-ffmpeg starts ffmpeg with a preexec_fn (os.setpgrp, to keep Ctrl-C from it), and a preexec_fn makes
# Python fork() the whole process instead of vfork(): for a process holding torch and the models (~1 GB) that is
# ~35 ms per ffmpeg started, and every page the parent then writes is copied until ffmpeg has started. The app
# starts one per live piece: its request took 3.94 s with, 3.30 s without (the 5.5-s example, panels and pieces,
# best of 3). Without it ffmpeg shares the terminal's Ctrl-C, which ends a run anyway (its files are removed).
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
# OpenH264 (Cisco's encoder, in the bundled ffmpeg) for big frames: half x264's time on a mostly still photo, where
# x264 spends ~4 ms a frame at 1024 x 1280 whatever its preset (every option tried: 0.55-0.8 CPU-s for 137 frames;
# OpenH264 0.30), and sharper where the face moves (44.6 dB against 42.5 for x264 superfast; the still rest
# 43.5 against 46.6). It has no constant-quality mode: a bit rate per pixel, ~3.3 Mb/s at 1024 x 1280 (it spends
# a tenth of that on a talking face), and a key frame every 10 s as x264's default.
OPENH264_BITS_PER_PIXEL = 0.1
OPENH264_MAX_MACROBLOCKS = 36864  # H.264 level 5.2's frame size, which OpenH264 enforces (e.g. 4096 x 2304)


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def encoder_options(codec: str, size: tuple[int, int], fps: float = FPS, crf: int = 20, preset: str = "veryfast",
                    x264: str | None = None) -> list[str]:
    """ffmpeg's options for the video encoder: x264 by quality (`crf`, `preset`, and `x264`, its own options over
    the preset's, "key=value:key=value"); OpenH264 by OPENH264_BITS_PER_PIXEL, a key frame every 10 s."""
    if codec == "libopenh264":
        return ["-b:v", str(round(OPENH264_BITS_PER_PIXEL * size[0] * size[1] * fps)), "-g", str(round(10 * fps))]
    if codec == "libx264":
        return ["-crf", str(crf), "-preset", preset] + (["-x264-params", x264] if x264 else [])
    raise ValueError(f"codec must be libx264 or libopenh264, not {codec!r}")


@functools.cache
def h264_encoders() -> frozenset[str]:
    """The H.264 encoders the bundled ffmpeg has: libx264 always (imageio-ffmpeg's builds), libopenh264 mostly."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True,
                         check=False).stdout
    return frozenset({"libx264"} | {name for name in ("libopenh264",) if f" {name} " in out})


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


def _temporary_wav(audio: np.ndarray, sample_rate: int, exact: bool = False) -> str:
    """Samples (N,) or (N, C) as a WAV in a temporary file (the caller deletes it), for ffmpeg to mux.

    `exact`: integer samples as they are and floats as 32-bit floats, nothing lost (a user's recording);
    otherwise 16-bit, as the synthetic corpus's clips were always written (their features stay as they were).
    """
    wav = str(new_file(".wav"))
    audio = np.asarray(audio)
    if not exact:
        sf.write(wav, audio.astype(np.float32), sample_rate, subtype="PCM_16")
        return wav
    if np.issubdtype(audio.dtype, np.integer):
        subtype = {1: "PCM_U8", 2: "PCM_16", 4: "PCM_32"}.get(audio.dtype.itemsize, "PCM_32")
        if audio.dtype.itemsize > 4:
            audio = (audio >> 32).astype(np.int32)
        elif audio.dtype == np.uint16 or audio.dtype == np.uint32:
            audio = (audio.astype(np.int64) - (1 << (8 * audio.dtype.itemsize - 1))).astype(
                np.int16 if audio.dtype == np.uint16 else np.int32)
        elif audio.dtype == np.int8:
            audio, subtype = audio.astype(np.int16) << 8, "PCM_16"
    else:
        audio, subtype = audio.astype(np.float32), "FLOAT"
    sf.write(wav, audio, sample_rate, subtype=subtype)
    return wav


class VideoWriter:
    """Write RGB frames to an H.264 mp4 as they come, with an optional sound track.

    The sound is either ``soundtrack``, a ``talkface.audio.Speech`` (the recording as it was made: its file or
    its samples, its rate up to 48 kHz, mono or stereo; more channels are mixed down to stereo), or ``audio``,
    samples at ``sample_rate``, in AAC by `aac_coder` (default: AAC_CODER for a ``soundtrack``, ffmpeg's own
    for ``audio``, as the corpus's clips were always made). It is cut to the frames' length (the videos have one
    frame per 1/25 s of the speech, the last partial frame dropped). Use as a context manager; the file appears
    at ``path`` only once the writer closed cleanly (it is written to a temporary name first), so an interrupted
    run never leaves a half-written video behind.
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
        soundtrack: Speech | None = None,
        x264: str | None = None,
        threads: int | None = None,
        codec: str = "libx264",
        aac_coder: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.size = size  # (width, height)
        if size[0] % 2 or size[1] % 2:
            raise ValueError(f"H.264 (yuv420p) needs an even width and height, not {size[0]}x{size[1]}")
        self._tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix}")
        self._wav: str | None = None
        track, rate, channels = None, sample_rate, 1
        if soundtrack is not None:
            rate, channels = soundtrack.sample_rate, soundtrack.channels
            if soundtrack.path is not None:
                track = str(soundtrack.path)
            else:
                track = self._wav = _temporary_wav(soundtrack.samples, rate, exact=True)
        elif audio is not None:
            track = self._wav = _temporary_wav(audio, sample_rate)
        params = encoder_options(codec, size, fps, crf, preset, x264)
        if threads:
            params += ["-threads", str(threads)]
        if self.path.suffix == ".mp4":
            params += ["-movflags", "+faststart"]  # playable while it downloads (.ts segments need nothing)
        if track is not None:
            # the user's speech at 192 kb/s; the corpus's 16 kHz clips at ffmpeg's default, as they always were
            params += ["-shortest"] + (["-b:a", AUDIO_BITRATE] if soundtrack is not None else [])
            coder = aac_coder or (AAC_CODER if soundtrack is not None else None)
            params += ["-aac_coder", coder] if coder else []
            if rate > MAX_TRACK_RATE:
                params += ["-ar", str(MAX_TRACK_RATE)]
            if channels > 2:
                params += ["-ac", "2"]
        self._gen = imageio_ffmpeg.write_frames(
            str(self._tmp), size, fps=fps, codec=codec, pix_fmt_in="yuv420p", pix_fmt_out="yuv420p",
            macro_block_size=1, output_params=params, audio_path=track,
            audio_codec="aac" if track is not None else None, ffmpeg_log_level="error")
        self._gen.send(None)
        # imageio-ffmpeg never looks at ffmpeg's exit status: an encoder that refuses the frames (OpenH264 above
        # its size limit) would leave a video without pictures behind, with no error. Its process is checked here.
        self._process = self._gen.gi_frame.f_locals.get("p") if self._gen.gi_frame else None
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        """One RGB frame (height, width, 3), or one already in I420 (height × 3/2, width), as
        ``composite.PasteBack`` makes them: sent as it is."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        width, height = self.size
        if frame.shape == (height * 3 // 2, width):
            self._gen.send(frame)
        elif frame.shape == (height, width, 3):
            self._gen.send(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420))
        else:
            raise ValueError(f"frame shape {frame.shape} does not match the video size {self.size}")
        self.frames_written += 1

    def write_all(self, frames: Iterable[np.ndarray]) -> None:
        for frame in frames:
            self.write(frame)

    def close(self, ok: bool = True) -> None:
        if self._gen is None:
            return
        try:
            self._gen.close()  # imageio-ffmpeg waits for ffmpeg (and raises if a frame could not be sent)
            code = getattr(self._process, "returncode", 0)
            if ok and code:
                raise RuntimeError(f"ffmpeg failed (exit status {code}) writing {self.path.name}; its message is "
                                   "above")
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        finally:
            self._gen = None
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
    """Streams, frame count, duration, frame size and the sound's rate, channels and bit rate of a media file,
    read from ffmpeg's own report.

    Counts frames by decoding (``-f null``), which is exact for the short clips we check.
    """
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0?", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    info = {"has_video": " Video: " in out, "has_audio": " Audio: " in out, "frames": 0, "duration": None,
            "size": None, "audio_rate": None, "audio_channels": None, "audio_kbps": None}
    for line in out.replace("\r", "\n").splitlines():
        line = line.strip()
        if line.startswith("Stream #0:") and " Video: " in line and info["size"] is None:
            size = re.search(r", (\d+)x(\d+)", line)
            info["size"] = (int(size.group(1)), int(size.group(2))) if size else None
        if line.startswith("Stream #0:") and " Audio: " in line and info["audio_rate"] is None:
            audio = re.search(r", (\d+) Hz, ([^,]+),.*?(?:, (\d+) kb/s)?(?: \(|$)", line)
            if audio:
                info["audio_rate"] = int(audio.group(1))
                info["audio_channels"] = {"mono": 1, "stereo": 2}.get(audio.group(2).strip(), audio.group(2).strip())
                info["audio_kbps"] = int(audio.group(3)) if audio.group(3) else None
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
