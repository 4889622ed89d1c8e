"""Speech with exact phone timing, for the synthetic LRW-shaped corpus.

LRW and GRID cannot be fetched here, so the corpus speaks each word itself and needs to know
exactly when every phone is spoken: those times drive the synthetic mouth. Four sources, all
mapped onto one phone set (`ARPABET`: the 39 CMU phones + "sil"):

- eSpeak NG (`Espeak`), in-process through ctypes from the PyPI `espeakng-loader` wheel: the synth
  callback reports every phoneme with its sample position, ~3 ms per phrase. Always available.
- Flite (`flite_synthesize`), in-process through ctypes from Debian `flite`'s libraries: phone
  end times from the utterance's Segment relation (what `flite -psdur` prints).
- Festival (`festival_synthesize`, `festival_synthesize_many`), the Debian binary run on a Scheme
  script; batch many phrases per call, as starting Festival costs ~0.2 s.
- Asterisk's recorded prompts (`asterisk_prompts`, `asterisk_utterance`): real human speech,
  timed by pocketsphinx forced alignment (`align`).

Every `Utterance`'s phones tile the waveform from 0 to its duration ("sil" in the gaps), and each
word spans its own phones. `augment` adds noise, gain, reverberation, tempo and pitch changes,
keeping those timings true. Typical use::

    utt = Espeak().synthesize("the next word is about again", voice="en-us", variant="m3")
    word = next(w for w in utt.words if w.text == "about")
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gzip
import math
import re
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import librosa
import numpy as np
import soundfile
from scipy.signal import fftconvolve, firwin, lfilter, resample_poly

from talkface.audio import SAMPLE_RATE


# phone set

ARPABET: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
    "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH",
    "UW", "V", "W", "Y", "Z", "ZH", "sil",
)  # fmt: skip


@dataclass
class Phone:
    symbol: str  # one of ARPABET
    start: float  # seconds
    end: float


@dataclass
class Word:
    text: str  # lower case
    start: float
    end: float


@dataclass
class Utterance:
    waveform: np.ndarray  # float32 mono
    sample_rate: int
    phones: list[Phone]  # tile [0, duration]
    words: list[Word]
    text: str
    voice: str
    source: str  # "espeak" | "flite" | "festival" | "asterisk"

    @property
    def duration(self) -> float:
        return len(self.waveform) / self.sample_rate


# phone tables: each source's symbols -> one or two ARPABET phones
#
# eSpeak NG mnemonics (Kirshenbaum-like) from its English phoneme tables (en, en-us, en-sc, en-rp,
# en-wi, en-wm, en-n, en-us-nyc and the base tables they include). Stress marks (' , % =) are
# stripped first. r-coloured/centring diphthongs become two phones, as CMU writes them (fire =
# F AY ER); British non-rhotic accents get the same R, which only slightly rounds the lips.
_ESPEAK = {
    # pauses
    "_": "sil", "_:": "sil", "_::": "sil", "_!": "sil", "_|": "sil", "_;_": "sil", "_^_": "sil",
    "_X1": "sil", "||": "sil", "_\x01": "sil", "1": "sil",
    # vowels
    "@": "AH", "@#": "AH", "@-": "AH", "@2": "AH", "@5": "AH", "@L": "AH L", "V": "AH", "a#": "AH",
    "a#2": "AH", "#@": "AH",
    "3": "ER", "3:": "ER", "IR": "ER", "VR": "ER",
    "0": "AA", "0#": "AA", "02": "AA", "A:": "AA", "A#": "AA", "A~": "AA", "A@": "AA R",
    "a": "AE", "a/": "AE", "a2": "AE", "aa": "AE", "#a": "AE",
    "E": "EH", "E#": "EH", "E2": "EH", "e": "EH", "e#": "EH", "#e": "EH", "e@": "EH R",
    "e:": "EY", "eI": "EY",
    "I": "IH", "I#": "IH", "I2": "IH", "I2#": "IH", "i@3": "IH R",
    "i": "IY", "i:": "IY", "#i": "IY", "i@": "IY AH",
    "O": "AO", "O2": "AO", "O:": "AO", "O~": "AO", "O@": "AO R", "o@": "AO R",
    "o": "OW", "o:": "OW", "oU": "OW", "oU#": "OW", "#o": "OW",
    "U": "UH", "U@": "UH R",
    "u": "UW", "u:": "UW", "#u": "UW",
    "aI": "AY", "aI2": "AY", "aI@": "AY ER", "aI3": "AY ER",
    "aU": "AW", "aU@": "AW ER",
    "OI": "OY",
    # syllabic consonants
    "m-": "M", "n-": "N", "N-": "NG", "l-": "L",
    # stops and affricates; flaps and the glottal stop stand for the /t/ or /d/ they replace
    "p": "P", "b": "B", "t": "T", "t#": "T", "t2": "T", "t[": "T", "?": "T", "d": "D", "d#": "D",
    "d[": "D", "*": "D", "k": "K", "c": "K", "q": "K", "g": "G", "J^": "G",
    "tS": "CH", "tS;": "CH", "dZ": "JH", "dZ;": "JH",
    # fricatives
    "f": "F", "v": "V", "v#": "V", "B": "V", "T": "TH", "D": "DH", "s": "S", "s.": "S", "s;": "S",
    "z": "Z", "z#": "Z", "z.": "Z", "z;": "Z", "z/2": "Z", "S": "SH", "S;": "SH", "Z": "ZH",
    "Z;": "ZH", "h": "HH", "C": "HH", "x": "K", "X": "K", "Q": "G", "Q^": "G", 'Q"': "G",
    # nasals
    "m": "M", "n": "N", "n.": "N", "n^": "N", "J": "N", "N": "NG",
    # liquids and glides; ";" is the linking glide eSpeak puts between two vowels
    "l": "L", "l/": "L", "l/2": "L", "l/3": "L", "l^": "L", "l.": "L", "l#": "L", "L": "L", "L/": "L",
    "r": "R", "r-": "R", "r/": "R", "r.": "R", 'r"': "R", "R": "R", "R2": "R", "R3": "R", "**": "R",
    "j": "Y", ";": "Y", "w": "W", "w#": "W",
}  # fmt: skip

# Festival's US voices (kal/ked diphones: radio phone set; slt HTS) and Flite's CMU voices.
_FESTIVAL = {
    "pau": "sil", "h#": "sil", "brth": "sil", "sil": "sil",
    "ax": "AH", "axr": "ER", "ix": "IH", "dx": "D", "nx": "N", "hv": "HH",
    "el": "AH L", "em": "AH M", "en": "AH N",
    **{p.lower(): p for p in ARPABET if p != "sil"},
}  # fmt: skip

# pocketsphinx's en-us model: the CMU phones themselves, plus its silence and noise models.
_SPHINX = {"SIL": "sil", "+NSN+": "sil", "+SPN+": "sil", **{p: p for p in ARPABET if p != "sil"}}

_TABLES = {"espeak": _ESPEAK, "flite": _FESTIVAL, "festival": _FESTIVAL, "asterisk": _SPHINX}
_STRESS = "',%="

UNKNOWN_SYMBOLS: Counter[tuple[str, str]] = Counter()
"""(source, symbol) pairs that had no table entry and got a nearest guess; a test keeps it ~empty."""


def to_arpabet(symbol: str, source: str) -> tuple[str, ...]:
    """Map one phone symbol of `source` onto one or two `ARPABET` phones.

    Unknown symbols are guessed (longest known prefix, else "AH") and counted in `UNKNOWN_SYMBOLS`.
    """
    table = _TABLES[source]
    key = symbol.lstrip(_STRESS) if source == "espeak" else symbol
    if key in table:
        return tuple(table[key].split())
    UNKNOWN_SYMBOLS[source, symbol] += 1
    for n in range(len(key) - 1, 0, -1):
        if key[:n] in table:
            return tuple(table[key[:n]].split())
    return ("AH",)


# building an Utterance from any source's timings

@functools.cache
def _lowpass(up: int, down: int) -> np.ndarray:
    # resample_poly's own filter, designed once instead of on every call (~1.5 ms each).
    return firwin(20 * max(up, down) + 1, 1.0 / max(up, down), window=("kaiser", 5.0))


def _resample(waveform: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return waveform.astype(np.float32)
    g = math.gcd(rate, SAMPLE_RATE)
    up, down = SAMPLE_RATE // g, rate // g
    return resample_poly(waveform, up, down, window=_lowpass(up, down).copy()).astype(np.float32)


def _utterance(
    waveform: np.ndarray,
    segments: list[tuple[str, float, float]],
    words: list[tuple[str, float, float]],
    source: str,
    text: str,
    voice: str,
) -> Utterance:
    """Tile [0, duration] with the mapped phones (silence in the gaps) and attach the words.

    `segments` are (source symbol, start, end) in order; a symbol mapping to two phones shares
    its time equally. Words with no phone inside (a bare punctuation token) are dropped.
    """
    duration = len(waveform) / SAMPLE_RATE
    phones: list[Phone] = []
    t = 0.0
    for symbol, start, end in segments:
        start, end = max(start, t), min(end, duration)
        if end <= start:
            continue
        if start > t:
            phones.append(Phone("sil", t, start))
        mapped = to_arpabet(symbol, source)
        step = (end - start) / len(mapped)
        for i, p in enumerate(mapped):
            phones.append(Phone(p, start + i * step, end if i == len(mapped) - 1 else start + (i + 1) * step))
        t = end
    if t < duration:
        phones.append(Phone("sil", t, duration))
    merged: list[Phone] = []
    for p in phones:
        if merged and p.symbol == "sil" == merged[-1].symbol:
            merged[-1].end = p.end
        else:
            merged.append(p)
    out_words = []
    for text_w, start, end in words:
        inside = [p for p in merged if p.symbol != "sil" and p.start >= start - 1e-6 and p.end <= end + 1e-6]
        if inside:
            out_words.append(Word(text_w.lower(), inside[0].start, inside[-1].end))
    return Utterance(np.ascontiguousarray(waveform, dtype=np.float32), SAMPLE_RATE, merged, out_words,
                     text, voice, source)


# eSpeak NG

class _EspeakEventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", _EspeakEventId),
    ]  # fmt: skip


_ESPEAK_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                    ctypes.POINTER(_EspeakEvent))
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 1
_EVENT_WORD, _EVENT_PHONEME = 1, 7
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
# en-Shaw reads the Shavian alphabet, not Latin text.
_ESPEAK_ACCENTS_SKIPPED = {"en-shaw"}


_CLOSURE_PHONES = {"P", "T", "K", "CH", "JH", "B", "D", "G"}
_MAX_CLOSURE = 0.15  # s; a longer silence before a stop is a pause, not its closure
_CLOSURE_AFTER_PAUSE = 0.05  # s; the lips close this long before a stop that follows a pause


def _silent_samples(samples: np.ndarray, echo_delay: int, echo_amp: int) -> np.ndarray:
    """Which samples eSpeak wrote as silence: zeros, or nothing but the voice's echo.

    A variant's echo ("echo <ms> <amp>") fills silences with y[n] = (e[n-d] * amp) >> 8, where e is
    the earlier output (3/4 of it after a noise burst): wavegen.c's exact integer arithmetic.
    """
    y = samples.astype(np.int64)
    if not echo_amp or not echo_delay:
        return np.abs(y) <= 1
    earlier = np.zeros_like(y)
    earlier[echo_delay:] = y[:-echo_delay]
    after_voice = (earlier * echo_amp) >> 8
    after_noise = (np.trunc(earlier * 3 / 4).astype(np.int64) * echo_amp) >> 8
    return (np.abs(y - after_voice) <= 1) | (np.abs(y - after_noise) <= 1)


def _closure_starts(silent: np.ndarray, starts: list[int], names: list[str], sr: int) -> list[int]:
    """Move each stop's start back to the beginning of its closure.

    eSpeak reports /p t k tʃ dʒ/ at the release: the silent closure before it is left in the
    previous phone. The mouth is closed during that silence, so the stop must own it. Voiced
    stops already start at their closure and have no silence before them.
    """
    fixed = list(starts)
    for i in range(1, len(starts)):
        if _ESPEAK.get(names[i].lstrip(_STRESS)) not in _CLOSURE_PHONES:
            continue
        j = starts[i] - 1
        floor = max(starts[i - 1] + 1, starts[i] - int(_MAX_CLOSURE * sr))
        while j >= floor and silent[j]:
            j -= 1
        if starts[i] - (j + 1) < 0.005 * sr:
            continue
        start = j + 1
        if _ESPEAK.get(names[i - 1].lstrip(_STRESS)) == "sil" or j < floor:
            start = max(start, starts[i] - int(_CLOSURE_AFTER_PAUSE * sr))
        fixed[i] = start
    return fixed


class Espeak:
    """eSpeak NG in this process. The library is global state, so all instances share one engine."""

    _lock = threading.Lock()
    _lib: ctypes.CDLL | None = None
    _rate = 22050
    _voice: str | None = None
    _data_path: Path
    _callback = None
    _samples: list[np.ndarray] = []  # noqa: RUF012 - filled by the callback during one synthesis
    _events: list[tuple[int, int, int, int, str]] = []  # noqa: RUF012

    def __init__(self) -> None:
        with Espeak._lock:
            if Espeak._lib is None:
                import espeakng_loader

                lib = ctypes.CDLL(espeakng_loader.get_library_path())
                lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
                lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
                lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
                lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                             ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
                Espeak._data_path = Path(espeakng_loader.get_data_path())
                rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(Espeak._data_path).encode(),
                                             _INITIALIZE_PHONEME_EVENTS)
                if rate <= 0:
                    raise RuntimeError(f"espeak_Initialize failed ({rate})")
                Espeak._rate = rate
                Espeak._callback = _ESPEAK_CALLBACK(Espeak._collect)  # keep a reference: C holds it
                lib.espeak_SetSynthCallback(Espeak._callback)
                Espeak._lib = lib

    @staticmethod
    def _collect(wav, n, events) -> int:
        if n > 0:
            Espeak._samples.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != 0:
            e = events[i]
            name = bytes(e.id.string).split(b"\0")[0].decode("latin-1") if e.type == _EVENT_PHONEME else ""
            Espeak._events.append((e.type, e.text_position, e.length, e.sample, name))
            i += 1
        return 0

    @staticmethod
    @functools.cache
    def _echo(voice: str, sr: int) -> tuple[int, int]:
        """(delay in samples, amplitude in 1/256) of the variant's echo, as wavegen.c clamps them."""
        _, _, variant = voice.partition("+")
        path = Espeak._data_path / "voices" / "!v" / variant
        delay = amp = 0
        if variant and path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if m := re.match(r"echo\s+(\d+)\s+(\d+)", line):
                    delay, amp = int(m[1]), min(int(m[2]), 100)
        return delay * sr // 1000, amp if delay else 0

    def voices(self) -> list[str]:
        """Every English accent, alone and with each `!v` variant ("en-us", "en-us+m3", ...)."""
        accents = sorted(
            p.name.lower() for p in (Espeak._data_path / "lang" / "gmw").glob("en*")
            if p.name.lower() not in _ESPEAK_ACCENTS_SKIPPED
        )
        variants = sorted(p.name for p in (Espeak._data_path / "voices" / "!v").iterdir())
        return accents + [f"{a}+{v}" for a in accents for v in variants]

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        variant: str | None = None,
        pitch_range: int = 50,
    ) -> Utterance:
        """Speak `text`; `rate` in words per minute (80-450), `pitch` and `pitch_range` 0-100."""
        voice_name = f"{voice}+{variant}" if variant else voice
        data = text.encode("utf-8")
        with Espeak._lock:
            lib = Espeak._lib
            if voice_name != Espeak._voice:
                if lib.espeak_SetVoiceByName(voice_name.encode()) != 0:
                    raise ValueError(f"unknown eSpeak voice {voice_name!r}")
                Espeak._voice = voice_name
            lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
            lib.espeak_SetParameter(_PARAM_RANGE, pitch_range, 0)
            Espeak._samples.clear()
            Espeak._events.clear()
            if lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
                raise RuntimeError("espeak_Synth failed")
            samples = np.concatenate(Espeak._samples) if Espeak._samples else np.zeros(0, np.int16)
            events = list(Espeak._events)
        sr = Espeak._rate
        # Each phoneme lasts from its own event to the next one; the last runs to the end.
        phonemes = [(pos, sample, name) for kind, pos, _, sample, name in events if kind == _EVENT_PHONEME]
        silent = _silent_samples(samples, *self._echo(voice_name, sr))
        starts = _closure_starts(silent, [s for _, s, _ in phonemes], [n for _, _, n in phonemes], sr)
        bounds = [*starts[1:], len(samples)]
        segments = [(name, s / sr, e / sr) for (_, _, name), s, e in zip(phonemes, starts, bounds)]
        # A word owns the phonemes reported at its text position.
        words = []
        for kind, pos, length, _, _ in events:
            if kind != _EVENT_WORD:
                continue
            mine = [seg for (p, _, n), seg in zip(phonemes, segments)
                    if p == pos and _ESPEAK.get(n.lstrip(_STRESS)) != "sil"]
            if mine:
                # eSpeak's own length stops at an apostrophe ("don't" -> 3), so take the whole token.
                run = re.match(r"[\w'’-]+", text[pos - 1 :])
                token = (run.group() if run else text[pos - 1 : pos - 1 + length]).strip("'’-")
                words.append((token, mine[0][1], mine[-1][2]))
        waveform = _resample(samples.astype(np.float32) / 32768.0, sr)
        return _utterance(waveform, segments, words, "espeak", text, voice_name)


