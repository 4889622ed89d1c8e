"""The product on real video: first frame as the photo, the clip's own speech as the audio, the generated
mouth against the person's real one (issue 19's protocol; the README's first table).

    python -m train.evaluate --real ../shared/real_av/grid --out eval/real       # every ablation
    python -m train.real_video ../shared/real_av/grid --out eval/real            # the same

For each clip with audio (GRID ``.mpg``, any ``.mp4``) and each A2L ablation the pipeline makes the video a
user would get; dlib then finds 68 points on the real and on the generated frames (``face.track_landmarks``,
independent of the landmarks the model was given) and ``metrics.lip_sync_scores`` compares the mouths:
opening correlation at lag 0 and at the best lag within ±3 frames, opening range ratio (p95-p5), mouth-shape
distance, and the opening on /p b m/ over that on vowels, from a forced alignment (pocketsphinx, as the
corpus does) of the clip's speech to its transcript: a ``.txt`` beside the clip, or the sentence a GRID file
name spells. The same scores on the A2L landmarks themselves (before L2F) say which stage loses what.
Writes ``results.json``, ``results.md`` and a JPEG contact sheet per clip (mouth crops: real | each ablation).

A validation set: measure and calibrate hand-set parameters on it, never train a network's weights on it.
GRID: Cooke, Barker, Cunningham, Shao (2006), CC BY 4.0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

from talkface.audio import SAMPLE_RATE
from talkface.checkpoints import BUNDLED
from talkface.data.speech import align
from talkface.face import AlignedFace, inter_ocular, track_landmarks
from talkface.metrics import lip_sync_scores
from talkface.pipeline import ABLATIONS, TalkingFacePipeline
from talkface.video import contact_sheet, read_video

# GRID file names spell the sentence: command, colour, preposition, letter, digit, adverb (one letter each).
_GRID = [
    {"b": "bin", "l": "lay", "p": "place", "s": "set"},
    {"b": "blue", "g": "green", "r": "red", "w": "white"},
    {"a": "at", "b": "by", "i": "in", "w": "with"},
    None,  # the letter itself
    dict(zip("z123456789", "zero one two three four five six seven eight nine".split())),
    {"a": "again", "n": "now", "p": "please", "s": "soon"},
]
COLUMNS = {  # what the tables show, in order: key -> header
    "corr": "opening corr. (lag 0)",
    "best_corr": "best corr. (±3)",
    "range_ratio": "range ratio",
    "shape_distance": "mouth-shape dist.",
    "bilabial": "/p b m/ opening",
    "pause_motion": "motion in pauses",
}


def grid_transcript(name: str) -> str | None:
    """The sentence a GRID clip's name spells (``bbaf2n`` -> ``bin blue at f two now``), or None."""
    if len(name) != 6:
        return None
    words = []
    for table, char in zip(_GRID, name.lower()):
        word = char if table is None and char.isalpha() else (table or {}).get(char)
        if word is None:
            return None
        words.append(word)
    return " ".join(words)


def transcript(clip: Path) -> str | None:
    """A ``.txt`` beside the clip (LRW's ``Text:`` line or plain words), else a GRID name's sentence."""
    text_file = clip.with_suffix(".txt")
    if text_file.exists():
        text = text_file.read_text()
        for line in text.splitlines():
            if line.startswith("Text:"):
                return line.split(":", 1)[1].strip().lower()
        return " ".join(text.split()).lower() or None
    return grid_transcript(clip.stem)


def real_clips(root: str | Path) -> list[Path]:
    """Every GRID ``.mpg`` and ``.mp4`` under `root` (or `root` itself if it is a clip), sorted."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in {".mpg", ".mp4"} and not p.name.startswith("."))


def mouth_crop(frame: np.ndarray, points: np.ndarray, size: tuple[int, int] = (160, 112)) -> np.ndarray:
    """The mouth of `frame` (RGB) by its dlib `points`, 1.5 x 1.05 inter-ocular distances, resized to `size`."""
    import cv2

    w, h = size
    if not np.isfinite(points).all():
        return np.full((h, w, 3), 128, np.uint8)
    iod = float(inter_ocular(points))
    cx, cy = points[48:68].mean(0)
    half_w, half_h = 0.75 * iod, 0.75 * iod * h / w
    src = np.float32([[cx - half_w, cy - half_h], [cx + half_w, cy - half_h], [cx - half_w, cy + half_h]])
    dst = np.float32([[0, 0], [w, 0], [0, h]])
    return cv2.warpAffine(frame, cv2.getAffineTransform(src, dst), (w, h), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


@dataclass
class RealClip:
    """What a clip gives every run: its frames and dlib's points on them, its speech, phones and photo."""

    name: str
    frames: np.ndarray  # (T, H, W, 3) RGB
    points: np.ndarray  # (T, 68, 2) dlib, NaN where no face
    waveform: np.ndarray  # 16 kHz mono
    text: str | None
    phones: list | None  # forced alignment of `text`, None without a transcript or if it failed
    photo: AlignedFace  # the first frame, aligned as the app aligns a photo


