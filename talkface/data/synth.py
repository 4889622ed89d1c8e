"""The synthetic LRW-shaped audio-visual corpus every shipped checkpoint learns from.

Why: LRW and GRID cannot be downloaded where TalkFace is built, so we make a corpus with LRW's exact
shape — ``ROOT/WORD/{train,val,test}/WORD_00001.mp4`` + ``.txt`` (LRW's annotation format), 29 frames
at 25 fps with the word in the middle and speech running across the clip edges — from real, clearly
licensed face photos and speech with exact phone timing (eSpeak NG, Flite, Festival, and real recorded
speech force-aligned with pocketsphinx). The same preparation code then reads it and real LRW alike.

Per clip: a carrier phrase around the word is spoken by a voice of the clip's split, augmented like a
microphone would; the phone timings drive a coarticulated mouth on the identity's own 68 landmarks (plus
head motion and blinks, `articulation`); the identity photo is warped to every frame (`render`). A JSON
sidecar keeps the generator's ground truth (phones, landmarks). The shipped checkpoints learn from
landmarks re-detected with dlib on the frames, as the paper does; `talkface.data.prepare --landmarks exact`
gives the A2L side the exact ones instead (the README's "The A2L side on exact landmarks").

Splits: val and test use identities AND voices never seen in train; clips of real recorded speech from
held-out prompts form a separate real-speech test part (``"subset": "real"`` in the sidecar).

Run:
    python -m talkface.data.synth --preset default --out /work/data/synth --workers 2
    python -m talkface.data.synth --preset tiny --out /tmp/tiny          # seconds; used by the tests
    python -m talkface.data.synth --preset extra --out /work/data/synth_extra --workers 2  # 18 more takes/word
    python -m talkface.data.synth --preset a2l --out /work/data/synth_a2l --workers 2      # audio + landmarks
    python -m talkface.data.synth --preset a2l_more --out /work/data/synth_a2l_more --workers 2  # 64 more takes
    python -m talkface.data.synth --preset default --out /work/data/synth --splits val,test  # scoring only
A killed run resumes where it stopped: a clip is complete once its JSON sidecar exists (written last).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import time
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkface.audio import FPS, SAMPLE_RATE
from talkface.data.lrw import CLIP_FRAMES, SPLITS, lrw_vocabulary, write_lrw_txt
from talkface.errors import TalkFaceError

# Real photos with clear licences (see the manifest for each identity).
ASTRONAUT = ("skimage.data.astronaut()", "public domain (NASA portrait of Eileen Collins)")
SOLVAY = (
    Path("/usr/share/visp-images-data/ViSP-images/Solvay/Solvay_conference_1927_Version2_2126x1463.jpg"),
    "public domain (Solvay conference 1927 photograph, Debian visp-images-data)",
)
KPHOTOALBUM = (Path("/usr/share/kphotoalbum/demo"), "GPL-2+ (KPhotoAlbum demo album, Debian kphotoalbum)")

# Short carrier phrases: as in LRW (cut from continuous broadcast speech), speech runs across the edges.
PREFIXES = (
    "i think the", "they said", "we know that", "it was", "and then", "you can see", "she told us",
    "here is the", "many", "the", "but", "so we", "this is", "he said", "now", "what about", "all of",
    "a lot of", "there was", "they will", "people", "just", "before the", "we have",
)
SUFFIXES = (
    "again", "today", "is here", "for them", "and more", "last week", "right now", "in the end",
    "was said", "this year", "at last", "too", "for sure", "over there", "every day", "of course",
    "was clear", "and that", "they say", "as well",
)


@dataclass
class SynthConfig:
    """What to generate. ``per_word`` counts are clips per word and split (synthetic speech).

    ``first_take``: synthetic clips are numbered from first_take + 1, so a second root generated with
    first_take = 18 holds exactly the clips that a corpus with 18 more takes per word would add (same
    seed: the same held-out voices and faces, no clip repeated) without touching the first one.

    ``video=False`` skips rendering (most of a clip's cost): the clip's .mp4 holds only its audio track, and
    the sidecar its exact landmarks. A clip's text, voice, prosody, face and motion depend on its seed alone,
    never on whether it was rendered, so take k of a word is the same utterance with or without video (up
    to a hair: eSpeak's output varies slightly with what its process spoke before).
    """

    words: int = 500  # the first N LRW words
    per_word: dict = field(default_factory=lambda: {"train": 18, "val": 1, "test": 2})
    source_weights: dict = field(default_factory=lambda: {"espeak": 0.6, "flite": 0.2, "festival": 0.2})
    real_speech: bool = True  # clips of real recorded speech (Asterisk prompts, aligned with pocketsphinx)
    max_identities: int | None = None  # per split; None = all
    augment: float = 1.0
    seed: int = 0
    first_take: int = 0
    video: bool = True  # False: the mp4 holds the audio track only (the A2L side needs no frames: see "a2l")
    # (ours, 2026-12-05) Real recordings pause: silence before the first word and after the last, under a
    # microphone's noise floor. LRW-style clips cut from running speech almost never hold one (6% of the "a2l"
    # corpus's frames are silent, under -80 dB room tone), and A2L opened the mouth on the noise of real
    # recordings' pauses. `pauses`: the fraction of synthetic clips whose word is spoken alone, first or last
    # in its phrase (still the clip's centre), the mouth at rest around it; `noise_floor`: a noise floor
    # (white, pink, brown or mains hum, 15-50 dB under the speech) under the whole clip, pauses included.
    pauses: float = 0.0
    noise_floor: bool = False


PRESETS = {
    "tiny": SynthConfig(
        words=3,
        per_word={"train": 2, "val": 1, "test": 1},
        source_weights={"espeak": 1.0},
        real_speech=False,
        max_identities=2,
    ),
    "small": SynthConfig(words=50, per_word={"train": 10, "val": 1, "test": 2}),
    # 18 more training takes per word beside a "default" corpus (how far more data takes the models)
    "extra": SynthConfig(per_word={"train": 18}, first_take=18, real_speech=False),
    # The A2L side's corpus: audio + exact landmarks, no frames, 64 training takes per word. Takes 1-18 and
    # every val/test clip are the "default" corpus's own utterances (same seeds), so the A2L side is scored on
    # exactly the clips L2F is scored on; takes 19-64 are new.
    "a2l": SynthConfig(per_word={"train": 64, "val": 1, "test": 2}, video=False),
    # 64 more training takes per word beside an "a2l" corpus (takes 65-128; train split only, audio only)
    "a2l_more": SynthConfig(per_word={"train": 64}, first_take=64, real_speech=False, video=False),
    # 16 more training takes per word beside an "a2l" corpus (takes 129-144), each with a pause around its word
    # and a noise floor: what A2L must learn about silence (train_a2l.py --extra-cache)
    "a2l_pauses": SynthConfig(per_word={"train": 16}, first_take=128, real_speech=False, video=False, pauses=1.0,
                              noise_floor=True),
    "default": SynthConfig(),
}


def _stable_hash(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


# identities


@dataclass
class Identity:
    id: str
    split: str
    source: str
    licence: str
    image: np.ndarray  # 256x256x3 aligned crop
    landmarks: np.ndarray  # 68x2 dlib landmarks on the crop


def _faces_of_photo(image: np.ndarray, min_face: int) -> list:
    """Every usable face of a (group) photo, each aligned on its own neighbourhood of the photo."""
    from talkface.errors import FaceError
    from talkface.face import align_face, detect_faces

    out = []
    h, w = image.shape[:2]
    for box in detect_faces(image):
        size = max(box.x1 - box.x0, box.y1 - box.y0)
        if size < min_face:
            continue
        cx, cy, r = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2, 3.0 * size
        x0, y0 = int(max(0, cx - r)), int(max(0, cy - r))
        x1, y1 = int(min(w, cx + r)), int(min(h, cy + r))
        try:
            face = align_face(image[y0:y1, x0:x1], min_face=min_face)
            # Preparation re-detects the face on the rendered 256x256 frames, as it would on LRW: keep only
            # faces that can be found again at that framing, or their clips would be skipped there.
            align_face(face.image, min_face=min_face)
        except FaceError:
            continue
        if _frontal_face_confirmed(face.image):
            out.append(face)
    return out


_DLIB_DETECTOR = None


def _frontal_face_confirmed(crop: np.ndarray) -> bool:
    """A second opinion from dlib's HOG detector: a frontal face where the template puts it.

    Mediapipe also fires on face-like things (a logo tattoo in the KPhotoAlbum demo) and on profiles; a
    training identity must be a real, roughly frontal face.
    """
    global _DLIB_DETECTOR
    import dlib

    from talkface.face import TEMPLATE_BOX

    if _DLIB_DETECTOR is None:
        _DLIB_DETECTOR = dlib.get_frontal_face_detector()
    x0, y0, x1, y1 = TEMPLATE_BOX
    for r in _DLIB_DETECTOR(crop, 1):
        iw = max(0, min(x1, r.right()) - max(x0, r.left()))
        ih = max(0, min(y1, r.bottom()) - max(y0, r.top()))
        union = (x1 - x0) * (y1 - y0) + r.width() * r.height() - iw * ih
        if iw * ih / union > 0.5:
            return True
    return False


def _kphotoalbum_people(demo: Path) -> dict[str, tuple[str, ...]]:
    """Photo file -> tagged people, so one person's photos never straddle splits."""
    people = {}
    for img in ET.parse(demo / "index.xml").getroot().iter("image"):
        names = []
        for opt in img.iter("option"):
            if opt.get("name") == "People":
                names += [v.get("value") for v in opt.iter("value")]
        people[img.get("file")] = tuple(sorted(names))
    return people


def collect_identities(seed: int = 0, min_face: int = 48) -> list[Identity]:
    """Every face of the bundled real photos, split so that val/test people never appear in train.

    The astronaut (the app's example face) is a test identity: what the demo shows is an unseen face.
    Solvay 1927 faces (27 distinct people, greyscale) are split by person; KPhotoAlbum photos are grouped
    by their tagged people and kept in train (they are few and colour: train needs them most).
    """
    from skimage import data as skdata

    from talkface.face import align_face, load_image

    ids: list[Identity] = []
    astro = align_face(skdata.astronaut())
    ids.append(Identity("astronaut", "test", ASTRONAUT[0], ASTRONAUT[1], astro.image, astro.landmarks))
    if SOLVAY[0].exists():
        faces = _faces_of_photo(load_image(SOLVAY[0]), min_face)
        faces.sort(key=lambda f: (round(f.box.y0 / 200), f.box.x0))
        order = np.random.default_rng(seed).permutation(len(faces))
        for rank, i in enumerate(order):
            split = "test" if rank < 5 else "val" if rank < 8 else "train"
            f = faces[i]
            ids.append(Identity(f"solvay_{i:02d}", split, "Solvay 1927", SOLVAY[1], f.image, f.landmarks))
    if KPHOTOALBUM[0].exists():
        people = _kphotoalbum_people(KPHOTOALBUM[0])
        for file, names in sorted(people.items()):
            if not names or names == ("Pets",) or not file.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            for k, f in enumerate(_faces_of_photo(load_image(KPHOTOALBUM[0] / file), min_face)):
                ident = f"kpa_{Path(file).stem}_{k}"
                ids.append(Identity(ident, "train", f"KPhotoAlbum {file} ({', '.join(names)})",
                                    KPHOTOALBUM[1], f.image, f.landmarks))
    return ids


def _save_identities(ids: list[Identity], path: Path) -> None:
    meta = [{k: v for k, v in dataclasses.asdict(i).items() if k not in ("image", "landmarks")} for i in ids]
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=np.stack([i.image for i in ids]),
                        landmarks=np.stack([i.landmarks for i in ids]), meta=json.dumps(meta))
    os.replace(tmp, path)


def _load_identities(path: Path) -> list[Identity]:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        return [Identity(**m, image=img, landmarks=lm) for m, img, lm in zip(meta, z["images"], z["landmarks"])]


# voices


# eSpeak variants with strong echo or robot effects: exact timings, but nothing like a microphone.
ROBOT_VARIANTS = ("alicia", "marco", "demonic", "robosoft", "ricishaymax", "unirobot", "anikarobot")


# Flite/Festival voices are recordings of a handful of people: Kal speaks three of them, SLT two.
TTS_SPEAKER = {"kal": "kal", "kal16": "kal", "kal_diphone": "kal", "cmu_us_slt_arctic_hts": "slt"}
TTS_HELD_OUT = {"slt": "val", "ked_diphone": "test", "rms": "test"}


def split_voices(seed: int = 0) -> dict[str, dict[str, list[str]]]:
    """Voices per split and source; val/test voices are never used in train."""
    from talkface.data.speech import available_sources

    out: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for source, voices in available_sources().items():
        if source == "asterisk":
            continue
        voices = sorted(v for v in voices if not any(r in v.lower() for r in ROBOT_VARIANTS))
        if source in ("flite", "festival"):
            # a few real speakers behind several voices: hold out speakers, not voice names
            for v in voices:
                split = TTS_HELD_OUT.get(TTS_SPEAKER.get(v, v), "train")
                out[split].setdefault(source, []).append(v)
        elif len(voices) >= 3:
            order = [voices[i] for i in np.random.default_rng(seed).permutation(len(voices))]
            n_hold = max(1, round(0.1 * len(voices)))
            out["test"][source], out["val"][source] = order[:n_hold], order[n_hold : 2 * n_hold]
            out["train"][source] = order[2 * n_hold :]
        else:
            out["train"][source] = voices
    return out


# the plan: every clip, deterministic from the config


@dataclass
class ClipSpec:
    word: str
    split: str
    index: int  # 1-based within word/split, as LRW numbers files
    kind: str  # "synthetic" | "real"
    seed: int
    prompt: str | None = None  # real speech: Asterisk prompt path
    word_pos: int | None = None  # real speech: which aligned word of the prompt

    @property
    def stem(self) -> str:
        return f"{self.word}/{self.split}/{self.word}_{self.index:05d}"


def plan_clips(cfg: SynthConfig, real: list[tuple[str, str, int]] | None = None) -> list[ClipSpec]:
    words = lrw_vocabulary()[: cfg.words]
    plan = []
    for w in words:
        for split in SPLITS:
            for k in range(cfg.first_take, cfg.first_take + cfg.per_word.get(split, 0)):
                plan.append(ClipSpec(w, split, k + 1, "synthetic", _stable_hash(cfg.seed, w, split, k)))
    counts = Counter((c.word, c.split) for c in plan)
    for prompt, word, pos in real or []:
        split = _prompt_split(prompt, cfg.seed)
        counts[(word, split)] += 1
        plan.append(ClipSpec(word, split, counts[(word, split)], "real",
                             _stable_hash(cfg.seed, prompt, pos), prompt, pos))
    return plan


def _prompt_split(prompt: str, seed: int) -> str:
    u = (_stable_hash("prompt", seed, Path(prompt).stem) % 1000) / 1000
    return "test" if u < 0.2 else "val" if u < 0.3 else "train"


# one clip


class _Worker:
    """Per-process state: identities and speech engines are loaded once."""

    def __init__(self, root: Path, cfg: SynthConfig):
        from talkface.data.speech import Espeak

        self.root, self.cfg = root, cfg
        self.identities = _load_identities(root / "identities.npz")
        self.voices = split_voices(cfg.seed)
        self.espeak = Espeak()
        self._real_cache: dict[str, object] = {}

    def _identity(self, split: str, rng: np.random.Generator) -> Identity:
        pool = [i for i in self.identities if i.split == split]
        if self.cfg.max_identities:
            pool = pool[: self.cfg.max_identities]
        return pool[int(rng.integers(len(pool)))]

    def _speak(self, spec: ClipSpec, rng: np.random.Generator):
        from talkface.data import speech

        if spec.kind == "real":
            utt = self._real_cache.get(spec.prompt)
            if utt is None:
                text = {str(p): t for p, t in speech.asterisk_prompts()}[spec.prompt]
                utt = speech.asterisk_utterance(spec.prompt, text)
                self._real_cache = {spec.prompt: utt}
            return utt, spec.word_pos, "allison"
        pools = {s: v for s, v in self.voices[spec.split].items() if s in self.cfg.source_weights and v}
        names = sorted(pools)
        weights = np.array([self.cfg.source_weights[s] for s in names], dtype=float)
        source = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        voice = pools[source][int(rng.integers(len(pools[source])))]
        prefix, suffix = PREFIXES[int(rng.integers(len(PREFIXES)))], SUFFIXES[int(rng.integers(len(SUFFIXES)))]
        # a pause around the word (its own generator: the draws above and below stay those of older corpora)
        pause = np.random.default_rng([spec.seed, 1])
        if pause.random() < self.cfg.pauses:
            prefix, suffix = [("", ""), ("", suffix), (prefix, "")][int(pause.integers(3))]
        text = " ".join(part for part in (prefix, spec.word.lower(), suffix) if part)
        if source == "espeak":
            utt = self.espeak.synthesize(text, voice=voice, rate=int(rng.integers(130, 211)),
                                         pitch=int(rng.integers(25, 76)), pitch_range=int(rng.integers(30, 81)))
        elif source == "flite":
            utt = speech.flite_synthesize(text, voice)
        else:
            utt = speech.festival_synthesize(text, voice)
        return utt, len(prefix.split()), voice

    @staticmethod
    def _noise_floor(audio: np.ndarray, speech: np.ndarray, seed: int) -> np.ndarray:
        """`audio` with a recording's noise floor under all of it: white, pink, brown or mains hum (50/60 Hz and
        harmonics over a little white noise), 15-50 dB under the speech's level."""
        from talkface.data.speech import _pink

        rng = np.random.default_rng([seed, 2])
        n, kind = len(audio), int(rng.integers(4))
        if kind == 0:
            noise = rng.standard_normal(n)
        elif kind == 1:
            noise = _pink(n, rng)
        elif kind == 2:
            noise = np.cumsum(rng.standard_normal(n))
            noise -= np.convolve(noise, np.ones(401) / 401, mode="same")  # no drift below ~40 Hz
        else:
            t = np.arange(n) / SAMPLE_RATE
            mains = float(rng.choice([50.0, 60.0]))
            noise = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3))
                        for k in range(1, 8))
            noise = noise + 0.3 * np.std(noise) * rng.standard_normal(n)
        level = np.sqrt(np.mean(speech.astype(np.float64) ** 2)) * 10 ** (-rng.uniform(15, 50) / 20)
        return (audio + noise * level / (np.std(noise) + 1e-12)).astype(np.float32)

    def make(self, spec: ClipSpec) -> dict:
        from talkface.data import speech
        from talkface.data.articulation import animate, with_rest
        from talkface.data.render import render_frames
        from talkface.video import write_audio, write_video

        rng = np.random.default_rng(spec.seed)
        utt, pos, voice = self._speak(spec, rng)
        if spec.kind == "synthetic" and self.cfg.augment > 0:
            utt = speech.augment(utt, rng, self.cfg.augment)
        target = spec.word.lower()
        matches = [i for i, w in enumerate(utt.words) if w.text.lower().strip(".,!?'") == target]
        if not matches:
            raise RuntimeError(f"'{target}' not found in the words of {utt.text!r}: {[w.text for w in utt.words]}")
        word = utt.words[min(matches, key=lambda i: abs(i - pos))]
        duration = CLIP_FRAMES / FPS
        t0 = (word.start + word.end) / 2 - duration / 2
        # the clip's audio window; beyond the utterance: room tone, not digital silence
        n = round(duration * SAMPLE_RATE)
        start = round(t0 * SAMPLE_RATE)
        audio = (rng.standard_normal(n) * 1e-4).astype(np.float32)
        lo, hi = max(0, start), min(len(utt.waveform), start + n)
        if hi > lo:
            audio[lo - start : hi - start] += utt.waveform[lo:hi]
        if self.cfg.noise_floor and spec.kind == "synthetic":
            audio = self._noise_floor(audio, utt.waveform, spec.seed)
        phones = utt.phones
        if self.cfg.pauses > 0:
            # the mouth rests before the first sound and after the last (eSpeak's first phone starts at 0 s:
            # without this, dominance would hold its vowel open through the pause before it)
            phones = with_rest(phones, t0 - 1.0, t0 + duration + 1.0)
        ident = self._identity(spec.split, rng)
        motion = animate(ident.landmarks, phones, CLIP_FRAMES, rng, t0=t0, fps=FPS)
        base = self.root / spec.stem
        base.parent.mkdir(parents=True, exist_ok=True)
        if self.cfg.video:
            frames = render_frames(ident.image, ident.landmarks, motion["landmarks"], rng=rng)
            write_video(base.with_suffix(".mp4"), frames, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE)
        else:
            write_audio(base.with_suffix(".mp4"), audio, sample_rate=SAMPLE_RATE)
        tmp = base.with_suffix(".txt.tmp")
        write_lrw_txt(tmp, spec.word, word.start - t0, word.end - t0)
        os.replace(tmp, base.with_suffix(".txt"))
        sidecar = {
            "word": spec.word, "split": spec.split, "subset": "real" if spec.kind == "real" else "synthetic",
            "identity": ident.id, "speech_source": utt.source, "voice": voice, "text": utt.text,
            "clip_start": round(t0, 4), "word_start": round(word.start - t0, 4), "word_end": round(word.end - t0, 4),
            "phones": [[p.symbol, round(p.start - t0, 4), round(p.end - t0, 4)]
                       for p in utt.phones if p.end > t0 and p.start < t0 + duration],
            "landmarks": np.round(motion["landmarks"], 2).tolist(),
            "blink": np.round(motion["blink"], 3).tolist(),
            "seed": spec.seed,
            "video": self.cfg.video,
        }
        tmp = base.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(sidecar))
        os.replace(tmp, base.with_suffix(".json"))
        return {"split": spec.split, "kind": spec.kind, "source": utt.source, "voice": voice,
                "identity": ident.id, "seconds": duration}