# Flite

class _CstWave(ctypes.Structure):
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


# awb_time is a limited-domain voice that only says the time.
_FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
_flite_lock = threading.Lock()


@functools.cache
def _flite_lib() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("flite")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    vp = ctypes.c_void_p
    for fn, res, args in [
        ("flite_synth_text", vp, [ctypes.c_char_p, vp]), ("utt_relation", vp, [vp, ctypes.c_char_p]),
        ("relation_head", vp, [vp]), ("item_next", vp, [vp]),
        ("ffeature_string", ctypes.c_char_p, [vp, ctypes.c_char_p]),
        ("ffeature_float", ctypes.c_float, [vp, ctypes.c_char_p]),
        ("utt_wave", ctypes.POINTER(_CstWave), [vp]), ("delete_utterance", None, [vp]),
    ]:
        getattr(lib, fn).restype, getattr(lib, fn).argtypes = res, args
    lib.flite_init()
    return lib


@functools.cache
def _flite_voice(voice: str) -> int | None:
    name = ctypes.util.find_library(f"flite_cmu_us_{voice}")
    if _flite_lib() is None or name is None:
        return None
    register = getattr(ctypes.CDLL(name), f"register_cmu_us_{voice}")
    register.restype, register.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    return register(None)


def flite_synthesize(text: str, voice: str = "kal16") -> Utterance:
    """Speak `text` with a Flite voice (kal, kal16, awb, rms, slt), timed by its Segment relation."""
    lib, handle = _flite_lib(), _flite_voice(voice)
    if handle is None:
        raise RuntimeError(f"Flite voice {voice!r} is not installed (Debian package flite)")
    with _flite_lock:
        utt = lib.flite_synth_text(text.encode(), handle)
        try:
            wave = lib.utt_wave(utt).contents
            samples = np.ctypeslib.as_array(wave.samples, (wave.num_samples * wave.num_channels,)).copy()
            rate = wave.sample_rate
            segments, words = [], []
            start = 0.0
            item = lib.relation_head(lib.utt_relation(utt, b"Segment"))
            while item:
                end = lib.ffeature_float(item, b"end")
                segments.append((lib.ffeature_string(item, b"name").decode(), start, end))
                start, item = end, lib.item_next(item)
            item = lib.relation_head(lib.utt_relation(utt, b"Word"))
            while item:
                words.append((
                    lib.ffeature_string(item, b"name").decode(),
                    lib.ffeature_float(item, b"R:SylStructure.daughter1.daughter1.R:Segment.p.end"),
                    lib.ffeature_float(item, b"R:SylStructure.daughtern.daughtern.end"),
                ))
                item = lib.item_next(item)
        finally:
            lib.delete_utterance(utt)
    waveform = _resample(samples.astype(np.float32) / 32768.0, rate)
    return _utterance(waveform, segments, words, "flite", text, voice)


