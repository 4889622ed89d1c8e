"""The synthetic corpus: LRW's exact layout, sound clips, disjoint splits, and resume after a kill."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from talkface.data.lrw import CLIP_FRAMES, parse_lrw_txt, read_lrw
from talkface.data.synth import PRESETS, SynthConfig, generate, plan_clips, split_voices
from talkface.video import probe, read_video


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, generate(root, PRESETS["tiny"], workers=1, progress=False)


def test_layout_is_lrw(tiny):
    root, manifest = tiny
    assert manifest["clips"] == manifest["clips_planned"] == 12 and not manifest["failures"]
    clips = read_lrw(root)
    assert len(clips) == 12
    assert {c.split for c in clips} == {"train", "val", "test"}
    for mp4 in root.glob("*/*/*.mp4"):
        assert mp4.stem.startswith(mp4.parent.parent.name + "_") and len(mp4.stem.split("_")[-1]) == 5
        info = probe(mp4)
        assert info["has_video"] and info["has_audio"] and info["frames"] == CLIP_FRAMES
        txt = parse_lrw_txt(mp4.with_suffix(".txt"))
        assert txt["text"] == mp4.parent.parent.name
        # the word sits in the middle of the 1.16 s clip, as in LRW
        (_, start, end) = txt["words"][0][:3]
        assert 0 < start < 0.58 < end < 1.16


def test_frames_and_sidecar_agree(tiny):
    root, _ = tiny
    mp4 = sorted(root.glob("*/train/*.mp4"))[0]
    frames, fps = read_video(mp4)
    side = json.loads(mp4.with_suffix(".json").read_text())
    assert frames.shape == (CLIP_FRAMES, 256, 256, 3) and fps == 25
    lm = np.array(side["landmarks"])
    assert lm.shape == (CLIP_FRAMES, 68, 2)
    # the mouth moves while the word is spoken
    gap = np.linalg.norm(lm[:, 62] - lm[:, 66], axis=-1)
    assert gap.max() - gap.min() > 2.0
    assert side["phones"] and all(p[1] <= p[2] for p in side["phones"])


def test_splits_never_share_identities_or_voices(tiny):
    root, manifest = tiny
    sides = [json.loads(p.read_text()) for p in root.glob("*/*/*.json")]
    for key in ("identity", "voice"):
        by_split = {s: {x[key] for x in sides if x["split"] == s} for s in ("train", "val", "test")}
        assert not by_split["train"] & by_split["test"] and not by_split["train"] & by_split["val"], key
    ids = {i["id"]: i for i in manifest["identities"]}
    assert all(ids[s["identity"]]["licence"] for s in sides)
    voices = split_voices()
    assert not set(voices["train"]["espeak"]) & set(voices["test"]["espeak"])


def test_resume_makes_only_what_is_missing(tiny):
    root, _ = tiny
    victim = sorted(root.glob("*/val/*.json"))[0]
    before = {p: p.stat().st_mtime_ns for p in root.glob("*/*/*.mp4")}
    victim.unlink()  # as if killed before the clip's sidecar was written
    manifest = generate(root, PRESETS["tiny"], workers=1, progress=False)
    assert manifest["clips"] == 12 and victim.exists()
    after = {p: p.stat().st_mtime_ns for p in root.glob("*/*/*.mp4")}
    changed = [p for p in after if after[p] != before.get(p)]
    assert changed == [victim.with_suffix(".mp4")]
    assert not list(root.glob("**/*.tmp*"))


def test_first_take_plans_exactly_the_clips_a_bigger_corpus_adds():
    """A second root with first_take = N holds the takes N+1... of a corpus with more takes per word."""
    small = SynthConfig(words=4, per_word={"train": 3, "val": 1}, real_speech=False)
    big = dataclasses.replace(small, per_word={"train": 5, "val": 1})
    extra = dataclasses.replace(small, per_word={"train": 2}, first_take=3)
    key = lambda c: (c.stem, c.seed)  # noqa: E731
    small_plan, big_plan, extra_plan = ({key(c) for c in plan_clips(cfg)} for cfg in (small, big, extra))
    assert small_plan | extra_plan == big_plan and not small_plan & extra_plan
    assert {c.index for c in plan_clips(extra)} == {4, 5} and {c.split for c in plan_clips(extra)} == {"train"}
    assert PRESETS["extra"].first_take == PRESETS["default"].per_word["train"]
    more = PRESETS["a2l_more"]  # the next takes after the "a2l" corpus's, audio only, train only
    assert more.first_take == PRESETS["a2l"].per_word["train"] and not more.video and set(more.per_word) == {"train"}


def test_audio_only_clips_are_the_same_utterances(tiny, tmp_path):
    """video=False (the "a2l" preset) skips rendering but keeps each take's speech and landmarks: take k of a
    word is the same utterance with or without frames. --splits makes only the splits asked for."""
    from talkface.audio import load_audio

    root, _ = tiny
    config = dataclasses.replace(PRESETS["tiny"], video=False)
    manifest = generate(tmp_path, config, workers=1, progress=False, splits=("val", "test"))
    assert manifest["clips"] == manifest["clips_planned"] == 6 and manifest["clips_with_video"] == 0
    assert sorted({p.parent.name for p in tmp_path.glob("*/*/*.mp4")}) == ["test", "val"]
    for mp4 in tmp_path.glob("*/*/*.mp4"):
        info = probe(mp4)
        assert info["has_audio"] and not info["has_video"]
        twin = root / mp4.relative_to(tmp_path)
        mine, theirs = (json.loads(p.with_suffix(".json").read_text()) for p in (mp4, twin))
        for key in ("text", "voice", "identity", "seed"):
            assert mine[key] == theirs[key], key
        assert mine["video"] is False and theirs["video"] is True
        # eSpeak's output depends a hair on what the process spoke before (here: the fixture's corpus), so the
        # same take agrees closely rather than bit for bit
        drift = np.abs(np.array(mine["landmarks"]) - np.array(theirs["landmarks"]))
        assert drift.mean() < 1.0, drift.mean()  # another take (other face, voice, word) is tens of pixels off
        (a, _), (b, _) = load_audio(mp4), load_audio(twin)
        assert len(a) == len(b)
    assert PRESETS["a2l"].video is False and PRESETS["a2l"].first_take == 0
    for split in ("val", "test"):  # the a2l corpus scores on the default corpus's own clips
        assert PRESETS["a2l"].per_word[split] == PRESETS["default"].per_word[split]


def test_a_run_over_some_splits_keeps_the_others_in_the_manifest(tmp_path):
    """Finishing (or re-running) only val/test in a whole corpus's root must not shrink its manifest to them."""
    config = dataclasses.replace(PRESETS["tiny"], words=1, video=False)
    whole = generate(tmp_path, config, workers=1, progress=False)
    assert whole["per_split"] == {"train": 2, "val": 1, "test": 1}
    again = generate(tmp_path, config, workers=1, progress=False, splits=("val",))
    assert again["per_split"] == whole["per_split"] and again["clips_planned"] == whole["clips_planned"]
    assert json.loads((tmp_path / "manifest.json").read_text())["clips"] == 4