_WORKER: _Worker | None = None


def _init_worker(root: str, cfg: SynthConfig) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    _WORKER = _Worker(Path(root), cfg)


def _make(spec: ClipSpec) -> tuple[ClipSpec, dict | None, str | None]:
    try:
        return spec, _WORKER.make(spec), None
    except Exception as exc:  # one bad clip must not stop a 10,000-clip run: record it and go on
        return spec, None, f"{type(exc).__name__}: {exc}"


def _real_speech_plan(root: Path, words: set[str]) -> list[tuple[str, str, int]]:
    """(prompt, word, position) for every LRW word said in an Asterisk prompt; alignment cached."""
    from talkface.data import speech

    cache = root / "asterisk_words.json"
    if cache.exists():
        found = json.loads(cache.read_text())
    else:
        found = []
        for path, text in speech.asterisk_prompts():
            tokens = [t.strip(".,!?;:\"'()").upper() for t in speech.normalize_transcript(text).split()]
            found += [[str(path), t, i] for i, t in enumerate(tokens) if t in words]
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps(found))
        os.replace(tmp, cache)  # atomic: a killed run leaves the old cache or none, never half of one
    return [tuple(x) for x in found]


def _done(sidecar: Path) -> bool:
    """A clip is done when its sidecar (written last, atomically) is there and reads. One that does not (a file
    system that lost it in a power cut) is removed, so the clip is made again instead of breaking the manifest."""
    if not sidecar.exists():
        return False
    try:
        ok = isinstance(json.loads(sidecar.read_text()), dict)
    except (OSError, ValueError):
        ok = False
    if not ok:
        sidecar.unlink(missing_ok=True)
    return ok