# Festival

_FESTIVAL_VOICE_DIRS = Path("/usr/share/festival/voices")


def _festival_voices() -> list[str]:
    if shutil.which("festival") is None or not _FESTIVAL_VOICE_DIRS.is_dir():
        return []
    return sorted(p.name for p in _FESTIVAL_VOICE_DIRS.glob("*/*") if (p / "festvox").is_dir())


def festival_synthesize_many(texts: list[str], voice: str = "kal_diphone") -> list[Utterance]:
    """Speak several phrases in one Festival run (starting Festival is most of its cost)."""
    if voice not in _festival_voices():
        raise RuntimeError(f"Festival voice {voice!r} is not installed (Debian festival + festvox-*)")
    if not texts:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        lines = [f"(voice_{voice})"]
        for i, text in enumerate(texts):
            quoted = text.replace("\\", "\\\\").replace('"', '\\"')
            lines += [
                f'(set! u (utt.synth (Utterance Text "{quoted}")))',
                f'(utt.save.wave u "{tmp}/{i}.wav" \'riff)',
                f'(mapcar (lambda (s) (format t "S {i} %s %f\\n" (item.name s) (item.feat s "end")))'
                " (utt.relation.items u 'Segment))",
                f'(mapcar (lambda (w) (format t "W {i} %s %f %f\\n" (item.name w)'
                ' (item.feat w "R:SylStructure.daughter1.daughter1.segment_start")'
                ' (item.feat w "R:SylStructure.daughtern.daughtern.end"))) (utt.relation.items u \'Word))',
            ]
        script = Path(tmp) / "synth.scm"
        script.write_text("\n".join(lines) + "\n")
        run = subprocess.run(["festival", "--batch", str(script)],
                             capture_output=True, text=True, timeout=600)
        segments: list[list] = [[] for _ in texts]
        words: list[list] = [[] for _ in texts]
        for line in run.stdout.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "S":
                i, end = int(parts[1]), float(parts[3])
                start = segments[i][-1][2] if segments[i] else 0.0
                segments[i].append((parts[2], start, end))
            elif len(parts) == 5 and parts[0] == "W":
                words[int(parts[1])].append((parts[2], float(parts[3]), float(parts[4])))
        out = []
        for i, text in enumerate(texts):
            wav = Path(tmp) / f"{i}.wav"
            if not wav.exists():
                raise RuntimeError(f"Festival failed on {text!r}: {run.stderr.strip()[-300:]}")
            samples, rate = soundfile.read(wav, dtype="float32")
            out.append(_utterance(_resample(samples, rate), segments[i], words[i], "festival", text, voice))
    return out


