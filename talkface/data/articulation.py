"""Phones -> visemes -> mouth parameters -> 68 landmarks per frame: the motion of the synthetic corpus.

A real face photo only has one mouth shape; the corpus makes it speak by moving the photo's own 68
dlib landmarks the way a speaker's face moves (the frames are then warped to them by ``render``):

1. ``mouth_trajectory``: each phone has a viseme, a target for six mouth parameters plus how
   strongly the phone insists on each one (its dominance). Neighbouring phones blend through
   dominance functions that decay exponentially away from each phone (Cohen & Massaro 1993), so
   rounding anticipates an upcoming /uw/ while /p b m/ and /f v/, which dominate their parameter,
   still close the lips or tuck the lower lip. Sampled once per video frame.
2. ``apply_mouth``: the parameters deform the photo's own landmarks, in units of its inter-ocular
   distance: the jaw opens as a rotation (chin moves most, the jaw angles near the ears hardly),
   the lower lip rides on the jaw, the corners spread or round, the lips close or tuck.
3. ``head_motion`` and ``blinks``: the small movements that keep a face from looking frozen.

``animate`` puts them together. The opening amplitude was tuned against a real talking face
(FGNet's "franck" recording tracked with dlib, see ``experiments/franck_check.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Protocol

import numpy as np

from talkface.face import inter_ocular

PARAMS = ("jaw_open", "lip_width", "lip_round", "lip_closure", "lower_lip_tuck", "upper_lip_raise")


class PhoneLike(Protocol):
    """What the trajectory needs of a phone (``talkface.data.speech.Phone`` is one)."""

    symbol: str
    start: float
    end: float


@dataclass
class MouthParams:
    """Mouth shape per video frame, each a (T,) float array.

    jaw_open: 0 closed .. 1 the widest usual opening (/aa/); lip_width: -1 rounded .. +1 spread;
    lip_round: 0 .. 1 protrusion (pucker); lip_closure: 0 .. 1 lips pressed together (/p b m/);
    lower_lip_tuck: 0 .. 1 lower lip against the upper teeth (/f v/); upper_lip_raise: 0 .. 1.
    """

    jaw_open: np.ndarray
    lip_width: np.ndarray
    lip_round: np.ndarray
    lip_closure: np.ndarray
    lower_lip_tuck: np.ndarray
    upper_lip_raise: np.ndarray

    @classmethod
    def from_array(cls, values: np.ndarray) -> MouthParams:
        """(T, 6) in ``PARAMS`` order -> MouthParams."""
        return cls(*(np.ascontiguousarray(values[:, k], dtype=np.float32) for k in range(len(PARAMS))))

    def to_array(self) -> np.ndarray:
        """MouthParams -> (T, 6) in ``PARAMS`` order."""
        return np.stack([getattr(self, f.name) for f in fields(self)], axis=1)

    def __len__(self) -> int:
        return len(self.jaw_open)


@dataclass(frozen=True)
class Viseme:
    """Targets (``PARAMS`` order) and dominance per parameter. A diphthong glides from ``target``
    to ``target_end`` over its second half."""

    target: tuple[float, ...]
    dominance: tuple[float, ...]
    target_end: tuple[float, ...] | None = None


def _v(jaw: float, width: float = 0.0, rnd: float = 0.0, close: float = 0.0, tuck: float = 0.0,
       raise_: float = 0.0, dom: tuple[float, ...] = (1, 1, 1, 1, 1, 0.6),
       end: tuple[float, ...] | None = None) -> Viseme:
    return Viseme((jaw, width, rnd, close, tuck, raise_), dom, end)


# Dominance columns: jaw, width, round, closure, tuck, raise. Vowels set the jaw and the lip shape
# (dominance 1). Consonants mostly leave the jaw and lip shape to the neighbouring vowels (dominance
# < 1: "s" in "soon" is rounded), except for what they cannot do without: closure for /p b m/ and the
# tuck for /f v/ (dominance 8 and a sharp time constant), rounding for /w/ and the postalveolars,
# a nearly closed jaw for /s z/. Targets follow the usual English viseme classes (jaw opening
# /aa/ > /ae ao/ > /ah/ > /eh/ > /ih er uh/ > /iy uw/; spread /iy/ > /ae eh ih/; rounded /uw w/ >
# /ow uh/ > /ao er r sh/).
_CONS = (0.5, 0.25, 0.25, 1.0, 1.0, 0.6)
VISEMES: dict[str, Viseme] = {
    # vowels
    "AA": _v(1.00, 0.05, 0.0, raise_=0.15),
    "AE": _v(0.85, 0.45, 0.0, raise_=0.30),
    "AH": _v(0.65, 0.10, 0.0, raise_=0.10),
    "AO": _v(0.80, -0.35, 0.45, raise_=0.05),
    "EH": _v(0.60, 0.35, 0.0, raise_=0.20),
    "ER": _v(0.40, -0.30, 0.50, raise_=0.10),
    "IH": _v(0.40, 0.40, 0.0, raise_=0.15),
    "IY": _v(0.25, 0.65, 0.0, raise_=0.25),
    "UH": _v(0.40, -0.50, 0.65),
    "UW": _v(0.25, -0.85, 1.00),
    "AW": _v(0.95, 0.10, 0.0, raise_=0.15, end=(0.40, -0.60, 0.70, 0.0, 0.0, 0.0)),
    "AY": _v(0.95, 0.10, 0.0, raise_=0.15, end=(0.35, 0.50, 0.0, 0.0, 0.0, 0.20)),
    "EY": _v(0.55, 0.40, 0.0, raise_=0.20, end=(0.30, 0.55, 0.0, 0.0, 0.0, 0.25)),
    "OW": _v(0.60, -0.45, 0.60, end=(0.35, -0.75, 0.85, 0.0, 0.0, 0.0)),
    "OY": _v(0.65, -0.45, 0.60, end=(0.30, 0.50, 0.0, 0.0, 0.0, 0.20)),
    # bilabials: the lips close whatever the neighbours do
    "P": _v(0.10, 0.0, 0.0, close=1.0, dom=(0.8, 0.1, 0.1, 8.0, 1.0, 0.5)),
    "B": _v(0.10, 0.0, 0.0, close=1.0, dom=(0.8, 0.1, 0.1, 8.0, 1.0, 0.5)),
    "M": _v(0.10, 0.0, 0.0, close=1.0, dom=(0.8, 0.1, 0.1, 8.0, 1.0, 0.5)),
    # labiodentals: lower lip to the upper teeth
    "F": _v(0.15, 0.05, 0.0, tuck=1.0, raise_=0.35, dom=(0.8, 0.2, 0.2, 2.0, 8.0, 1.0)),
    "V": _v(0.15, 0.05, 0.0, tuck=1.0, raise_=0.35, dom=(0.8, 0.2, 0.2, 2.0, 8.0, 1.0)),
    # dentals: tongue between the teeth, jaw a little open
    "TH": _v(0.22, 0.10, 0.0, raise_=0.10, dom=(0.7, 0.3, 0.3, 1.5, 1.0, 0.6)),
    "DH": _v(0.22, 0.10, 0.0, raise_=0.10, dom=(0.7, 0.3, 0.3, 1.5, 1.0, 0.6)),
    # alveolars
    "T": _v(0.20, 0.10, dom=_CONS),
    "D": _v(0.20, 0.10, dom=_CONS),
    "N": _v(0.20, 0.10, dom=_CONS),
    "L": _v(0.30, 0.10, dom=(0.4, 0.2, 0.2, 1.0, 1.0, 0.6)),
    "S": _v(0.10, 0.30, 0.0, raise_=0.20, dom=(1.0, 0.5, 0.3, 1.0, 1.0, 0.6)),
    "Z": _v(0.10, 0.30, 0.0, raise_=0.20, dom=(1.0, 0.5, 0.3, 1.0, 1.0, 0.6)),
    # postalveolars: protruded, flared lips
    "SH": _v(0.15, -0.50, 0.70, raise_=0.35, dom=(0.8, 1.5, 2.0, 1.0, 1.0, 1.0)),
    "ZH": _v(0.15, -0.50, 0.70, raise_=0.35, dom=(0.8, 1.5, 2.0, 1.0, 1.0, 1.0)),
    "CH": _v(0.15, -0.50, 0.70, raise_=0.35, dom=(0.8, 1.5, 2.0, 1.0, 1.0, 1.0)),
    "JH": _v(0.15, -0.50, 0.70, raise_=0.35, dom=(0.8, 1.5, 2.0, 1.0, 1.0, 1.0)),
    # approximants
    "R": _v(0.25, -0.40, 0.45, dom=(0.5, 1.0, 1.0, 1.0, 1.0, 0.6)),
    "W": _v(0.15, -0.90, 0.95, dom=(0.8, 3.0, 3.0, 1.0, 1.0, 0.6)),
    "Y": _v(0.20, 0.50, 0.0, raise_=0.15, dom=(0.6, 0.8, 0.5, 1.0, 1.0, 0.6)),
    # velars and /h/: shaped by the neighbouring vowels
    "K": _v(0.30, 0.0, dom=(0.3, 0.1, 0.1, 1.0, 1.0, 0.3)),
    "G": _v(0.30, 0.0, dom=(0.3, 0.1, 0.1, 1.0, 1.0, 0.3)),
    "NG": _v(0.30, 0.0, dom=(0.3, 0.1, 0.1, 1.0, 1.0, 0.3)),
    "HH": _v(0.40, 0.0, dom=(0.1, 0.05, 0.05, 0.5, 0.5, 0.1)),
    # silence: mouth at rest, lips lightly together
    "sil": _v(0.0, 0.0, 0.0, close=1.0, dom=(1.0, 0.8, 0.8, 1.0, 1.0, 1.0)),
}

# How fast dominance decays away from a phone (1/s), before it (anticipation) and after it
# (carry-over), scaled per parameter: rounding is anticipated early, lip closure and the /f v/ tuck
# are brief gestures whose influence ends within about a frame.
_THETA_BEFORE, _THETA_AFTER = 5.0, 7.0
_THETA_SCALE = np.array([1.0, 1.0, 0.7, 10.0, 10.0, 1.4])
_PLATEAU = 0.5  # full dominance over the middle half of a phone
# s, Gaussian smoothing per parameter: the jaw is heavy and slow, the lips are light and quick
_INERTIA = np.array([0.035, 0.035, 0.035, 0.025, 0.025, 0.035])
_GRID_RATE = 200.0  # Hz, where the blend is evaluated before smoothing


@dataclass(frozen=True)
class ArticulationStyle:
    """How one speaker articulates: opening and lip amplitude, crispness (a faster dominance decay is
    less coarticulation), and how far the mouth leads the sound (lips move before the audio)."""

    amplitude: float = 1.0
    lip_amplitude: float = 1.0
    speed: float = 1.0
    lead: float = 0.02

    @classmethod
    def sample(cls, rng: np.random.Generator) -> ArticulationStyle:
        return cls(
            amplitude=float(rng.uniform(0.7, 1.35)),
            lip_amplitude=float(rng.uniform(0.7, 1.3)),
            speed=float(rng.uniform(0.8, 1.25)),
            lead=float(rng.uniform(0.0, 0.04)),
        )


@dataclass
class _Silence:
    start: float
    end: float
    symbol: str = "sil"


def _symbol(symbol: str) -> str:
    s = symbol.strip().rstrip("012")
    return "sil" if s.lower() in ("sil", "sp", "spn", "pau", "") else s.upper()


def _segments(phones: Sequence[PhoneLike], rng: np.random.Generator | None, style: ArticulationStyle):
    """Phones -> (centre, half length, target (6,), dominance (6,)) per articulatory segment;
    diphthongs become two segments, targets get the speaker's amplitude and a little per-phone
    variation (no two /aa/ are the same)."""
    rows = []
    for phone in phones:
        sym = _symbol(phone.symbol)
        if sym not in VISEMES:
            raise ValueError(f"unknown phone symbol {phone.symbol!r}")
        vis = VISEMES[sym]
        start, end = float(phone.start), float(max(phone.end, phone.start + 1e-3))
        parts = [(start, end, vis.target)]
        if vis.target_end is not None:
            mid = 0.5 * (start + end)
            parts = [(start, mid, vis.target), (mid, end, vis.target_end)]
        for a, b, target in parts:
            t = np.array(target, dtype=np.float64)
            jitter = rng.normal(0.0, 0.12) if rng is not None and sym != "sil" else 0.0
            t[0] *= style.amplitude * (1.0 + jitter)
            t[1] *= style.lip_amplitude
            t[2] *= style.lip_amplitude
            rows.append((0.5 * (a + b), 0.5 * (b - a), t, np.array(vis.dominance, dtype=np.float64)))
    return rows


def with_rest(phones: Sequence[PhoneLike], start: float, end: float, piece: float = 0.4) -> list:
    """`phones` with silence from `start` to the first phone and from the last one to `end`: the mouth at rest
    in the pauses around an utterance, instead of the nearest phone's shape held by its dominance.

    The rest comes in `piece`-second silences counted from the speech outwards: a segment dominates fully only
    over its middle half, so one long silence would let the first vowel's anticipation open the mouth a third of
    a second before the sound; with 0.4 s pieces the lips part ~0.1 s before it (and shorter pieces, each
    dominating near the speech, would hold the first vowel half shut).
    """
    phones = list(phones)
    first, last = (float(phones[0].start), float(phones[-1].end)) if phones else (end, end)

    def tiles(a: float, b: float, outwards: int) -> list:
        count = max(1, int(np.ceil((b - a) / piece - 1e-9)))
        edges = sorted([b - k * piece for k in range(count)] + [a] if outwards < 0
                       else [a + k * piece for k in range(count)] + [b])
        return [_Silence(float(x), float(y)) for x, y in pairwise(edges) if y > x]

    return (tiles(start, first, -1) if start < first else []) + phones + (tiles(last, end, 1) if last < end else [])


def mouth_trajectory(
    phones: Sequence[PhoneLike],
    num_frames: int,
    fps: float = 25.0,
    t0: float = 0.0,
    rng: np.random.Generator | None = None,
    style: ArticulationStyle | None = None,
) -> MouthParams:
    """Mouth parameters at the video frames t0 + t/fps from timed phones (ARPAbet or "sil").

    Each parameter is the dominance-weighted mean of all phones' targets (Cohen & Massaro 1993);
    dominance is full over the middle of a phone and decays as exp(-theta * distance) outside it.
    ``style`` (default: drawn from ``rng``, or the average speaker without one) sets the speaker.
    """
    # imported here: the pipeline imports this module (living_head) without needing scipy, ~0.2 s of cold start
    from scipy.ndimage import gaussian_filter1d

    if style is None:
        style = ArticulationStyle.sample(rng) if rng is not None else ArticulationStyle()
    if not phones:
        phones = [_Silence(t0, t0 + num_frames / fps)]
    segs = _segments(phones, rng, style)
    centre = np.array([s[0] for s in segs])[:, None, None]
    half = np.array([s[1] for s in segs])[:, None, None]
    target = np.stack([s[2] for s in segs])[:, None, :]
    dom = np.stack([s[3] for s in segs])[:, None, :]
    # evaluated on a fine grid reaching past the clip, then smoothed: articulators have mass, so even
    # the lips take a few tens of milliseconds to close or open
    step = 1.0 / _GRID_RATE
    pad = 4 * _INERTIA.max()
    times = np.arange(t0 - pad, t0 + (num_frames - 1) / fps + pad + step, step) + style.lead
    dist = times[None, :, None] - centre
    outside = np.maximum(np.abs(dist) - _PLATEAU * half, 0.0)
    theta = np.where(dist < 0, _THETA_BEFORE, _THETA_AFTER) * _THETA_SCALE * style.speed
    # log-domain blend: far from every phone the weights stay finite
    log_w = np.log(dom) - theta * outside
    w = np.exp(log_w - log_w.max(axis=0, keepdims=True))
    blend = (w * target).sum(0) / w.sum(0)
    fine = np.stack([gaussian_filter1d(blend[:, k], _INERTIA[k] * _GRID_RATE, mode="nearest")
                     for k in range(blend.shape[1])], axis=1)
    frame_times = t0 + np.arange(num_frames) / fps + style.lead
    values = np.stack([np.interp(frame_times, times, fine[:, k]) for k in range(fine.shape[1])], axis=1)
    values[:, 0] = np.clip(values[:, 0], 0.0, 1.4)
    values[:, 1] = np.clip(values[:, 1], -1.0, 1.0)
    values[:, 2:] = np.clip(values[:, 2:], 0.0, 1.0)
    return MouthParams.from_array(values)


# landmarks

# How far each point moves, as a fraction of the jaw's drop at the lower lip's centre: the jaw
# contour by its distance from the hinge (nothing at the ears, all at the chin), lower lip points by
# how central they are, the mouth corners about a third.
_JAW_WEIGHT = np.array([0.0, 0.03, 0.1, 0.22, 0.4, 0.6, 0.78, 0.92, 1.0,
                        0.92, 0.78, 0.6, 0.4, 0.22, 0.1, 0.03, 0.0])
_LOWER_LIP = {55: 0.7, 56: 0.95, 57: 1.0, 58: 0.95, 59: 0.7, 65: 0.92, 66: 1.0, 67: 0.92, 48: 0.3, 54: 0.3,
              60: 0.35, 64: 0.35}
_UPPER_INNER = {61: 0.8, 62: 1.0, 63: 0.8}
_UPPER_OUTER = {49: 0.5, 50: 0.8, 51: 1.0, 52: 0.8, 53: 0.5}
_PAIRS = ((61, 67), (62, 66), (63, 65))  # inner lip: upper point, lower point facing it
_OUTER_OF = {61: 50, 62: 51, 63: 52, 67: 58, 66: 57, 65: 56}
MAX_GAP = 0.44  # inner-lip gap at jaw_open = 1, in inter-ocular distances (tuned on franck.mp4)
_CHIN_PER_GAP = 0.9  # the chin drops a little less than the lower lip opens (the lip also everts)


def _face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mouth centre, the face's horizontal and downward unit vectors, and its inter-ocular distance."""
    right_eye, left_eye = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    across = left_eye - right_eye
    iod = float(np.linalg.norm(across))
    u = across / iod
    v = np.array([-u[1], u[0]])
    return 0.5 * (landmarks[48] + landmarks[54]), u, v, iod


