"""Reader for the GRID audio-visual sentence corpus (Cooke et al. 2006).

Layout: ``ROOT/sN/NAME.mpg`` (25 fps, 360x288, sound inside) and ``ROOT/alignments/sN/NAME.align``
(the ``align/`` sub-folder of GRID's per-speaker alignment archives is accepted too). An align file has
lines ``start end word``; times count 1/25000 s (GRID's 25 kHz audio samples, i.e. video frame x 1000),
so ``0 23750 sil`` is 0-0.95 s. ``sil`` and ``sp`` mark silence and short pauses.

Every sentence follows ``command colour preposition letter digit adverb`` over 51 words. Splits are by
speaker; the default test speakers s1, s2, s20, s22 are the unseen-speaker split of LipNet (Assael et al.
2016) and many papers after it; every other speaker trains unless named in `val_speakers`.

To turn a 3 s sentence into an LRW-like 29-frame sample, each clip is labelled with one of its words,
picked by a stable hash of the clip name so that all six word positions are covered evenly; the
preparation step cuts the 29 frames centred on that word.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from pathlib import Path

from talkface.data.lrw import Clip
from talkface.errors import TalkFaceError

ALIGN_UNITS_PER_SECOND = 25000
SILENCE = frozenset({"sil", "sp"})
GRID_WORDS = (
    "bin lay place set blue green red white at by in with "
    "a b c d e f g h i j k l m n o p q r s t u v x y z "
    "zero one two three four five six seven eight nine again now please soon"
).split()
TEST_SPEAKERS = ("s1", "s2", "s20", "s22")


def parse_grid_align(path: str | Path) -> list[tuple[str, float, float]]:
    """Read a GRID .align file as (word, start s, end s), silences included."""
    words = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            start, end, word = parts
            words.append((word, int(start) / ALIGN_UNITS_PER_SECOND, int(end) / ALIGN_UNITS_PER_SECOND))
    return words


def _pick_word(clip_name: str, words: list[tuple[str, float, float]]) -> str | None:
    spoken = [w for w, _, _ in words if w not in SILENCE]
    return spoken[zlib.crc32(clip_name.encode()) % len(spoken)] if spoken else None


def _speaker_number(name: str) -> int:
    return int(name[1:])


def read_grid(root: str | Path, test_speakers: Iterable[str] = TEST_SPEAKERS,
              val_speakers: Iterable[str] = ()) -> list[Clip]:
    """List every GRID sentence under `root`, sorted by speaker number and name, split by speaker.

    A video without an alignment file is still listed (with no words) so that the preparation step can
    report it as skipped instead of it silently vanishing.
    """
    root = Path(root)
    if not root.is_dir():
        raise TalkFaceError(f"The GRID folder {root} does not exist.")
    test, val = set(test_speakers), set(val_speakers)
    speakers = sorted((p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"s\d+", p.name)),
                      key=lambda p: _speaker_number(p.name))
    clips = []
    for speaker_dir in speakers:
        speaker = speaker_dir.name
        aligns = {p.stem: p for p in (root / "alignments" / speaker).rglob("*.align")}
        split = "test" if speaker in test else "val" if speaker in val else "train"
        for video in sorted(speaker_dir.glob("*.mpg")):
            words = parse_grid_align(aligns[video.stem]) if video.stem in aligns else []
            clips.append(Clip(
                video=video,
                word=_pick_word(f"{speaker}/{video.stem}", words),
                transcript=" ".join(w for w, _, _ in words if w not in SILENCE),
                split=split,
                speaker=speaker,
                words=words,
                meta=None,
            ))
    return clips