def festival_synthesize(text: str, voice: str = "kal_diphone") -> Utterance:
    """Speak one phrase with Festival; prefer `festival_synthesize_many` for a corpus."""
    return festival_synthesize_many([text], voice)[0]


# Asterisk prompts + pocketsphinx forced alignment

_ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en")
_ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SYMBOLS = {"*": " star ", "#": " pound ", "&": " and ", "%": " percent ", "@": " at "}


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10 - 2] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + _number_words(n % 100))
    return _number_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + _number_words(n % 1000))


def normalize_transcript(text: str) -> str:
    """Lower-case words as spoken: bracketed notes ([beep], (silence)) dropped, digits and * # spelled out."""
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>", " ", text)
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = re.sub(r"\d+", lambda m: f" {_number_words(int(m.group()))} ", text)
    text = re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " "))
    return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


def asterisk_prompts() -> list[tuple[Path, str]]:
    """Asterisk's recorded English prompts (CC-BY-SA-3.0) with their normalised transcripts.

    Only prompts whose every word is in the pocketsphinx dictionary are listed, so each can be
    aligned. Empty when the Debian packages asterisk-core-sounds-en(-wav) are not installed.
    """
    if not _ASTERISK_TRANSCRIPTS.exists() or not _ASTERISK_SOUNDS.is_dir():
        return []
    decoder = _decoder()
    prompts = []
    for line in gzip.open(_ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8", errors="replace"):
        name, sep, transcript = line.partition(":")
        if not sep or name.startswith(";"):
            continue
        path = _ASTERISK_SOUNDS / f"{name.strip()}.wav"
        text = normalize_transcript(transcript)
        if text and path.exists() and all(decoder.lookup_word(w) for w in text.split()):
            prompts.append((path, text))
    return prompts


@functools.cache
def _decoder(wide: bool = False):
    import pocketsphinx

    # The default beams lose a few hard utterances; wide ones find them at ~1.5x the cost.
    beams = {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80} if wide else {}
    return pocketsphinx.Decoder(samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL", **beams)


def _align_pass(decoder, pcm: bytes, text: str):
    decoder.set_align_text(text)
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    decoder.set_alignment()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    return decoder.get_alignment()


_align_lock = threading.Lock()
_ALIGN_PAD = 0.3  # s of faint noise around the speech


def align(waveform: np.ndarray, sample_rate: int, text: str) -> tuple[list[Phone], list[Word]]:
    """Force-align `text` (lower-case words in pocketsphinx's dictionary) to real speech.

    Two passes as pocketsphinx prescribes: word alignment, then phone alignment within it.
    Times are in seconds at 10 ms resolution; phones are ARPABET and tile the recording.
    """
    audio = _resample(np.asarray(waveform, dtype=np.float32), sample_rate)
    # Without a silence to start from, pocketsphinx stretches the first word back to 0 s: pad
    # both ends with noise at the recording's own floor (its quietest 10 ms frames).
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    floor = max(float(np.percentile(np.sqrt(np.mean(frames**2, axis=1)), 5)), 1e-5) if len(frames) else 1e-5
    pad = np.random.default_rng(0).normal(0.0, floor, round(_ALIGN_PAD * SAMPLE_RATE)).astype(np.float32)
    padded = np.concatenate([pad, audio, pad])
    pcm = (np.clip(padded, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    with _align_lock:
        try:
            alignment = _align_pass(_decoder(), pcm, text)
        except RuntimeError:  # "Failed to set up sub-word alignment": the first pass lost its way
            alignment = None
        if alignment is None:
            try:
                alignment = _align_pass(_decoder(wide=True), pcm, text)
            except RuntimeError as error:
                raise ValueError(f"pocketsphinx could not align {text!r}") from error
        # Frame f's 25.6 ms window starts at f * 10 ms, so the change between frames f-1 and f
        # happens around f * 10 ms + (25.6 - 10) / 2 ms.
        def seconds(frame: int) -> float:
            return frame * 0.01 + 0.0078 - _ALIGN_PAD

        segments = [(p.name, seconds(p.start), seconds(p.start + p.duration)) for p in alignment.phones()]
        words = [(re.sub(r"\(\d+\)$", "", w.name), seconds(w.start), seconds(w.start + w.duration))
                 for w in alignment.words() if not w.name.startswith(("<", "["))]
    utt = _utterance(audio, segments, words, "asterisk", text, "")
    return utt.phones, utt.words


def _read_prompt(path: Path) -> np.ndarray:
    """The prompt at 16 kHz: the wideband G.722 recording (asterisk-core-sounds-en-g722) when installed,
    else the 8 kHz telephone WAV upsampled (its empty 4-8 kHz band is unlike a user's microphone)."""
    g722 = path.with_suffix(".g722")
    if g722.exists():
        from talkface.video import ffmpeg_exe

        raw = subprocess.run(
            [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "g722", "-i", str(g722),
             "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"],
            capture_output=True, check=True,
        ).stdout
        return np.frombuffer(raw, np.float32).copy()
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return _resample(samples.mean(axis=1), rate)


def asterisk_utterance(path: str | Path, text: str) -> Utterance:
    """One Asterisk prompt (real recorded speech, 16 kHz) with aligned words and phones."""
    waveform = _read_prompt(Path(path))
    phones, words = align(waveform, SAMPLE_RATE, text)
    return Utterance(waveform, SAMPLE_RATE, phones, words, text, "allison", "asterisk")


def available_sources() -> dict[str, list[str]]:
    """Which sources and voices work on this machine; only eSpeak is needed by the app."""
    sources = {"espeak": Espeak().voices()}
    flite = [v for v in _FLITE_VOICES if _flite_voice(v) is not None]
    if flite:
        sources["flite"] = flite
    if festival := _festival_voices():
        sources["festival"] = festival
    if _ASTERISK_TRANSCRIPTS.exists() and _ASTERISK_SOUNDS.is_dir():
        sources["asterisk"] = ["allison"]
    return sources


# augmentation

def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    # Paul Kellet's economy filter: white noise through three poles and zeros, ~-3 dB/octave.
    b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
    a = [1.0, -2.494956002, 2.017265875, -0.522189400]
    return lfilter(b, a, rng.standard_normal(n))


def _babble(waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Several reversed, shifted copies of the speech itself: speech-shaped and unintelligible.
    reversed_ = waveform[::-1]
    return sum(np.roll(reversed_, int(rng.integers(len(waveform)))) for _ in range(4))


# librosa's default 2048-point STFT (128 ms at 16 kHz) smears stop closures over their neighbours.
_SPEECH_STFT = {"n_fft": 512, "hop_length": 128}


def change_tempo(utt: Utterance, factor: float) -> Utterance:
    """Speak `utt` `factor` times faster (phase vocoder, pitch kept); every time scales with the length."""
    y = librosa.effects.time_stretch(utt.waveform.astype(np.float32), rate=factor, **_SPEECH_STFT)
    scale = len(y) / len(utt.waveform)
    duration = len(y) / utt.sample_rate
    phones = [Phone(p.symbol, p.start * scale, min(p.end * scale, duration)) for p in utt.phones]
    if phones:
        phones[-1].end = duration  # exact, whatever the rounding of the new length
    words = [Word(w.text, w.start * scale, min(w.end * scale, duration)) for w in utt.words]
    return replace(utt, waveform=y.astype(np.float32), phones=phones, words=words)


def augment(utt: Utterance, rng: np.random.Generator, strength: float = 1.0) -> Utterance:
    """A plausible microphone recording of `utt`: tempo, pitch, reverberation, noise and gain.

    Each effect is drawn independently (noise 80 % of the time, the others 50 %), its size scaled
    by `strength` (0 = unchanged): tempo ±15 %, pitch ±2 semitones, reverberation time up to
    0.6 s, SNR down to 10 dB, gain -12..+6 dB. Only the tempo moves the timings (`change_tempo`).
    """
    if strength <= 0:
        return replace(utt, waveform=utt.waveform.copy())
    sr = utt.sample_rate
    if rng.random() < 0.5:
        utt = change_tempo(utt, float(np.exp(rng.uniform(-1, 1) * 0.15 * strength)))
    y = utt.waveform.astype(np.float64)
    if rng.random() < 0.5:
        y = librosa.effects.pitch_shift(y, sr=sr, n_steps=float(rng.uniform(-2, 2) * strength), **_SPEECH_STFT)
    if rng.random() < 0.5:
        # Synthetic room: the direct sound, then exponentially decaying noise (-60 dB at rt60),
        # at a direct-to-reverberant ratio of 15 dB down to 0 dB.
        rt60 = rng.uniform(0.1, 0.1 + 0.5 * strength)
        t = np.arange(1, int(rt60 * sr)) / sr
        tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
        drr_db = rng.uniform(15 - 15 * strength, 15)
        tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
        y = fftconvolve(y, np.concatenate([[1.0], tail]))[: len(y)]
    if rng.random() < 0.8:
        kind = rng.integers(3)
        noise = (rng.standard_normal(len(y)) if kind == 0
                 else _pink(len(y), rng) if kind == 1 else _babble(y, rng))
        snr_db = rng.uniform(40 - 30 * strength, 40)
        y = y + noise * np.sqrt(np.mean(y**2) / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
    if rng.random() < 0.5:
        y = y * 10 ** (rng.uniform(-12, 6) * strength / 20)
    peak = np.max(np.abs(y)) if len(y) else 0.0
    if peak > 0.99:  # a real recording would clip; keep the speech instead
        y = y * (0.99 / peak)
    return replace(utt, waveform=y.astype(np.float32))
