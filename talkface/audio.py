"""Audio in, model input out: the one feature definition shared by preparation, training and the app.

`load_audio` turns a file or a Gradio recording into mono float32 at 16 kHz; `mfcc_windows` turns
that into one 28×12 MFCC window per video frame (paper §IV-B, after ATVGnet); `check_speech`
rejects recordings with no speech energy. Anything a user can get wrong raises `AudioError`.
`load_speech` keeps both sides of a recording: the model's 16 kHz mono input and the sound as recorded
(its own rate and channels), which the videos carry (`talkface.video.VideoWriter`).

Typical use::

    waveform, _ = load_audio("speech.m4a")
    check_speech(waveform)
    features = mfcc_windows(waveform)      # (T, 28, 12), T = num_video_frames(len(waveform))
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import librosa
import numpy as np
import soundfile
import torch
import torchaudio

from talkface.errors import AudioError

SAMPLE_RATE = 16000
FPS = 25
MAX_SECONDS = 600.0  # the longest speech the library and the CLI accept by default (the app sets its own)
HOP_SECONDS = 0.01
WINDOW_FRAMES = 28
N_MFCC = 13  # the first coefficient (overall loudness) is dropped -> 12 per MFCC frame
# ...or, with ``energy``, replaced by the loudness relative to the recording's loud frames, the last (c12) dropped
# (as python_speech_features puts the frame's log energy first): a pause is quiet whatever its spectrum (ours)
ENERGY_PERCENTILE = 0.95
ENERGY_FLOOR = -14.0  # natural-log units below the loud frames (about 60 dB): deeper silence is all alike

# The input definition every A2L-side checkpoint records in its JSON ("features"); loading a checkpoint
# compares it with this one, so a model trained on other features is refused instead of moving the lips
# wrongly without a word.
FEATURES = {
    "sample_rate": SAMPLE_RATE,
    "fps": FPS,
    "mfcc_hop_seconds": HOP_SECONDS,
    "mfcc_window": WINDOW_FRAMES,
    "n_mfcc": N_MFCC - 1,
}

HOP_SAMPLES = round(SAMPLE_RATE * HOP_SECONDS)  # 160
WIN_SAMPLES = 400  # 25 ms analysis window
# A 25 ms window zero-padded to the next power of two, as python_speech_features (ATVGnet) does:
# finer frequency sampling for the narrow low mel filters, and a fast FFT.
N_FFT = 512
# python_speech_features' default filterbank size, which ATVGnet's 13 coefficients came from.
N_MELS = 26
MAX_TRACK_RATE = 48000  # the videos' sound keeps the recording's rate up to this (AAC's usual ceiling)
# Level of the loudest 0.2 s below which a recording counts as silent: 20 dB under a quiet real
# recording (-30 dBFS), 10 dB over faint hiss (-60 dBFS). dBFS here is RMS relative to 1.0.
SILENCE_DBFS = -50.0

log = logging.getLogger(__name__)


# loading

@dataclass
class Speech:
    """One recording, both ways: what the model reads and what the video plays.

    The model reads 16 kHz mono (``waveform``); the video carries the sound as it was recorded: the file
    itself (``path``) or, for a recording given as samples, those samples (``samples``, (N,) or (N, C)),
    at ``sample_rate`` with ``channels``. A video muxes it with ``talkface.video.VideoWriter(soundtrack=)``.
    """

    waveform: np.ndarray  # (N,) float32, 16 kHz mono
    sample_rate: int  # the recording's own rate
    channels: int
    path: Path | None = None
    samples: np.ndarray | None = None

    @property
    def duration(self) -> float:
        return len(self.waveform) / SAMPLE_RATE


def load_speech(source: str | os.PathLike | tuple[int, np.ndarray] | Speech,
                max_seconds: float | None = MAX_SECONDS, min_seconds: float = 0.2) -> Speech:
    """A file path or a Gradio ``(sample_rate, array)`` tuple -> ``Speech`` (limits as ``load_audio``)."""
    if isinstance(source, Speech):
        if max_seconds is not None and source.duration > max_seconds:
            raise _too_long(max_seconds)
        return source
    if isinstance(source, tuple):
        rate, samples = source
        samples = np.asarray(samples)
        waveform, _ = load_audio((rate, samples), max_seconds, min_seconds)
        channels = 1 if samples.ndim == 1 else samples.shape[1]
        return Speech(waveform, int(rate), channels, samples=samples)
    info: dict[str, int] = {}
    waveform, _ = load_audio(source, max_seconds, min_seconds, _info=info)
    return Speech(waveform, info["rate"], info["channels"], path=Path(source))


def load_audio(
    source: str | os.PathLike | tuple[int, np.ndarray],
    max_seconds: float | None = MAX_SECONDS,
    min_seconds: float = 0.2,
    _info: dict[str, int] | None = None,
) -> tuple[np.ndarray, int]:
    """Read speech from a file path or a Gradio `(sample_rate, array)` tuple.

    Returns a mono float32 waveform in [-1, 1] at 16 kHz and the rate 16000. The length limits
    are checked here so that every caller rejects the same inputs with the same sentence; silence
    is not (see `check_speech`), because quiet training clips are legitimate data.
    """
    if isinstance(source, tuple):
        rate, samples = source
        waveform = _to_float_mono(np.asarray(samples))
        if max_seconds is not None and len(waveform) > max_seconds * rate:
            raise _too_long(max_seconds)
    else:
        waveform, rate = _read_file(Path(source), max_seconds, _info if _info is not None else {})

    if waveform.size == 0:
        raise AudioError("The audio contains no sound at all.")
    if not np.isfinite(waveform).all():
        raise AudioError("The audio contains invalid sample values.")
    if rate != SAMPLE_RATE:
        waveform = librosa.resample(waveform, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    duration = len(waveform) / SAMPLE_RATE
    if duration < min_seconds:
        raise AudioError(f"The audio is only {duration:.2f} seconds long; "
                         f"please use at least {min_seconds:g} seconds of speech.")
    # Resampling can overshoot a full-scale input by a hair.
    return np.clip(waveform, -1.0, 1.0).astype(np.float32, copy=False), SAMPLE_RATE


def _to_float_mono(samples: np.ndarray) -> np.ndarray:
    """Integer or float samples, (N,) or (N, channels) as Gradio gives them -> float32 (N,)."""
    if samples.ndim not in (1, 2):
        raise AudioError("The audio must be a mono or multi-channel recording.")
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        # Centre (0 for signed, 128 for uint8) and half range (32768 for int16) of the integer type.
        centre, half = (info.max + info.min + 1) / 2, (info.max - info.min + 1) / 2
        waveform = (samples.astype(np.float32) - np.float32(centre)) / np.float32(half)
    else:
        waveform = samples.astype(np.float32)
    if waveform.ndim == 2:
        waveform = waveform.mean(axis=1)
    # Some tools hand over floats on an integer scale; loudness does not matter to the features.
    peak = np.abs(waveform).max(initial=0.0)
    if peak > 1.0:
        waveform /= peak
    return waveform


def _read_file(path: Path, max_seconds: float | None, info: dict[str, int]) -> tuple[np.ndarray, int]:
    """libsndfile for what it reads (fast, exact rate), else the bundled ffmpeg for the rest. `info` gets the
    file's own sample rate and channel count."""
    if not path.is_file():
        raise AudioError(f"Could not find the audio file '{path.name}'.")
    if path.stat().st_size == 0:
        raise AudioError(f"The audio file '{path.name}' is empty.")
    try:
        with soundfile.SoundFile(path) as f:
            if max_seconds is not None and f.frames > max_seconds * f.samplerate:
                raise _too_long(max_seconds)
            info.update(rate=f.samplerate, channels=f.channels)
            return f.read(dtype="float32", always_2d=True).mean(axis=1), f.samplerate
    except soundfile.LibsndfileError:
        return _decode_with_ffmpeg(path, max_seconds, info), SAMPLE_RATE