def apply_mouth(
    ref_landmarks: np.ndarray, params: MouthParams, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Deform a face's own 68 landmarks (crop pixels) by mouth parameters -> (T, 68, 2) float32.

    The photo's mouth may be open: it is first closed (lower lip up to the upper, jaw with it), then
    opened per frame. ``rng`` gives the face a slightly asymmetric, slightly larger or smaller
    opening; without it the mouth moves symmetrically with ``MAX_GAP``.
    """
    ref = np.asarray(ref_landmarks, dtype=np.float64)
    origin, u, v, iod = _face_frame(ref)
    local = np.stack([(ref - origin) @ u, (ref - origin) @ v], axis=-1)  # x across, y down
    n = len(params)
    x = np.repeat(local[None, :, 0], n, axis=0)
    y = np.repeat(local[None, :, 1], n, axis=0)
    gain, tilt = (1.0, 0.0) if rng is None else (rng.uniform(0.9, 1.1), rng.uniform(-0.08, 0.08))
    half_width = 0.5 * (local[54, 0] - local[48, 0])

    jaw, width, rnd = params.jaw_open, params.lip_width[:, None], params.lip_round[:, None]
    # the lips meet fully from closure 0.9 on: a /p/ between open vowels is still a full closure
    close = np.clip(params.lip_closure / 0.9, 0.0, 1.0)
    tuck, lift = params.lower_lip_tuck, params.upper_lip_raise

    # the photo's own opening: the jaw drop below is counted from a closed mouth, and the inner lower
    # lip is first put where that drop will give each gap its share of the centre gap
    gap0 = np.array([local[lo, 1] - local[up, 1] for up, lo in _PAIRS])
    open0 = max(gap0[1], 0.0)
    drop = MAX_GAP * iod * gain * jaw - open0  # lower-lip drop at its centre
    for i, (_, lo) in enumerate(_PAIRS):
        y[:, lo] -= gap0[i] - _LOWER_LIP[lo] * open0
    # jaw rotation: lower lip, corners and jaw contour drop; a slight tilt makes it asymmetric
    side = np.clip(local[:, 0] / max(half_width, 1e-6), -3, 3)
    for k, wgt in enumerate(_JAW_WEIGHT):
        y[:, k] += _CHIN_PER_GAP * drop * wgt * (1.0 + tilt * side[k] / 3)
        x[:, k] -= 0.03 * iod * jaw * np.sign(local[k, 0]) * wgt  # the lower face narrows
    for k, wgt in _LOWER_LIP.items():
        y[:, k] += drop * wgt * (1.0 + tilt * side[k])
    for k, wgt in _UPPER_INNER.items():  # the upper lip follows a little
        y[:, k] -= 0.08 * np.maximum(drop, 0.0) * wgt

    # width: spread pulls the corners out, rounding pulls the whole mouth in; protrusion narrows the
    # lip opening to a small round hole (the side gaps approach the centre gap) and shows more lip
    mouth = np.arange(48, 68)
    cx = local[mouth, 0]
    scale = 1.0 + 0.12 * np.maximum(width, 0.0) + 0.28 * np.minimum(width, 0.0) - 0.1 * rnd
    x[:, mouth] = cx * scale
    x[:, [60, 64]] *= 1.0 - 0.2 * rnd
    for up, lo in _PAIRS:
        shut = 0.45 * rnd[:, 0] * np.maximum(y[:, lo] - y[:, up], 0.0)
        y[:, up] += 0.4 * shut
        y[:, lo] -= 0.6 * shut
    centre_gap = y[:, 66] - y[:, 62]
    for up, lo in ((61, 67), (63, 65)):
        extra = 0.5 * rnd[:, 0] * np.maximum(centre_gap - (y[:, lo] - y[:, up]), 0.0)
        y[:, up] -= 0.4 * extra
        y[:, lo] += 0.6 * extra
    y[:, 49:54] -= 0.04 * iod * rnd
    y[:, 55:60] += 0.04 * iod * rnd

    # upper lip raise (spread vowels, /f v/, /sh/): shows the upper teeth
    for k, wgt in {**_UPPER_INNER, **_UPPER_OUTER}.items():
        y[:, k] -= 0.06 * iod * wgt * lift

    # closure: inner lips meet a little below the upper lip; the outer lips come along
    for up, lo in _PAIRS:
        meet = y[:, up] + 0.45 * (y[:, lo] - y[:, up])
        d_up, d_lo = close * (meet - y[:, up]), close * (meet - y[:, lo])
        y[:, up] += d_up
        y[:, lo] += d_lo
        y[:, _OUTER_OF[up]] += 0.5 * d_up
        y[:, _OUTER_OF[lo]] += 0.7 * d_lo
    y_before_tuck = y.copy()
    # tuck: the lower lip rises to the upper teeth, just below the upper lip, and rolls in
    for up, lo in _PAIRS:
        rise = tuck * np.maximum(y[:, lo] - (y[:, up] + 0.05 * iod), 0.0)
        y[:, lo] -= rise
        y[:, _OUTER_OF[lo]] -= rise + 0.25 * tuck * (local[_OUTER_OF[lo], 1] - local[lo, 1])
    y[:, 59] -= 0.6 * (y_before_tuck[:, 58] - y[:, 58])
    y[:, 55] -= 0.6 * (y_before_tuck[:, 56] - y[:, 56])

    # anatomy: lips never cross, keep some thickness, corners stay outside the inner corners
    for up, lo in _PAIRS:
        y[:, lo] = np.maximum(y[:, lo], y[:, up])
        thick_up = 0.35 * max(local[up, 1] - local[_OUTER_OF[up], 1], 0.02 * iod)
        thick_lo = 0.35 * max(local[_OUTER_OF[lo], 1] - local[lo, 1], 0.02 * iod)
        y[:, _OUTER_OF[up]] = np.minimum(y[:, _OUTER_OF[up]], y[:, up] - thick_up)
        y[:, _OUTER_OF[lo]] = np.maximum(y[:, _OUTER_OF[lo]], y[:, lo] + thick_lo)
    x[:, 60] = np.maximum(x[:, 60], x[:, 48] + 0.01 * iod)
    x[:, 64] = np.minimum(x[:, 64], x[:, 54] - 0.01 * iod)

    out = origin + x[..., None] * u + y[..., None] * v
    return out.astype(np.float32)


def close_eyes(landmarks: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Lower the upper eyelids (37, 38, 43, 44) onto the lower ones (41, 40, 47, 46), which rise a
    little: (T, 68, 2) landmarks, (T,) closure in [0, 1]."""
    out = np.array(landmarks, dtype=np.float32, copy=True)
    c = np.asarray(closure, dtype=np.float32)[:, None]
    for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
        meet = out[:, up] + 0.8 * (out[:, lo] - out[:, up])
        out[:, up], out[:, lo] = out[:, up] + c * (meet - out[:, up]), out[:, lo] + c * (meet - out[:, lo])
    # the brows follow the lids down a little
    down = 0.03 * inter_ocular(out)[:, None] * c
    out[:, 17:27] += down[..., None] * _down(out)[:, None, :]
    return out


def _down(landmarks: np.ndarray) -> np.ndarray:
    across = landmarks[:, 42:48].mean(1) - landmarks[:, 36:42].mean(1)
    across /= np.linalg.norm(across, axis=-1, keepdims=True)
    return np.stack([-across[:, 1], across[:, 0]], axis=-1)


def _smooth_noise(rng: np.random.Generator, n: int, sigma_frames: float) -> np.ndarray:
    """Unit-variance Gaussian noise low-passed with a Gaussian of ``sigma_frames``."""
    pad = int(4 * sigma_frames) + 1
    noise = rng.standard_normal(n + 2 * pad)
    k = np.exp(-0.5 * (np.arange(-pad, pad + 1) / sigma_frames) ** 2)
    smooth = np.convolve(noise, k / np.sqrt((k**2).sum()), mode="same")[pad : pad + n]
    return smooth


def head_motion(
    num_frames: int, rng: np.random.Generator, fps: float = 25.0, center: tuple[float, float] = (128.0, 128.0)
) -> np.ndarray:
    """(T, 2, 3) similarities about ``center``: slow drift plus a faint tremor, a speaker's own
    amount of motion (roll up to ~3 degrees, translation ~3 px, scale ~2%)."""
    energy = rng.uniform(0.3, 1.0)
    slow, fast = 0.6 * fps, 0.06 * fps  # drift over ~1 s, tremor over a few frames
    tracks = []
    for amp, limit in ((1.3, 3.0), (1.3, 3.0), (1.0, 3.0), (0.008, 0.02)):  # roll (deg), x, y, scale
        value = _smooth_noise(rng, num_frames, slow) + 0.15 * _smooth_noise(rng, num_frames, fast)
        tracks.append(np.clip(energy * amp * value, -limit, limit))
    roll, tx, ty = np.deg2rad(tracks[0]), tracks[1], tracks[2]
    scale = 1.0 + tracks[3]
    cos, sin = scale * np.cos(roll), scale * np.sin(roll)
    cx, cy = center
    out = np.empty((num_frames, 2, 3), dtype=np.float32)
    out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = cos, -sin, sin, cos
    out[:, 0, 2] = cx + tx - cos * cx + sin * cy
    out[:, 1, 2] = cy + ty - sin * cx - cos * cy
    return out


def blinks(num_frames: int, rng: np.random.Generator, fps: float = 25.0,
           per_minute: tuple[float, float] = (15.0, 20.0), seconds: tuple[float, float] = (0.10, 0.15)) -> np.ndarray:
    """(T,) eyelid closure in [0, 1]: blinks at a rate drawn from `per_minute` (the corpus: 15-20), each
    lasting a time drawn from `seconds` (the corpus: 100-150 ms, the lids' fastest), closing faster than they
    reopen. The clip starts at a random point of the speaker's blink rhythm."""
    rate = rng.uniform(*per_minute) / 60.0
    duration = num_frames / fps
    times = np.arange(num_frames) / fps
    closure = np.zeros(num_frames)
    t = rng.exponential(1.0 / rate) - 0.15  # a blink may be under way at the first frame
    while t < duration:
        length = rng.uniform(*seconds)
        close_part = 0.4 * length
        s = times - t
        rising = np.clip(s / close_part, 0.0, 1.0)
        falling = np.clip(1.0 - (s - close_part) / (length - close_part), 0.0, 1.0)
        shape = np.where(s < close_part, rising, falling) * ((s > 0) & (s < length))
        closure = np.maximum(closure, np.sin(0.5 * np.pi * shape) ** 2 * rng.uniform(0.85, 1.0))
        t += max(0.25, rng.exponential(1.0 / rate))
    return closure.astype(np.float32)


@dataclass
class LivingHead:
    """Blinks and a small, smooth head motion for a video of `len(blink)` frames (``living_head``)."""

    blink: np.ndarray  # (T,) eyelid closure in [0, 1]
    head: np.ndarray  # (T, 2, 3) similarity per frame, crop pixels

    def apply(self, landmarks: np.ndarray, blink: bool = True, start: int = 0) -> np.ndarray:
        """Landmarks (n, 68, 2) of frames `start` to `start + n` moved with the head and, with `blink`, their
        eyelids closed (a track made piece by piece gets each piece's own frames of the motion)."""
        end = start + len(landmarks)
        moved = close_eyes(np.asarray(landmarks, np.float32), self.blink[start:end]) if blink \
            else np.asarray(landmarks)
        head = self.head[start:end]
        return (np.einsum("tij,tkj->tki", head[:, :, :2], moved) + head[:, None, :, 2]).astype(np.float32)


def living_head(num_frames: int, reference: np.ndarray, seed: int = 0, fps: float = 25.0) -> LivingHead:
    """Blinks and head motion to add to landmark tracks predicted from speech, the same for every track (the
    app's ablations then differ only in their mouths).

    A2L predicts a still head with open eyes; a face that only moves its lips looks dead. The corpus's own
    motions are reused: blinks at 10-20 a minute, each ~0.3 s (a relaxed blink, slower than the corpus's
    quickest), and ``head_motion`` about the photo's face centre. Deterministic per `seed`, so the same
    request gives the same video.
    """
    rng = np.random.default_rng(seed)
    blink = blinks(num_frames, rng, fps=fps, per_minute=(10.0, 20.0), seconds=(0.25, 0.35))
    head = head_motion(num_frames, rng, fps=fps, center=tuple(np.asarray(reference, np.float64).mean(0)))
    return LivingHead(blink, head)


def animate(
    ref_landmarks: np.ndarray,
    phones: Sequence[PhoneLike],
    num_frames: int,
    rng: np.random.Generator,
    t0: float = 0.0,
    fps: float = 25.0,
) -> dict:
    """A speaking face's landmarks for the frames t0 + t/fps of an utterance with timed ``phones``.

    Returns landmarks (T, 68, 2) float32 with mouth motion, blinks and head motion; params
    (``MouthParams``); head (T, 2, 3) similarity per frame; blink (T,) eyelid closure.
    """
    ref = np.asarray(ref_landmarks, dtype=np.float32)
    params = mouth_trajectory(phones, num_frames, fps=fps, t0=t0, rng=rng)
    landmarks = apply_mouth(ref, params, rng)
    blink = blinks(num_frames, rng, fps=fps)
    landmarks = close_eyes(landmarks, blink)
    head = head_motion(num_frames, rng, fps=fps, center=tuple(ref.mean(0)))
    landmarks = np.einsum("tij,tkj->tki", head[:, :, :2], landmarks) + head[:, None, :, 2]
    return {"landmarks": landmarks.astype(np.float32), "params": params, "head": head, "blink": blink}
