"""Reader for the LRW folder layout (Lip Reading in the Wild), shared by real LRW and our synthetic corpus.

Layout: ``ROOT/WORD/{train,val,test}/WORD_00001.mp4`` with a ``WORD_00001.txt`` beside it::

    Text:  ABOUT
    Conf:  4
    Duration: 0.27 seconds

    WORD START END ASDSCORE
    ABOUT 0.37 0.64 4.6

Each clip is 29 frames at 25 fps (1.16 s) with the word in the middle. Our synthetic corpus may add a
``WORD_00001.json`` ground-truth sidecar; it is never read here (the paper's targets are dlib landmarks
detected on the frames), only its path is exposed as `Clip.meta`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from talkface.errors import TalkFaceError

SPLITS = ("train", "val", "test")
CLIP_FRAMES = 29
CLIP_SECONDS = CLIP_FRAMES / 25
VOCABULARY_FILE = Path(__file__).resolve().parents[2] / "assets" / "lrw_words.txt"


@dataclass
class Clip:
    """One video clip and what the dataset says about it; times are seconds from the clip start."""

    video: Path
    word: str | None
    transcript: str
    split: str
    speaker: str | None
    words: list[tuple[str, float, float]] = field(default_factory=list)
    meta: Path | None = None

    @property
    def clip_id(self) -> str:
        """Stable unique name: LRW file names already contain the word, GRID ones are unique per speaker."""
        return f"{self.video.parent.name}/{self.video.stem}"


def lrw_vocabulary() -> list[str]:
    """The 500 LRW words in label order (label = line index in assets/lrw_words.txt)."""
    return [w for w in VOCABULARY_FILE.read_text().split() if w]


def parse_lrw_txt(path: str | Path) -> dict:
    """Read an LRW annotation: text, confidence, word duration and the word timing table.

    Tolerant of the variants seen in the wild (missing table or missing duration): without a table the
    word is placed in the middle of the 1.16 s clip, as LRW's construction guarantees.
    """
    text, conf, duration = "", None, None
    words: list[tuple[str, float, float]] = []
    scores: list[float] = []
    in_table = False
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if in_table:
            parts = line.split()
            if len(parts) >= 3:
                words.append((parts[0], float(parts[1]), float(parts[2])))
                scores.append(float(parts[3]) if len(parts) > 3 else float("nan"))
        elif line.startswith("Text:"):
            text = line[len("Text:"):].strip()
        elif line.startswith("Conf:"):
            conf = float(line[len("Conf:"):].strip())
        elif line.startswith("Duration:"):
            duration = float(line[len("Duration:"):].split()[0])
        elif line.split() == ["WORD", "START", "END", "ASDSCORE"]:
            in_table = True
    if not words and text and duration is not None:
        mid = CLIP_SECONDS / 2
        words = [(text, round(mid - duration / 2, 2), round(mid + duration / 2, 2))]
    if duration is None and words:
        duration = round(words[0][2] - words[0][1], 2)
    return {"text": text, "conf": conf, "duration": duration, "words": words, "asd_scores": scores}


def write_lrw_txt(path: str | Path, word: str, start: float, end: float, conf: float = 4,
                  asd_score: float = 5.0) -> None:
    """Write an annotation in LRW's exact layout (used by the synthetic corpus generator)."""
    lines = [
        f"Text:  {word}",
        f"Conf:  {conf:g}",
        f"Duration: {end - start:.2f} seconds",
        "",
        "WORD START END ASDSCORE",
        f"{word} {start:.2f} {end:.2f} {asd_score:.1f}",
    ]
    Path(path).write_text("\n".join(lines) + "\n")


def read_lrw(root: str | Path, splits: Iterable[str] = SPLITS,
             words: Iterable[str] | None = None) -> list[Clip]:
    """List every clip under an LRW-shaped root, sorted by word, split and name.

    `words` restricts the result to those word folders (e.g. a 3-word subset for a quick experiment).
    """
    root = Path(root)
    if not root.is_dir():
        raise TalkFaceError(f"The LRW folder {root} does not exist.")
    wanted = None if words is None else {w.upper() for w in words}
    clips = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if wanted is not None and word_dir.name.upper() not in wanted:
            continue
        for split in splits:
            # names starting with a dot are an interrupted writer's temporary files, never clips
            for video in sorted(v for v in (word_dir / split).glob("*.mp4") if not v.name.startswith(".")):
                txt = video.with_suffix(".txt")
                info = parse_lrw_txt(txt) if txt.exists() else {"text": word_dir.name, "words": []}
                sidecar = video.with_suffix(".json")
                clips.append(Clip(
                    video=video,
                    word=word_dir.name,
                    transcript=info["text"] or word_dir.name,
                    split=split,
                    speaker=None,
                    words=info["words"],
                    meta=sidecar if sidecar.exists() else None,
                ))
    return clips
