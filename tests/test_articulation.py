"""Synthetic mouth motion: visemes, coarticulation, the deformed landmarks, head motion and blinks."""

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pytest

from talkface.data.articulation import (
    PARAMS,
    VISEMES,
    ArticulationStyle,
    MouthParams,
    animate,
    apply_mouth,
    blinks,
    close_eyes,
    head_motion,
    inter_ocular,
    living_head,
    mouth_trajectory,
    with_rest,
)
from talkface.data.speech import ARPABET
from talkface.face import MEAN_SHAPE

FPS = 25.0


@dataclass
class Phone:
    symbol: str
    start: float
    end: float


def phones(spec: str) -> list[Phone]:
    """'sil:200 AA:150 P:90' -> timed phones (durations in ms)."""
    out, t = [], 0.0
    for item in spec.split():
        sym, ms = item.split(":")
        out.append(Phone(sym, t, t + float(ms) / 1000))
        t += float(ms) / 1000
    return out


def frame_at(seconds: float) -> int:
    return round(seconds * FPS)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real face's landmarks (dlib mean shape of aligned photos) at crop scale: 60 px between the eyes."""
    lm = MEAN_SHAPE.astype(np.float64)
    return lm * (60.0 / inter_ocular(lm)) + [128.0, 140.0]


def gap(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap in inter-ocular distances: (T, 68, 2) -> (T,)."""
    return np.linalg.norm(landmarks[:, [61, 62, 63]] - landmarks[:, [67, 66, 65]], axis=2).mean(1) / inter_ocular(
        landmarks
    )


def width(landmarks: np.ndarray) -> np.ndarray:
    return np.linalg.norm(landmarks[:, 54] - landmarks[:, 48], axis=1) / inter_ocular(landmarks)


def speak(face: np.ndarray, spec: str, style: ArticulationStyle | None = None) -> tuple[list[Phone], np.ndarray]:
    ph = phones(spec)
    n = int(ph[-1].end * FPS)
    params = mouth_trajectory(ph, n, style=style or ArticulationStyle())
    return ph, apply_mouth(face, params)


def test_every_phone_has_a_viseme_with_sane_values():
    assert set(ARPABET) <= set(VISEMES)
    for sym, vis in VISEMES.items():
        assert len(vis.target) == len(vis.dominance) == len(PARAMS), sym
        assert all(d > 0 for d in vis.dominance), sym
    # the phones that must close or tuck the lips dominate that parameter
    assert min(VISEMES[s].dominance[3] for s in "PBM") > 4 * VISEMES["AA"].dominance[3]
    assert min(VISEMES[s].dominance[4] for s in "FV") > 4 * VISEMES["AA"].dominance[4]


def test_shapes_and_types(face):
    ph = phones("sil:100 HH:60 AH:120 L:60 OW:200 sil:200")
    params = mouth_trajectory(ph, 29, rng=np.random.default_rng(0))
    assert isinstance(params, MouthParams) and len(params) == 29
    assert params.to_array().shape == (29, len(PARAMS))
    out = animate(face, ph, 29, np.random.default_rng(0))
    assert out["landmarks"].shape == (29, 68, 2) and out["landmarks"].dtype == np.float32
    assert out["head"].shape == (29, 2, 3) and out["blink"].shape == (29,)
    assert np.isfinite(out["landmarks"]).all()


def test_bilabial_closes_the_lips_between_open_vowels(face):
    ph, lm = speak(face, "sil:150 AA:180 P:90 AA:180 B:80 AE:160 M:90 AA:200 sil:150")
    g = gap(lm)
    for stop in ph:
        if stop.symbol in "PBM":
            assert g[frame_at((stop.start + stop.end) / 2)] < 0.01, stop
    for vowel in ph:
        if vowel.symbol in ("AA", "AE"):
            assert g[frame_at((vowel.start + vowel.end) / 2)] > 0.12, vowel


def test_the_mouth_rests_in_the_pauses_around_an_utterance(face):
    """An utterance whose first phone starts at 0 (eSpeak's): without rest around it, the first vowel's
    dominance holds the mouth open through the pause before it; with_rest closes it there and after the end."""
    ph = phones("AA:200 T:80 AA:200")
    t0, n = -0.5, 40  # half a second of pause before the speech, ~0.3 s after it
    held = gap(apply_mouth(face, mouth_trajectory(ph, n, t0=t0, style=ArticulationStyle())))
    rest = with_rest(ph, t0 - 1.0, t0 + n / FPS + 1.0)
    spoken = [p.symbol for p in rest if p.symbol != "sil"]
    assert spoken == ["AA", "T", "AA"] and rest[0].start == t0 - 1.0 and rest[-1].end == t0 + n / FPS + 1.0
    assert all(a.end == b.start for a, b in pairwise(rest))  # tiled, no gap
    rested = gap(apply_mouth(face, mouth_trajectory(rest, n, t0=t0, style=ArticulationStyle())))
    assert held[:5].mean() > 0.3  # the pause's first frames: open as the vowel without rest
    assert rested[:5].max() < 0.01 and rested[-5:].max() < 0.01
    assert rested[frame_at(0.6)] > 0.3  # the speech itself unchanged
    assert with_rest([], 0.0, 1.0)[0].symbol == "sil"


def test_aa_opens_wider_than_iy(face):
    _, aa = speak(face, "sil:150 AA:250 sil:150")
    _, iy = speak(face, "sil:150 IY:250 sil:150")
    assert gap(aa).max() > 1.8 * gap(iy).max()
    assert gap(aa).max() > 0.2


def test_rounding_narrows_the_mouth(face):
    _, uw = speak(face, "sil:150 UW:250 sil:150")
    _, iy = speak(face, "sil:150 IY:250 sil:150")
    rest = width(face[None])[0]
    assert width(uw).min() < 0.85 * rest
    assert width(iy).max() > rest  # spread
    t = frame_at(0.275)
    assert width(uw)[t] < 0.8 * width(iy)[t]


def test_rounding_is_anticipated_through_a_consonant():
    # coarticulation: the /s/ of "soon" is already rounded, the /s/ of "seen" is not
    style = ArticulationStyle()
    soon = mouth_trajectory(phones("sil:200 S:120 UW:200 N:100 sil:200"), 20, style=style)
    seen = mouth_trajectory(phones("sil:200 S:120 IY:200 N:100 sil:200"), 20, style=style)
    t = frame_at(0.26)
    assert soon.lip_round[t] > seen.lip_round[t] + 0.2
    assert soon.lip_width[t] < seen.lip_width[t] - 0.3


def test_labiodental_tucks_the_lower_lip(face):
    ph, lm = speak(face, "sil:150 AA:180 F:110 AA:180 sil:150")
    f = next(p for p in ph if p.symbol == "F")
    t = frame_at((f.start + f.end) / 2)
    g = gap(lm)
    assert g[t] < 0.08 and g[t] < 0.5 * g[frame_at(0.24)]


def test_lips_never_cross(face):
    rng = np.random.default_rng(1)
    symbols = [s for s in ARPABET if s != "sil"]
    down = np.array([0.0, 1.0])
    for _ in range(10):
        spec = " ".join(f"{rng.choice(symbols)}:{rng.integers(40, 200)}" for _ in range(12))
        ph = phones(f"sil:100 {spec} sil:100")
        n = int(ph[-1].end * FPS)
        lm = apply_mouth(face, mouth_trajectory(ph, n, rng=rng), rng)
        inner = (lm[:, [67, 66, 65]] - lm[:, [61, 62, 63]]) @ down
        upper = (lm[:, [61, 62, 63]] - lm[:, [50, 51, 52]]) @ down
        lower = (lm[:, [56, 57, 58]] - lm[:, [65, 66, 67]]) @ down
        assert (inner >= -1e-4).all() and (upper > 0).all() and (lower > 0).all()


def test_an_open_mouthed_photo_is_closed_first(face):
    open_face = face.copy()
    open_face[[65, 66, 67, 55, 56, 57, 58, 59]] += [0.0, 10.0]  # lower lip down 10 px
    _, lm = speak(open_face, "sil:300 P:100 sil:300")
    assert gap(lm).max() < 0.01
    _, aa = speak(open_face, "sil:150 AA:250 sil:150")
    _, aa_closed_photo = speak(face, "sil:150 AA:250 sil:150")
    assert abs(gap(aa).max() - gap(aa_closed_photo).max()) < 0.02


def test_blinks_close_the_eyes_briefly_and_at_a_human_rate():
    rng = np.random.default_rng(0)
    minute = blinks(int(60 * FPS), rng)
    assert minute.min() >= 0 and minute.max() <= 1
    closed = minute > 0.5
    starts = np.flatnonzero(np.diff(closed.astype(int)) == 1)
    assert 8 <= len(starts) <= 30
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, closed.astype(int), 0])))[::2]
    assert runs.max() <= 4  # at most 160 ms past half closed


def test_close_eyes_meets_the_lids(face):
    lm = np.repeat(face[None].astype(np.float32), 3, axis=0)
    out = close_eyes(lm, np.array([0.0, 0.5, 1.0]))
    height = np.linalg.norm(out[:, [37, 38, 43, 44]] - out[:, [41, 40, 47, 46]], axis=2).mean(1)
    assert height[0] > 3 and height[1] == pytest.approx(height[0] / 2, rel=0.05) and height[2] < 1e-4
    assert np.allclose(out[:, 48:], lm[:, 48:])  # the mouth is untouched


def test_head_motion_is_small():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = head_motion(29, rng)
        scale = np.sqrt(np.linalg.det(m[:, :, :2]))
        roll = np.degrees(np.arctan2(m[:, 1, 0], m[:, 0, 0]))
        centre = m[:, :, :2] @ np.array([128.0, 128.0]) + m[:, :, 2] - 128.0
        assert np.abs(scale - 1).max() <= 0.02 + 1e-6
        assert np.abs(roll).max() <= 3.0 + 1e-6
        assert np.abs(centre).max() <= 3.0 + 1e-4
        # smooth: no jumps between frames
        assert np.abs(np.diff(roll)).max() < 1.0 and np.abs(np.diff(centre, axis=0)).max() < 1.0


def test_animate_is_deterministic_and_varies_by_seed(face):
    ph = phones("sil:200 DH:50 AH:60 W:80 ER:120 D:60 P:90 IY:130 P:80 AH:50 L:110 sil:300")
    a = animate(face, ph, 29, np.random.default_rng(5), t0=0.1)
    b = animate(face, ph, 29, np.random.default_rng(5), t0=0.1)
    c = animate(face, ph, 29, np.random.default_rng(6), t0=0.1)
    assert np.array_equal(a["landmarks"], b["landmarks"])
    assert not np.allclose(a["landmarks"], c["landmarks"])


def test_unknown_phone_is_rejected():
    with pytest.raises(ValueError):
        mouth_trajectory([Phone("QQ", 0.0, 0.1)], 5)


def test_homophemes_follow_the_articulation_model():
    """Phones the model moves identically share a viseme; words made of the same visemes are homophemes."""
    from experiments import diagnose_homophemes as diag

    classes = diag.viseme_classes()
    assert classes["P"] == classes["B"] == classes["M"] and classes["F"] == classes["V"]
    assert len({classes[p] for p in ("P", "F", "T", "W", "AA", "IY")}) == 6
    prons = {"billion": [("B", "IH", "L", "Y", "AH", "N")], "million": [("M", "IH", "L", "Y", "AH", "N")],
             "pillow": [("P", "IH", "L", "OW")], "fellow": [("F", "EH", "L", "OW")]}
    groups, missing = diag.homopheme_groups(["BILLION", "MILLION", "PILLOW", "FELLOW", "ZEBRA"], prons, classes)
    assert groups == [["BILLION", "MILLION"]] and missing == ["ZEBRA"]
    # and on the real dictionary the 500 LRW words stay almost all distinguishable
    result = diag.main([])
    assert result["ceiling_top1"] > 0.95 and not result["no_pronunciation"]


def test_the_living_head_applies_to_a_track_piece_by_piece(face):
    """A track made piece by piece (A2L's pieces in a streamed video) gets each piece's own frames of the motion
    and blinks: the same landmarks as the whole track at once."""
    head = living_head(150, face)
    track = np.repeat(face[None].astype(np.float32), 150, axis=0) + np.random.default_rng(0).normal(0, 1, (150, 68, 2))
    for blink in (True, False):
        whole = head.apply(track, blink=blink)
        pieces = np.concatenate([head.apply(track[a:b], blink=blink, start=a) for a, b in ((0, 56), (56, 150))])
        np.testing.assert_array_equal(pieces, whole)
    assert np.abs(head.apply(track[56:], start=56) - head.apply(track[56:])).max() > 0.1  # not the first frames'