def load_clip(pipe: TalkingFacePipeline, clip: Path) -> RealClip:
    frames, _ = read_video(clip)
    waveform = pipe.load_speech(str(clip)).waveform
    text, phones = transcript(clip), None
    if text:
        try:
            phones, _ = align(waveform, SAMPLE_RATE, text)
        except ValueError:
            phones = None
    return RealClip(clip.stem, frames, track_landmarks(frames), waveform, text, phones, pipe.align(frames[0]))


def generate(pipe: TalkingFacePipeline, clip: RealClip, name: str, work: Path, **options
             ) -> tuple[dict, np.ndarray, np.ndarray]:
    """One ablation on one clip, as the app would make it: its scores (on the generated frames and on the A2L
    landmarks), the frames and dlib's points on them."""
    # the face crop with a still head: the mouth alone is scored, as since the first measurement (the whole-photo
    # video pastes the same crop back, and blinks and head motion do not move the lips)
    options = {"full_frame": False, "still": True, **options}
    result = pipe.run(clip.photo, (SAMPLE_RATE, clip.waveform), a2l=name, out=work / f"{clip.name}_{name}.mp4",
                      **options)
    frames, _ = read_video(result.video_path)
    generated = track_landmarks(frames)
    scores = {
        "frames": lip_sync_scores(generated, clip.points, clip.phones),
        "landmarks": lip_sync_scores(result.landmarks, clip.points, clip.phones),
        "frames_without_face": int(np.isnan(generated[:, 0, 0]).sum()),
    }
    return scores, frames, generated