def _check_settings(root: Path, cfg: SynthConfig) -> None:
    """Refuse to add clips to a corpus made with other settings (another preset or seed would mix two corpora
    under one manifest, and its identity cache belongs to the first); record them on a new root."""
    want = json.loads(json.dumps(dataclasses.asdict(cfg)))
    path = root / "corpus.json"
    have = json.loads(path.read_text()) if path.exists() else None
    if have is None and (root / "manifest.json").exists():  # made before corpus.json existed
        have = json.loads((root / "manifest.json").read_text()).get("config")
    if have is not None:  # settings added since an older corpus was made: it was made with their defaults
        defaults = json.loads(json.dumps(dataclasses.asdict(SynthConfig())))
        have = {**{k: v for k, v in defaults.items() if k not in have}, **have}
    if have is None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(want, indent=1))
        os.replace(tmp, path)
        return
    if have != want:
        keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise TalkFaceError(f"{root} holds a corpus made with other settings ({', '.join(keys)} differ); nothing "
                            "was changed. Finish it with the same preset and seed, or give --out a new folder.")


def _remove_leftovers(root: Path) -> None:
    """Temporary files of a run that was killed mid-clip: never clips, and never listed as such."""
    for pattern in ("*/*/.*.tmp.mp4", "*/*/*.json.tmp", "*/*/*.txt.tmp", "*.tmp"):
        for path in root.glob(pattern):
            path.unlink(missing_ok=True)


