"""Which LRW words look the same on the lips? The ceiling the articulation model puts on word accuracy.

    python experiments/diagnose_homophemes.py
    python experiments/diagnose_homophemes.py --json docs/eval/homophemes.json

Two phones are one viseme here when the corpus's articulation model (`talkface.data.articulation.VISEMES`)
gives them the same mouth target, dominance and diphthong end: /p b m/, /t d n/, /f v/ ... move the synthetic
lips identically. Each of the 500 LRW words gets its CMUdict pronunciations (pocketsphinx's dictionary, the one
the real-speech alignment uses) and becomes the set of its viseme strings; words sharing a viseme string are
homophemes, which no landmark-only word detector can tell apart better than by chance within the group. The
ceiling printed is the top-1 accuracy of a detector that is perfect up to homophemes (one word per group
right, equal numbers of clips per word). It is a ceiling of the lip shapes only: timing (a /t/ is shorter than
an /n/) could in principle break some ties, and real TTS voices may pronounce a word otherwise than CMUdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from talkface.data.articulation import VISEMES
from talkface.data.lrw import lrw_vocabulary


def viseme_classes() -> dict[str, str]:
    """Phone -> the name of its viseme class: the alphabetically first phone with the identical gesture."""
    by_gesture: dict[tuple, list[str]] = defaultdict(list)
    for phone, vis in VISEMES.items():
        by_gesture[(vis.target, vis.dominance, vis.target_end)].append(phone)
    return {phone: min(group) for group in by_gesture.values() for phone in group}


def shared_visemes(classes: dict[str, str]) -> list[list[str]]:
    """The classes holding more than one phone, each sorted."""
    members: dict[str, list[str]] = defaultdict(list)
    for phone, name in classes.items():
        members[name].append(phone)
    return sorted(sorted(m) for m in members.values() if len(m) > 1)


def cmudict() -> dict[str, list[tuple[str, ...]]]:
    """Lower-case word -> its pronunciations (ARPAbet, stress dropped), from pocketsphinx's dictionary."""
    spec = find_spec("pocketsphinx")
    if spec is None or spec.origin is None:
        raise SystemExit("pocketsphinx is not installed (pip install -r requirements.txt)")
    path = Path(spec.origin).parent / "model" / "en-us" / "cmudict-en-us.dict"
    prons: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        word, *phones = line.split()
        prons[word.split("(")[0]].append(tuple(p.rstrip("012") for p in phones))
    return prons


def homopheme_groups(words: list[str], prons: dict[str, list[tuple[str, ...]]],
                     classes: dict[str, str]) -> tuple[list[list[str]], list[str]]:
    """Groups (size >= 2) of words sharing a viseme string, and the words with no pronunciation."""
    owners: dict[tuple[str, ...], set[str]] = defaultdict(set)
    missing = []
    for word in words:
        if not prons.get(word.lower()):
            missing.append(word)
            continue
        for pron in prons[word.lower()]:
            owners[tuple(classes[p] for p in pron)].add(word)
    # words linked through any shared string form one group (union-find over the shared strings)
    parent = {w: w for w in words}

    def find(w: str) -> str:
        while parent[w] != w:
            parent[w] = parent[parent[w]]
            w = parent[w]
        return w

    for group in owners.values():
        first, *rest = sorted(group)
        for w in rest:
            parent[find(w)] = find(first)
    members: dict[str, list[str]] = defaultdict(list)
    for w in words:
        members[find(w)].append(w)
    return sorted(sorted(g) for g in members.values() if len(g) > 1), missing


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    words = lrw_vocabulary()
    classes = viseme_classes()
    groups, missing = homopheme_groups(words, cmudict(), classes)
    lost = sum(len(g) - 1 for g in groups)
    result = {
        "words": len(words),
        "viseme_classes": shared_visemes(classes),
        "homopheme_groups": groups,
        "no_pronunciation": missing,
        "ceiling_top1": (len(words) - lost) / len(words),
    }
    print("viseme classes (phones the articulation model moves identically):",
          ", ".join("/".join(c) for c in result["viseme_classes"]))
    print(f"homopheme groups among the {len(words)} LRW words: {len(groups)}")
    for g in groups:
        print("  " + " / ".join(g))
    if missing:
        print(f"no CMUdict pronunciation: {', '.join(missing)}")
    print(f"top-1 ceiling of a landmark-only word detector: {result['ceiling_top1']:.1%}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