def test_splits_must_be_known(tmp_path):
    from talkface.data.synth import main

    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--out", str(tmp_path), "--splits", "training"])


def test_a_corpus_is_never_mixed_and_a_killed_runs_leftovers_are_not_clips(tiny):
    """Other settings on an existing root are refused before anything is written; an empty sidecar (a power cut)
    makes its clip again instead of breaking the manifest; a killed writer's temporary .mp4 is never a clip."""
    from talkface.data.lrw import read_lrw
    from talkface.errors import TalkFaceError

    root, _ = tiny
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    with pytest.raises(TalkFaceError, match=r"made with other settings \(seed differ\); nothing was changed"):
        generate(root, dataclasses.replace(PRESETS["tiny"], seed=7), workers=1, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before

    emptied = sorted(root.glob("*/test/*.json"))[0]
    emptied.write_text("")
    word_dir = emptied.parent
    leftover = word_dir / f".{emptied.stem}.4242.tmp.mp4"
    leftover.write_bytes(b"half a video")
    assert leftover not in [c.video for c in read_lrw(root)]
    manifest = generate(root, PRESETS["tiny"], workers=1, progress=False)
    assert manifest["clips"] == 12 and json.loads(emptied.read_text())["split"] == "test"
    assert not leftover.exists()


@pytest.mark.slow
def test_two_workers_make_the_same_corpus_and_a_dead_worker_stops_the_run_with_a_sentence(tmp_path, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from talkface.data import synth
    from talkface.errors import TalkFaceError

    manifest = generate(tmp_path / "two", PRESETS["tiny"], workers=2, progress=False, splits=("val",))
    assert manifest["clips"] == manifest["clips_planned"]

    class DiesAtOnce(synth.ProcessPoolExecutor):  # a worker killed for memory: the pool breaks, never hangs
        def map(self, fn, *iterables, chunksize=1):
            raise BrokenProcessPool("a child process terminated abruptly")

    monkeypatch.setattr(synth, "ProcessPoolExecutor", DiesAtOnce)
    with pytest.raises(TalkFaceError, match="A corpus worker died"):
        generate(tmp_path / "dead", PRESETS["tiny"], workers=2, progress=False, splits=("val",))


def test_pause_clips_rest_the_mouth_in_silence_under_a_noise_floor(tmp_path):
    """The "a2l_pauses" preset: each word alone, first or last in its phrase (still the clip's centre), the
    mouth at rest in the pauses, and a noise floor under the whole clip, pauses included."""
    from talkface.audio import load_audio
    from talkface.face import lip_opening

    preset = PRESETS["a2l_pauses"]
    assert preset.first_take == PRESETS["a2l"].per_word["train"] + PRESETS["a2l_more"].per_word["train"]
    config = dataclasses.replace(preset, words=2, per_word={"train": 3}, source_weights={"espeak": 1.0},
                                 max_identities=2)
    manifest = generate(tmp_path, config, workers=1, progress=False)
    assert manifest["clips"] == 6 and manifest["clips_with_video"] == 0
    rested = 0
    for sidecar in tmp_path.glob("*/train/*.json"):
        clip = json.loads(sidecar.read_text())
        words = clip["text"].split()
        assert clip["word"].lower() in (words[0], words[-1]) and len(words) <= 3
        spoken = [p for p in clip["phones"] if p[0] != "sil"]
        first, last = spoken[0][1], spoken[-1][2]
        opening = lip_opening(np.array(clip["landmarks"]))
        times = np.arange(CLIP_FRAMES) / 25
        pause = (times < first - 0.12) | (times > last + 0.2)
        if pause.sum() >= 3:
            rested += 1
            assert opening[pause].max() < 0.6 * opening.max(), clip["text"]
        audio, rate = load_audio(sidecar.with_suffix(".mp4"))
        quiet = audio[: max(int((first - 0.05) * rate), 0)]
        if len(quiet) > 800:  # a pause before the word: the floor is there, not digital silence
            assert 1e-4 < np.sqrt(np.mean(quiet**2)) < 0.2 * np.sqrt(np.mean(audio**2))
    assert rested >= 3
    assert json.loads((tmp_path / "corpus.json").read_text())["pauses"] == 1.0


def test_a_corpus_made_before_a_setting_existed_reads_as_made_with_its_default(tmp_path):
    from talkface.data.synth import _check_settings
    from talkface.errors import TalkFaceError

    config = PRESETS["a2l"]
    stored = dataclasses.asdict(config)
    del stored["pauses"], stored["noise_floor"]  # what an "a2l" corpus of 2026-12-02 recorded
    (tmp_path / "corpus.json").write_text(json.dumps(stored))
    _check_settings(tmp_path, config)  # the same corpus: goes on
    with pytest.raises(TalkFaceError, match="pauses"):
        _check_settings(tmp_path, dataclasses.replace(config, pauses=1.0))