# What ffmpeg may open: sound and video containers from a local file, nothing else. Without this, a playlist
# uploaded as speech (HLS .m3u8, concat) makes ffmpeg read the files or URLs it names.
_DEMUXERS = ("wav,w64,mp3,ogg,flac,mov,matroska,webm,aac,ac3,eac3,mpeg,mpegts,avi,asf,flv,amr,amrnb,amrwb,caf,"
             "aiff,au,wv,ape,tta,dts,truehd,mlp,voc,rm,dv,gsm")
DECODE_TIMEOUT = 120.0  # seconds ffmpeg may take for one upload, whatever it is


_STREAM = re.compile(r"Stream #0:\d+.*?: Audio: [^,]+, (\d+) Hz, ([^,]+),")
_LAYOUTS = {"mono": 1, "stereo": 2}


def _decode_with_ffmpeg(path: Path, max_seconds: float | None, info: dict[str, int]) -> np.ndarray:
    """Decode the first audio stream (webm, m4a, even a video) to mono 16 kHz float32 via a pipe; `info` gets
    the stream's own rate and channels (from ffmpeg's report of its input, no second process)."""
    # ffmpeg's own stereo downmix is (L + R)/√2, which clips loud stereo; capping the mixing matrix
    # at 1 makes it the channel mean, as for files libsndfile reads.
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "info",
               "-protocol_whitelist", "file,pipe", "-format_whitelist", _DEMUXERS, "-i", str(path),
               "-map", "0:a:0", "-ac", "1", "-rematrix_maxval", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le"]
    if max_seconds is not None:
        # Decode one second past the limit, enough to know it is exceeded without decoding an hour.
        command += ["-t", f"{max_seconds + 1:g}"]
    try:
        result = subprocess.run([*command, "pipe:1"], capture_output=True, check=False, timeout=DECODE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AudioError(f"Reading the audio file '{path.name}' took too long; please use a plain sound "
                         "file (wav, mp3, m4a, ogg).") from None
    if result.returncode != 0:
        log.debug("ffmpeg could not decode %s: %s", path, result.stderr.decode(errors="replace"))
        raise AudioError(f"Could not read the audio file '{path.name}'; "
                         "it may be damaged or not a sound file.")
    report = result.stderr.decode(errors="replace")
    stream = _STREAM.search(report)
    if stream is not None:  # any layout but mono and stereo has more channels: the video gets a stereo downmix
        info.update(rate=int(stream.group(1)), channels=_LAYOUTS.get(stream.group(2).strip(), 3))
    else:
        info.update(rate=SAMPLE_RATE, channels=1)
    waveform = np.frombuffer(result.stdout, dtype=np.float32).copy()
    if max_seconds is not None and len(waveform) > max_seconds * SAMPLE_RATE:
        raise _too_long(max_seconds)
    return waveform


def _too_long(max_seconds: float) -> AudioError:
    return AudioError(f"The audio is longer than the {max_seconds:g}-second limit; "
                      "please use a shorter clip.")


def check_speech(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Raise `AudioError` if the recording has no speech energy (digital silence, faint hiss).

    The level is the RMS of the loudest 0.2 s (ten 20 ms blocks), so a short word in a long,
    mostly quiet recording still counts, while a steady noise floor never does.
    """
    block = max(1, round(0.02 * sample_rate))
    blocks = np.asarray(waveform, dtype=np.float64)[: len(waveform) // block * block].reshape(-1, block)
    power = (blocks**2).mean(axis=1) if len(blocks) else np.zeros(1)
    loudest = np.partition(power, -min(10, len(power)))[-10:]
    level_dbfs = 10 * np.log10(loudest.mean() + 1e-20)
    if level_dbfs < SILENCE_DBFS:
        raise AudioError("The audio is silent; please use a recording of someone speaking.")


# features

def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Video frames that fit in the audio: floor(duration × fps), at least 1."""
    return max(1, num_samples * fps // sample_rate)


@functools.cache
def _mfcc_transform(device: torch.device) -> torchaudio.transforms.MFCC:
    """One MFCC module per device, so its filterbank and window are built once and stay there."""
    return torchaudio.transforms.MFCC(
        sample_rate=SAMPLE_RATE,
        n_mfcc=N_MFCC,
        # Natural log rather than dB with top_db: top_db clamps against the loudest frame of the whole
        # clip, which would make a frame's features depend on audio far away from it (and chunked
        # inference differ from whole-clip inference). With the log and c0 dropped, the features are
        # also independent of the recording's gain.
        log_mels=True,
        melkwargs=dict(
            n_fft=N_FFT,
            win_length=WIN_SAMPLES,
            hop_length=HOP_SAMPLES,
            n_mels=N_MELS,
            center=True,  # MFCC frame j is centred at j × 10 ms
            pad_mode="constant",  # before and after the clip is silence; also works for tiny inputs
        ),
    ).to(device)


def vocal_tract_warp(alpha: float, energy: bool = False) -> torch.Tensor:
    """The (12, 12) matrix M that makes an MFCC frame c (as `mfcc_windows` gives it) into M @ c, the frame of
    the same sound from a vocal tract `alpha` times shorter (its formants `alpha` × higher; VTLP, Jaitly &
    Hinton 2013), done on the cepstra themselves so cached windows can be warped in training.

    Why: the corpus's voices are few kinds of synthesiser, and a network trained on them reads the speaker's
    formant positions as well as the phone; warping each training clip's spectral envelope by a random
    `alpha` (0.85–1.15 spans most adult speakers) asks it for the phone alone. The envelope is rebuilt from
    c1..c12 on the 26 mel bands (the smooth part the features keep), read at the frequencies f / alpha
    (piecewise linear above 4.8 kHz so the band edge stays put) and cepstrally transformed again. With
    `energy`, coefficient 0 (the loudness) is left as it is and c1..c11 are warped.
    """
    first = 1
    n = N_MFCC - 1 - (1 if energy else 0)  # cepstral coefficients present: c1..c12, or c1..c11 after the level
    dct = torchaudio.functional.create_dct(N_MFCC, N_MELS, norm="ortho").double()  # (26, 13): log mel -> c
    basis = dct[:, first : first + n]  # (26, n): cepstra c1.. -> their smooth log-mel envelope
    nyquist = SAMPLE_RATE / 2
    mel_max = 2595.0 * np.log10(1.0 + nyquist / 700.0)
    centres_mel = np.linspace(0.0, mel_max, N_MELS + 2)[1:-1]
    centres = 700.0 * (10.0 ** (centres_mel / 2595.0) - 1.0)  # the bands' centre frequencies (Hz)
    knee = 0.6 * nyquist
    source = np.where(centres <= knee, centres / alpha,
                      knee / alpha + (centres - knee) * (nyquist - knee / alpha) / (nyquist - knee))
    position = np.interp(source, centres, np.arange(N_MELS, dtype=np.float64))  # fractional band index
    lo = np.floor(position).astype(int).clip(0, N_MELS - 1)
    hi = (lo + 1).clip(max=N_MELS - 1)
    frac = torch.as_tensor(position - lo)
    read = torch.zeros(N_MELS, N_MELS, dtype=torch.float64)  # warped envelope = read @ envelope
    rows = torch.arange(N_MELS)
    read[rows, torch.as_tensor(lo)] += 1 - frac
    read[rows, torch.as_tensor(hi)] += frac
    core = basis.T @ read @ basis  # (n, n)
    out = torch.eye(N_MFCC - 1, dtype=torch.float64)
    k = 1 if energy else 0
    out[k : k + n, k : k + n] = core
    return out.float()


def mfcc_windows(
    waveform: torch.Tensor | np.ndarray, fps: int = FPS, num_frames: int | None = None, energy: bool = False
) -> torch.Tensor:
    """One 28×12 MFCC window per video frame, for a 16 kHz waveform (N,) or batch (B, N).

    Returns (T, 28, 12) or (B, T, 28, 12) float32 on the waveform's device, T = `num_frames`
    (default `num_video_frames(N)`). Video frame t sits at t/fps seconds, which is MFCC frame
    j = round(t × 100 / fps); its window holds MFCC frames j-14 … j+13, so **index 14 of the window
    is the frame centred on the video frame's instant** (the window spans -140 ms … +130 ms around
    it). Frames beyond either end of the clip repeat the first or last MFCC frame.

    `energy` (ours; a checkpoint's ``features["energy"]`` says which it learnt from): coefficient 0 is the
    frame's mean log mel energy minus that of the recording's loud frames (its 95th percentile), floored at
    ``ENERGY_FLOOR``, then c1..c11. Without it, c1..c12: no loudness at all, so a model cannot tell a
    recording's noisy pause from a quiet sound by level. Independent of the recording's gain but for the quietest
    frames (the log's floor: at a tenth of the gain, frames within ~26 dB of the loud ones move by under 0.2).
    """
    if isinstance(waveform, np.ndarray):
        waveform = np.ascontiguousarray(waveform)  # torch refuses reversed or strided views
    wav = torch.as_tensor(waveform).to(torch.float32)
    if wav.dim() not in (1, 2):
        raise ValueError(f"waveform must be (N,) or (B, N), got shape {tuple(wav.shape)}")
    if num_frames is None:
        num_frames = num_video_frames(wav.shape[-1], SAMPLE_RATE, fps)
    coefficients = _mfcc_transform(wav.device)(wav)  # (..., 13, M)
    if energy:
        level = coefficients[..., 0, :] / N_MELS**0.5  # c0 of the orthonormal DCT = mean log mel × sqrt(n)
        loud = torch.quantile(level, ENERGY_PERCENTILE, dim=-1, keepdim=True)
        relative = (level - loud).clamp(min=ENERGY_FLOOR)
        coefficients = torch.cat([relative.unsqueeze(-2), coefficients[..., 1 : N_MFCC - 1, :]], dim=-2)
    else:
        coefficients = coefficients[..., 1:, :]
    mfcc = coefficients.transpose(-1, -2)  # (..., M, 12)

    steps_per_frame = fps * HOP_SAMPLES  # j = t × SAMPLE_RATE / (fps × HOP_SAMPLES), rounded
    t = torch.arange(num_frames, device=wav.device)
    centres = (t * SAMPLE_RATE + steps_per_frame // 2) // steps_per_frame
    offsets = torch.arange(-(WINDOW_FRAMES // 2), WINDOW_FRAMES - WINDOW_FRAMES // 2, device=wav.device)
    index = (centres[:, None] + offsets).clamp_(0, mfcc.shape[-2] - 1)  # (T, 28)
    return mfcc[..., index, :]
