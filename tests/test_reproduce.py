"""The whole chain on the tiny preset: corpus -> cache -> judges -> four A2L -> L2F -> tables -> a real mp4."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from talkface.audio import load_audio, num_video_frames
from talkface.video import probe
from train.reproduce import SHIPPED

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_tiny_reproduction_ends_in_a_video(tmp_path):
    work = tmp_path / "work"
    cmd = [sys.executable, "train/reproduce.py", "--preset", "tiny", "--work", str(work), "--workers", "1"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in SHIPPED:
        for ext in (".safetensors", ".json", ".md"):
            assert (work / "checkpoints" / f"{name}{ext}").exists(), f"{name}{ext}"
    # the tables were measured from the shipped files
    results = json.loads((work / "eval" / "results.json").read_text())
    assert set(results["a2l_side"]["a2l"]) == {"a2l_baseline", "a2l_wd", "a2l_tr", "a2l_wd_tr"}
    assert "ground truth" in results["l2f_side"]
    assert "LMD" in (work / "eval" / "results.md").read_text()
    # and the example speech became a video of the example face, with its audio
    info = probe(work / "example.mp4")
    wave, _ = load_audio(REPO / "assets" / "examples" / "speech.wav")
    assert info["has_video"] and info["has_audio"]
    assert abs(info["frames"] - num_video_frames(len(wave))) <= 1
    # rerunning finds every stage done and trains nothing again
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "train/train_" not in again.stdout


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_default_preset_trains_as_the_shipped_checkpoints_record():
    """reproduce.py must remake what ships: its default settings against each shipped JSON's training args."""
    from train.reproduce import A2L_VARIANTS, PRESETS

    cfg = PRESETS["default"]

    def recorded(name: str) -> dict:
        return json.loads((REPO / "assets" / "checkpoints" / f"{name}.json").read_text())["training"]["args"]

    for judge in ("word_detector", "mi_estimator"):
        assert recorded(judge)["max_steps"] == int(_flag(cfg[judge], "--max-steps")), judge
        assert len(recorded(judge)["extra_cache"]) == (1 if cfg.get("extra_corpus") else 0), judge
    for name, (wd, tr) in A2L_VARIANTS.items():
        args = recorded(name)
        assert (args["lambda_wd"], args["lambda_tr"]) == (wd, tr), name
        assert args["max_steps"] == int(_flag(cfg["a2l"], "--max-steps")), name
        assert len(args["extra_cache"]) == (1 if cfg.get("extra_corpus") else 0), name
    l2f = recorded("l2f")
    assert l2f["landmark_flow"] and l2f["identity_frame"] == "any" and l2f["mode"] == "warp"
    for flag in ("--max-steps", "--d-channels", "--batch-size"):
        assert str(l2f[flag[2:].replace("-", "_")]) == _flag(cfg["l2f"], flag), flag


def chain_commands(preset: str, work: Path, monkeypatch) -> list[str]:
    """The commands reproduce.py would run for a preset, as command lines; nothing runs, nothing is copied."""
    import train.reproduce as reproduce

    commands = []
    monkeypatch.setattr(reproduce, "run", commands.append)
    monkeypatch.setattr(reproduce.shutil, "copy2", lambda *a, **k: None)
    reproduce.main(["--preset", preset, "--work", str(work), "--workers", "2"])
    return [" ".join(c) for c in commands]


def test_default_chain_gives_the_extra_takes_to_the_a2l_side_only(tmp_path, monkeypatch):
    """The commands the default chain would run (nothing runs): the extra corpus is made and prepared, and
    --extra-cache reaches the judges and the four predictors but not L2F."""
    joined = chain_commands("default", tmp_path, monkeypatch)
    assert any("talkface.data.synth --preset extra --out " + str(tmp_path / "corpus_extra") in c for c in joined)
    assert any(f"--root {tmp_path / 'corpus_extra'} --out {tmp_path / 'cache_extra'}" in c for c in joined)
    for c in joined:
        if "train/train_" in c:
            assert ("--extra-cache" in c) == ("train_l2f.py" not in c), c
    assert sum("train/train_a2l.py" in c for c in joined) == 4


def test_exact_preset_trains_as_the_exact_landmark_checkpoints_record():
    """The "exact" preset remakes docs/eval/exact_landmarks/checkpoints (measured, not shipped)."""
    from train.reproduce import EXACT_VARIANTS, PRESETS

    cfg, folder = PRESETS["exact"], REPO / "docs" / "eval" / "exact_landmarks" / "checkpoints"

    def config(name: str) -> dict:
        return json.loads((folder / f"{name}.json").read_text())

    for judge in ("word_detector", "mi_estimator"):
        for flag in ("--max-steps", "--batch-size", "--lr"):
            if flag in cfg[judge]:
                recorded = config(judge)["training"]["args"][flag[2:].replace("-", "_")]
                assert recorded == float(_flag(cfg[judge], flag)), (judge, flag)
    for name, (wd, tr) in EXACT_VARIANTS.items():
        args = config(name)["training"]["args"]
        assert (args["lambda_wd"], args["lambda_tr"]) == (wd, tr), name
        assert args["max_steps"] == int(_flag(cfg["a2l"], "--max-steps")), name
    for name in ("word_detector", "mi_estimator", *EXACT_VARIANTS):  # the a2l corpus's exact landmarks
        data = config(name)["data"]
        assert data["landmarks"] == "exact" and data["clips"]["train"] > 30000 and "extra_training_data" not in data


def test_exact_chain_gives_the_exact_landmarks_to_the_a2l_side_only(tmp_path, monkeypatch):
    """The commands the "exact" chain would run (nothing runs): the audio-only "a2l" corpus is made and prepared
    with its exact landmarks; the judges and the four predictors learn from that cache, L2F from the dlib one,
    and the evaluation scores each side on its own."""
    joined = chain_commands("exact", tmp_path, monkeypatch)
    assert any("talkface.data.synth --preset a2l --out " + str(tmp_path / "corpus_a2l") in c for c in joined)
    assert any(f"--root {tmp_path / 'corpus_a2l'} --out {tmp_path / 'cache_a2l'}" in c
               and c.endswith("--landmarks exact") for c in joined)
    assert any(f"--root {tmp_path / 'corpus'} --out {tmp_path / 'cache'} " in c and c.endswith("--landmarks dlib")
               for c in joined)
    for c in joined:
        if "train/train_" in c:
            a2l_side = "train_l2f.py" not in c
            assert (f"--cache {tmp_path / 'cache_a2l'}" in c) == a2l_side, c
            assert (f"--cache {tmp_path / 'cache'} " in c) == (not a2l_side), c
    assert sum("train/train_a2l.py" in c for c in joined) == 4
    assert any("--lambda-tr 1e-06" in c for c in joined)
    evaluate = next(c for c in joined if "train/evaluate.py" in c)
    assert f"--cache {tmp_path / 'cache_a2l'} --frames-cache {tmp_path / 'cache'} " in evaluate