def evaluate_clip(pipe: TalkingFacePipeline, clip: RealClip, names: list[str], work: Path, sheet_frames: int = 10,
                  **options) -> tuple[dict, np.ndarray]:
    """Scores of one clip per ablation (frames and A2L landmarks) and its contact sheet."""
    scores: dict = {"transcript": clip.text, "aligned": clip.phones is not None, "ablations": {},
                    "real_frames_without_face": int(np.isnan(clip.points[:, 0, 0]).sum())}
    picks = np.linspace(0, len(clip.frames) - 1, sheet_frames).round().astype(int)
    rows = [[mouth_crop(clip.frames[i], clip.points[i]) for i in picks]]
    for name in names:
        scores["ablations"][name], frames, points = generate(pipe, clip, name, work, **options)
        rows.append([mouth_crop(frames[min(i, len(frames) - 1)], points[min(i, len(frames) - 1)]) for i in picks])
    return scores, contact_sheet(rows, ["real"] + [ABLATIONS[n] for n in names])


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean over clips of each score (NaN-aware), the clips whose range ratio is in 0.8-1.25, and their number."""
    def mean(key: str) -> float:  # NaN where no clip has the score (e.g. no /p b m/ in any transcript)
        values = [r[key] for r in rows if np.isfinite(r.get(key, np.nan))]
        return float(np.mean(values)) if values else float("nan")

    means = {key: mean(key) for key in [*COLUMNS, "best_lag"]}
    return {**means, "range_ok": sum(0.8 <= r["range_ratio"] <= 1.25 for r in rows), "clips": len(rows)}


def summarise(per_clip: dict[str, dict], names: list[str], source: str = "frames") -> dict[str, dict[str, float]]:
    """`mean_scores` per ablation, of the generated frames or (`source="landmarks"`) of the A2L landmarks."""
    return {name: mean_scores([clip["ablations"][name][source] for clip in per_clip.values()]) for name in names}


def markdown(per_clip: dict[str, dict], names: list[str], command: str) -> str:
    """The README's real-video table (generated frames), the same before L2F, and every clip's figures."""
    def table(source: str) -> list[str]:
        summary = summarise(per_clip, names, source)
        head = "| A2L | " + " | ".join(COLUMNS.values()) + " | range in 0.8-1.25 |"
        lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
        for name in names:
            s = summary[name]
            cells = [f"{s[k]:.2f}" for k in COLUMNS]
            lines.append(f"| {ABLATIONS[name]} | " + " | ".join(cells) + f" | {s['range_ok']} of {s['clips']} |")
        return lines

    real_bilabial = np.nanmean([c["ablations"][names[0]]["frames"].get("bilabial_real", np.nan)
                                for c in per_clip.values()])
    real_pause = np.nanmean([c["ablations"][names[0]]["frames"].get("pause_motion_real", np.nan)
                             for c in per_clip.values()])
    lines = [f"Measured with `{command}`; GRID clips (Cooke et al. 2006, CC BY 4.0).", "",
             "**Generated video** (dlib on the generated frames vs the real ones; mean over clips)", "",
             *table("frames"), "",
             f"The real mouths' own /p b m/ opening (over vowels): {real_bilabial:.2f}; their motion in pauses "
             f"(mean frame-to-frame change of the opening, inter-ocular distances ×100): {real_pause:.2f}.", "",
             "**A2L landmarks** (before L2F; the predicted points vs dlib on the real frames)", "",
             *table("landmarks"), "", "**Per clip** (generated video: corr. / range ratio / shape / bilabial)", "",
             "| clip | " + " | ".join(ABLATIONS[n] for n in names) + " |", "|" + "---|" * (len(names) + 1)]
    for clip, scores in per_clip.items():
        cells = []
        for name in names:
            s = scores["ablations"][name]["frames"]
            cells.append(f"{s['corr']:.2f} / {s['range_ratio']:.2f} / {s['shape_distance']:.2f} / "
                         f"{s.get('bilabial', float('nan')):.2f}")
        lines.append(f"| {clip} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_real(root: str | Path, checkpoints: str | Path | None = None, out: str | Path = "eval/real",
                  names: list[str] | None = None, command: str = "", **options) -> dict:
    """Score every clip under `root` with each ablation (default all four); write JSON, Markdown, sheets.
    `options` go to ``TalkingFacePipeline.run`` (e.g. the articulation setting)."""
    names = names or list(ABLATIONS)
    clips = real_clips(root)
    if not clips:
        raise SystemExit(f"no .mpg or .mp4 clips under {root}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = TalkingFacePipeline.from_pretrained(names[0], checkpoint_dir=checkpoints)
    per_clip = {}
    with tempfile.TemporaryDirectory(prefix="talkface-real-") as work:
        for path in clips:
            clip = load_clip(pipe, path)
            per_clip[clip.name], sheet = evaluate_clip(pipe, clip, names, Path(work), **options)
            PIL.Image.fromarray(sheet).save(out / f"contact_{clip.name}.jpg", quality=85)
            row = per_clip[clip.name]["ablations"]
            print(f"{clip.name}: " + ", ".join(f"{ABLATIONS[n]} corr {row[n]['frames']['corr']:.2f} "
                                                f"range {row[n]['frames']['range_ratio']:.2f}" for n in names),
                  flush=True)
    results = {"clips": per_clip, "summary": summarise(per_clip, names), "options": options,
               "summary_landmarks": summarise(per_clip, names, "landmarks"), "command": command}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    text = markdown(per_clip, names, command)
    (out / "results.md").write_text(text)
    print(text)
    return results


def calibrate(root: str | Path, checkpoints: str | Path, out: str | Path, names: list[str], gains: list[float],
              command: str = "") -> dict[str, float]:
    """Choose each A2L checkpoint's articulation gain on real clips and write it into its JSON
    (``articulation_gain``, which the pipeline multiplies by the user's articulation).

    Every gain is tried through the whole pipeline, and the one whose mean opening range ratio (generated over
    real, p95-p5) is nearest 1 on a log scale wins: the generated mouth opens as far as the real ones on average.
    Writes ``calibration.md`` (every gain's figures) to `out`. Hand-set parameters only: no weight changes."""
    from talkface.checkpoints import atomic_save_json

    checkpoints, out = Path(checkpoints), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = TalkingFacePipeline.from_pretrained(names[0], checkpoint_dir=checkpoints)
    head = ("| A2L | gain | opening corr. | range ratio | mouth-shape dist. | /p b m/ | motion in pauses | "
            "range in 0.8-1.25 |")
    chosen, lines = {}, [f"Measured with `{command}`; GRID clips (Cooke et al. 2006, CC BY 4.0).", "", head,
                         "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="talkface-calibrate-") as work:
        clips = [load_clip(pipe, path) for path in real_clips(root)]
        for name in names:
            model, tried = pipe.a2l_model(name), {}
            for gain in gains:
                model.articulation_gain = gain
                rows = [generate(pipe, clip, name, Path(work))[0]["frames"] for clip in clips]
                tried[gain] = mean = mean_scores(rows)
                lines.append(f"| {ABLATIONS[name]} | {gain:g} | {mean['corr']:.2f} | {mean['range_ratio']:.2f} | "
                             f"{mean['shape_distance']:.2f} | {mean['bilabial']:.2f} | "
                             f"{mean['pause_motion']:.2f} | {mean['range_ok']} of "
                             f"{mean['clips']} |")
                print(lines[-1], flush=True)
            chosen[name] = min(tried, key=lambda g: abs(np.log(tried[g]["range_ratio"])))
            json_path = checkpoints / f"a2l_{name}.json"
            config = json.loads(json_path.read_text())
            config["articulation_gain"] = chosen[name]
            config["articulation_calibration"] = {**{k: round(v, 4) for k, v in tried[chosen[name]].items()},
                                                  "command": command, "clips": [c.name for c in clips]}
            atomic_save_json(config, json_path)
            card_section(checkpoints / f"a2l_{name}.md", config)
    lines += ["", "Chosen (written into each checkpoint's JSON): "
              + ", ".join(f"{ABLATIONS[n]} {g:g}" for n, g in chosen.items()) + "."]
    (out / "calibration.md").write_text("\n".join(lines) + "\n")
    print(lines[-1])
    return chosen


CARD_HEADING = "## Articulation on real video"


def card_section(card: Path, config: dict) -> None:
    """Write (or replace) the model card's section on the articulation gain its JSON records."""
    if not card.exists():
        return
    record = config["articulation_calibration"]
    text = card.read_text().split(f"\n{CARD_HEADING}\n")[0].rstrip("\n")
    text += (f"\n\n{CARD_HEADING}\n\nThe app scales this model's predicted motion by "
             f"**{config['articulation_gain']:g}** at articulation 1.0 (A2L under L2 shrinks the motion), chosen on "
             f"{len(record['clips'])} real GRID clips (Cooke et al. 2006, CC BY 4.0) as the gain whose mean opening "
             f"range ratio is nearest 1: opening correlation {record['corr']:.2f}, range ratio "
             f"{record['range_ratio']:.2f}, mouth-shape distance {record['shape_distance']:.2f}, /p b m/ opening "
             f"{record['bilabial']:.2f}. Command: `{record['command']}`.\n")
    card.write_text(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options `evaluate.py --real` shares with this script."""
    p.add_argument("--ablations", default=",".join(ABLATIONS), help="comma-separated (default: all four)")
    p.add_argument("--articulation", type=float, default=None, help="the pipeline's articulation (default: its own)")


def run_options(args: argparse.Namespace) -> dict:
    return {} if args.articulation is None else {"articulation": args.articulation}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="a clip, or a folder of GRID .mpg / .mp4 clips with their speech")
    p.add_argument("--checkpoints", default=None, help="checkpoint folder (default: the bundled ones)")
    p.add_argument("--out", default="eval/real")
    p.add_argument("--calibrate", action="store_true",
                   help="choose each A2L checkpoint's articulation gain (--gains) and write it into its JSON")
    p.add_argument("--gains", default="1,1.2,1.4,1.6,1.8,2,2.2,2.4", help="gains --calibrate tries")
    add_arguments(p)
    args = p.parse_args(argv)
    command = "python -m train.real_video " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.calibrate:
        return calibrate(args.root, args.checkpoints or BUNDLED, args.out, args.ablations.split(","),
                         [float(g) for g in args.gains.split(",")], command)
    return evaluate_real(args.root, args.checkpoints, args.out, args.ablations.split(","), command,
                         **run_options(args))


if __name__ == "__main__":
    main()
