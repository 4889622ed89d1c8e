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
    cmd = [sys.executable, "-m", "train.reproduce", "--preset", "tiny", "--work", str(work), "--workers", "1"]
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
    assert "train.train_" not in again.stdout


def recorded(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def test_every_checkpoint_was_trained_with_its_recipe():
    """Each shipped checkpoint's recorded settings are its recipe's (train/recipes.py): the trainers' defaults
    and reproduce.py remake what ships; the previous release's A2L side matches its *_dlib recipes."""
    from train.recipes import RECIPES

    for folder, suffix in ((REPO / "assets" / "checkpoints", ""), (REPO / "docs" / "eval" / "dlib_landmarks" /
                                                                    "checkpoints", "_dlib")):
        for name in SHIPPED:
            if name == "l2f" and suffix:
                continue
            args = recorded(folder, name)["training"]["args"]
            for key, value in RECIPES[name + suffix].items():
                assert args[key] == value, (folder.name, name, key, args[key], value)
    for name in SHIPPED[:-1]:  # the shipped A2L side learnt from the a2l corpus's exact landmarks
        data = recorded(REPO / "assets" / "checkpoints", name)["data"]
        assert data["landmarks"] == "exact" and data["clips"]["train"] > 30000 and "extra_training_data" not in data
    assert recorded(REPO / "assets" / "checkpoints", "l2f")["training"]["args"]["init"]  # fine-tuned from l2f_base


def test_trainer_defaults_are_the_shipped_recipes():
    from train import train_a2l, train_l2f, train_mi_estimator, train_word_detector
    from train.recipes import RECIPES

    need = ["--cache", "C", "--out", "O"]
    for module, name in ((train_a2l, "a2l_baseline"), (train_word_detector, "word_detector"),
                         (train_mi_estimator, "mi_estimator"), (train_l2f, "l2f")):
        args = vars(module.parse_args(need + (["--init", "I"] if name == "l2f" else [])))
        assert {k: args[k] for k in RECIPES[name]} == RECIPES[name], name
    other = vars(train_a2l.parse_args([*need, "--recipe", "a2l_wd_tr", "--max-steps", "7"]))
    assert (other["lambda_wd"], other["lambda_tr"], other["max_steps"]) == (1e-5, 1e-6, 7)  # a flag still wins
    assert train_a2l.variant_name(train_a2l.parse_args([*need, "--recipe", "a2l_tr"])) == "a2l_tr"
    assert train_l2f.parse_args(need).init is None  # the l2f recipe then trains l2f_base first (test_models_l2f)


def chain_commands(preset: str, work: Path, monkeypatch) -> list[str]:
    """The commands reproduce.py would run for a preset, as command lines; nothing runs, nothing is copied."""
    import train.reproduce as reproduce

    commands = []
    monkeypatch.setattr(reproduce, "run", commands.append)
    monkeypatch.setattr(reproduce.shutil, "copy2", lambda *a, **k: None)
    reproduce.main(["--preset", preset, "--work", str(work), "--workers", "2"])
    return [" ".join(c) for c in commands]


def test_dlib_chain_gives_the_extra_takes_to_the_a2l_side_only(tmp_path, monkeypatch):
    """The commands the "dlib" chain (the previous release) would run (nothing runs): the extra corpus is made and
    prepared, and --extra-cache reaches the judges and the four predictors but not L2F."""
    joined = chain_commands("dlib", tmp_path, monkeypatch)
    assert any("talkface.data.synth --preset extra --out " + str(tmp_path / "corpus_extra") in c for c in joined)
    assert any(f"--root {tmp_path / 'corpus_extra'} --out {tmp_path / 'cache_extra'}" in c for c in joined)
    for c in joined:
        if "train.train_" in c:
            assert ("--extra-cache" in c) == ("train.train_l2f" not in c), c
    assert sum("train.train_a2l" in c for c in joined) == 4


def test_default_chain_gives_the_exact_landmarks_to_the_a2l_side_only(tmp_path, monkeypatch):
    """The commands the default chain (what ships) would run (nothing runs): the audio-only "a2l" corpus is made
    and prepared with its exact landmarks; the judges and the four predictors learn from that cache, L2F from the
    dlib one, and the evaluation scores each side on its own."""
    joined = chain_commands("default", tmp_path, monkeypatch)
    assert any("talkface.data.synth --preset a2l --out " + str(tmp_path / "corpus_a2l") in c for c in joined)
    assert any(f"--root {tmp_path / 'corpus_a2l'} --out {tmp_path / 'cache_a2l'}" in c
               and c.endswith("--landmarks exact") for c in joined)
    assert any(f"--root {tmp_path / 'corpus'} --out {tmp_path / 'cache'} " in c and c.endswith("--landmarks dlib")
               for c in joined)
    for c in joined:
        if "train.train_" in c:
            a2l_side = "train.train_l2f" not in c
            assert (f"--cache {tmp_path / 'cache_a2l'}" in c) == a2l_side, c
            assert (f"--cache {tmp_path / 'cache'} " in c) == (not a2l_side), c
    assert sum("train.train_a2l" in c for c in joined) == 4
    assert any("--recipe a2l_wd_tr " in c for c in joined) and not any("_dlib" in c for c in joined)
    evaluate = next(c for c in joined if "train.evaluate" in c)
    assert f"--cache {tmp_path / 'cache_a2l'} --frames-cache {tmp_path / 'cache'} " in evaluate