def generate(root: str | Path, cfg: SynthConfig, workers: int = 2, progress: bool = True,
             splits: tuple[str, ...] = SPLITS) -> dict:
    """Generate (or finish) the corpus under ``root``; returns the manifest.

    ``splits`` restricts the run to some splits of the plan (e.g. only val and test, to score models on a
    machine that has no use for the training clips); the manifest then describes those splits, and any other
    split the root already holds (so finishing the val split of a whole corpus does not make its manifest
    forget the training clips).
    """
    from tqdm import tqdm

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _check_settings(root, cfg)
    _remove_leftovers(root)
    started = time.time()
    if not (root / "identities.npz").exists():
        ids = collect_identities(cfg.seed)
        _save_identities(ids, root / "identities.npz")
    ids = _load_identities(root / "identities.npz")
    real = _real_speech_plan(root, set(lrw_vocabulary()[: cfg.words])) if cfg.real_speech else []
    full = plan_clips(cfg, real)
    plan = [c for c in full if c.split in splits]
    todo = [c for c in plan if not _done((root / c.stem).with_suffix(".json"))]
    held = {c.split for c in full if c.split not in splits and _done((root / c.stem).with_suffix(".json"))}
    failures = []
    if todo:
        with ExitStack() as stack:
            try:
                if workers <= 1:
                    _init_worker(str(root), cfg)
                    results = map(_make, todo)
                else:
                    # a process pool that notices a dead worker (killed for memory): multiprocessing.Pool waits
                    # for its result forever
                    pool = stack.enter_context(ProcessPoolExecutor(
                        workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                        initargs=(str(root), cfg)))
                    results = pool.map(_make, todo, chunksize=4)
                for spec, _, err in tqdm(results, total=len(todo), desc="clips", disable=not progress):
                    if err:
                        failures.append({"clip": spec.stem, "error": err})
            except BrokenProcessPool as exc:
                raise TalkFaceError("A corpus worker died (out of memory?); the clips made so far are kept: run "
                                    "the same command again to go on, perhaps with fewer --workers.") from exc
    described = [c for c in full if c.split in set(splits) | held]
    manifest = _manifest(root, cfg, described, ids, failures, time.time() - started)
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / "manifest.json")
    return manifest


def _manifest(root, cfg, plan, ids, failures, seconds) -> dict:
    done = [c for c in plan if _done((root / c.stem).with_suffix(".json"))]
    sidecars = [json.loads((root / c.stem).with_suffix(".json").read_text()) for c in done]
    per_split = Counter(s["split"] for s in sidecars)
    rendered = sum(1 for s in sidecars if s.get("video", True))
    voices = sorted({(s["speech_source"], s["voice"]) for s in sidecars})
    return {
        "format": "LRW layout: WORD/{train,val,test}/WORD_NNNNN.{mp4,txt,json}; 29 frames, 25 fps, 256x256",
        "config": dataclasses.asdict(cfg),
        "plan_sha256": hashlib.sha256("\n".join(c.stem for c in plan).encode()).hexdigest(),
        "clips": len(done),
        "clips_planned": len(plan),
        "clips_with_video": rendered,
        "per_split": dict(per_split),
        "real_speech_clips": dict(Counter(s["split"] for s in sidecars if s["subset"] == "real")),
        "words": len({s["word"] for s in sidecars}),
        "voices": {"count": len(voices), "per_source": dict(Counter(src for src, _ in voices))},
        "identities": [{"id": i.id, "split": i.split, "source": i.source, "licence": i.licence} for i in ids],
        "audio_hours": round(len(done) * CLIP_FRAMES / FPS / 3600, 3),
        "failures": failures,
        "generation_seconds_this_run": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--out", required=True, help="corpus root (LRW layout is written under it)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to generate (default: all)")
    a = p.parse_args(argv)
    splits = tuple(s for s in a.splits.split(",") if s)
    if not splits or set(splits) - set(SPLITS):
        p.error(f"--splits takes some of {','.join(SPLITS)}")
    cfg = dataclasses.replace(PRESETS[a.preset], seed=a.seed)
    m = generate(a.out, cfg, workers=a.workers, splits=splits)
    print(json.dumps({k: m[k] for k in ("clips", "clips_planned", "per_split", "words", "voices", "audio_hours",
                                        "generation_seconds_this_run")}, indent=1))
    if m["failures"]:
        print(f"{len(m['failures'])} clips failed; first: {m['failures'][0]}")


if __name__ == "__main__":
    main()
