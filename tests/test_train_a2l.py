"""The A2L-side trainers end to end on a tiny toy cache: they learn, export, resume exactly, run under torchrun.

The toy clips are made so that each stage has something real to learn: every word opens the mouth
with its own rhythm, the audio features follow the mouth opening, and the head moves a little
(which the canonical landmark frame must remove).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from talkface.checkpoints import load_checkpoint
from talkface.data.lrw import Clip
from talkface.data.prepare import Shard, write_shard
from talkface.errors import TalkFaceError
from talkface.face import MEAN_SHAPE
from talkface.models.a2l import LandmarkPredictor
from talkface.training import ResumeError
from train.landmark_data import load_data

REPO = Path(__file__).parent.parent
MEAN_SHAPE_T = torch.as_tensor(MEAN_SHAPE, dtype=torch.float32)
WORDS = ["ABOUT", "BLACK", "CHILD", "DOING"]
BUMPS = {0: [14], 1: [9, 19], 2: [6, 14, 22], 3: [11, 12, 13, 14, 15, 16, 17]}  # mouth-opening times per word
LOWER_LIP, UPPER_LIP = [55, 56, 57, 58, 59, 65, 66, 67], [49, 50, 51, 52, 53, 61, 62, 63]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_clip(word: int, rng: np.random.Generator) -> dict:
    """One 29-frame clip: landmarks in crop pixels (with head motion) and MFCC-like windows that follow the mouth."""
    times = np.arange(29)
    jitter = rng.integers(-1, 2)
    opening = sum(np.exp(-0.5 * ((times - c - jitter) / 1.5) ** 2) for c in BUMPS[word])
    opening = opening / opening.max() * rng.uniform(0.7, 1.0)
    face = MEAN_SHAPE * 48 + 128 + rng.normal(0, 1.5, (68, 2))
    landmarks = np.repeat(face[None], 29, axis=0)
    landmarks[:, LOWER_LIP, 1] += 7 * opening[:, None]
    landmarks[:, UPPER_LIP, 1] -= 2 * opening[:, None]
    angle = np.cumsum(rng.normal(0, 0.01, 29))
    shift = np.cumsum(rng.normal(0, 0.5, (29, 2)), axis=0)
    rotation = np.stack(
        [np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2
    )
    landmarks = np.einsum("tij,tkj->tki", rotation, landmarks - 128) + 128 + shift[:, None]
    fine = np.interp(np.arange(29 * 4) / 4, times, opening)  # the "audio" at 100 Hz
    padded = np.pad(fine, 14, mode="edge")
    windows = np.stack([padded[4 * t : 4 * t + 28] for t in range(29)])
    mfcc = windows[..., None] * np.linspace(10, -5, 12) + rng.normal(0, 1.0, (29, 28, 12))
    return {
        "landmarks": landmarks.astype(np.float32),
        "mfcc": mfcc.astype(np.float32),
        "jpegs": [b"\xff"] * 29,
        "transform": [[1, 0, 0], [0, 1, 0]],
        "window_start": 0,
        "num_faces": 1,
    }


def make_toy_cache(root: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """A cache laid out like talkface.data.prepare's (same shard writer), with toy clips."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in sizes.items():
        clips = [
            Clip(Path(f"{WORDS[i % 4]}/{split}/{WORDS[i % 4]}_{i:05d}.mp4"), WORDS[i % 4], "", split, None)
            for i in range(n)
        ]
        shard = Shard(split, 0, clips)
        write_shard(root / shard.name, shard, [(c, i % 4, toy_clip(i % 4, rng)) for i, c in enumerate(clips)], [], {})
        splits[split] = {"shards": [shard.name], "clips": n, "skipped": 0}
    manifest = {
        "format_version": 1,
        "dataset": "toy",
        "clip_list_hash": "toy",
        "listed_clips": sum(sizes.values()),
        "frames": 29,
        "vocabulary": WORDS,
        "splits": splits,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


COMMON = ["--size", "tiny", "--batch-size", "16", "--log-every", "5", "--save-every", "10", "--val-every", "50"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_toy_cache(tmp_path_factory.mktemp("toy_cache"), {"train": 96, "val": 32, "test": 32})


@pytest.fixture(scope="module")
def judges(cache, tmp_path_factory) -> dict:
    """Both judges, trained once on the toy cache (also the test that their trainers learn)."""
    out = tmp_path_factory.mktemp("judges")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        wd = load_script("train_word_detector").main(
            ["--cache", str(cache), "--out", str(out / "wd"), *COMMON, "--max-steps", "150", "--lr", "1e-2"]
        )
        mi = load_script("train_mi_estimator").main(
            ["--cache", str(cache), "--out", str(out / "mi"), *COMMON, "--max-steps", "100", "--lr", "3e-3"]
        )
    finally:
        torch.set_num_threads(threads)
    return {"wd": wd, "mi": mi, "detector": out / "wd" / "word_detector", "estimator": out / "mi" / "mi_estimator"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_word_detector_trainer_learns_and_exports(judges):
    assert judges["wd"]["test"]["accuracy"] > 0.6  # chance: 0.25
    _, config = load_checkpoint(judges["detector"])
    assert config["vocabulary"] == WORDS and config["dtype"] == "float16" and config["stage"] == "word_detector"
    assert config["metrics"]["test"] == judges["wd"]["test"]
    card = judges["detector"].with_suffix(".md").read_text()
    assert "| test | accuracy |" in card and "python -m train.train_word_detector" in card
    rows = (judges["detector"].parent / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,accuracy") and len(rows) == 1 + 150 // 5


def test_word_detector_augmentations_keep_the_word_and_change_only_what_they_say():
    """--amplitude scales motion about the clip's mean shape, --blur low-passes it, --stretch resamples time about
    the centre; each is the identity when off, and the trainer records them."""
    from train.landmark_data import random_amplitude, random_blur, stretch

    torch.manual_seed(0)
    t = torch.arange(29.0)
    x = MEAN_SHAPE_T[None, None] + 0.05 * torch.randn(8, 29, 68, 2)
    x[:, :, 57, 1] += 0.3 * (t == 14)  # one sharp event per clip, at the centre
    for augment in (random_amplitude, random_blur, stretch):
        assert augment(x, 0.0) is x
    scaled = random_amplitude(x, 0.5)
    torch.testing.assert_close(scaled.mean(dim=1), x.mean(dim=1))

    def motion(y: torch.Tensor) -> torch.Tensor:
        return (y - y.mean(1, keepdim=True)).flatten(1).norm(dim=1)

    ratio = motion(scaled) / motion(x)
    assert ((ratio >= 0.5 - 1e-5) & (ratio <= 1.5 + 1e-5)).all() and ratio.std() > 0.05  # a factor per clip

    blurred = random_blur(x, 2.0)
    assert blurred.shape == x.shape
    constant = MEAN_SHAPE_T[None, None].expand(4, 29, 68, 2)
    torch.testing.assert_close(random_blur(constant, 2.0), constant)  # no motion, nothing to blur
    assert torch.diff(blurred, dim=1).pow(2).mean() < 0.8 * torch.diff(x, dim=1).pow(2).mean()  # low-passed
    assert (blurred[:, :, 57, 1].argmax(1) == 14).all()  # the event stays where it was

    stretched = stretch(x, 0.3)
    torch.testing.assert_close(stretched[:, 14], x[:, 14])  # the centre (the word) stays put
    assert not torch.allclose(stretched, x)


def test_word_detector_trainer_records_its_augmentations(cache, tmp_path):
    load_script("train_word_detector").main(["--cache", str(cache), "--out", str(tmp_path / "wd"), *COMMON,
                                             "--max-steps", "3", "--blur", "1.5", "--amplitude", "0.4",
                                             "--stretch", "0.1"])
    _, config = load_checkpoint(tmp_path / "wd" / "word_detector")
    args = config["training"]["args"]
    assert (args["blur"], args["amplitude"], args["stretch"]) == (1.5, 0.4, 0.1)
    assert "--blur 1.5" in config["training"]["command"]


def test_extra_caches_add_training_clips_only(cache, tmp_path):
    """--extra-cache (e.g. the synth "extra" preset: more takes per word) adds its train split and nothing else."""
    extra = make_toy_cache(tmp_path / "extra", {"train": 48}, seed=1)
    train_set, evaluation, manifest = load_data(str(cache), [str(extra)])
    assert len(train_set) == 96 + 48 and {k: len(v) for k, v in evaluation.items()} == {"val": 32, "test": 32}
    load_script("train_word_detector").main(["--cache", str(cache), "--extra-cache", str(extra), "--out",
                                             str(tmp_path / "wd"), *COMMON, "--max-steps", "2"])
    _, config = load_checkpoint(tmp_path / "wd" / "word_detector")
    assert config["data"]["clips"]["train"] == 96 and config["data"]["extra_training_data"][0]["clips"] == {"train": 48}
    assert "More training clips" in (tmp_path / "wd" / "word_detector.md").read_text()

    manifest = json.loads((extra / "manifest.json").read_text())
    (extra / "manifest.json").write_text(json.dumps({**manifest, "landmarks": "exact"}))
    with pytest.raises(TalkFaceError, match=r"holds exact landmarks and .* dlib ones"):
        load_data(str(cache), [str(extra)])  # never train on two kinds of landmarks at once
    (extra / "manifest.json").write_text(json.dumps({**manifest, "vocabulary": manifest["vocabulary"][::-1]}))
    with pytest.raises(TalkFaceError, match="labels its words otherwise"):
        load_data(str(cache), [str(extra)])


def test_checkpoints_say_which_landmarks_they_learnt_from(tmp_path):
    """A cache of exact landmarks (prepare --landmarks exact) is recorded as such in the JSON and the card."""
    exact = make_toy_cache(tmp_path / "exact", {"train": 32, "val": 16})
    manifest = json.loads((exact / "manifest.json").read_text())
    (exact / "manifest.json").write_text(json.dumps({**manifest, "landmarks": "exact"}))
    load_script("train_mi_estimator").main(["--cache", str(exact), "--out", str(tmp_path / "mi"), *COMMON,
                                            "--max-steps", "2"])
    _, config = load_checkpoint(tmp_path / "mi" / "mi_estimator")
    assert config["data"]["landmarks"] == "exact" and "exact landmarks" in config["features"]["landmarks"]
    assert ", exact landmarks," in (tmp_path / "mi" / "mi_estimator.md").read_text()


def test_mi_estimator_trainer_sees_synchrony(judges):
    for split in ("val", "test"):
        metrics = judges["mi"][split]
        assert metrics["mi"] > 0.3 and metrics["mi"] > metrics["mi_late"] + 0.2, metrics
    _, config = load_checkpoint(judges["estimator"])
    assert config["stage"] == "mi_estimator" and config["features"]["mfcc_window"] == 28


def a2l_args(cache: Path, out: Path, judges: dict, *extra: str) -> list[str]:
    return [
        "--cache",
        str(cache),
        "--out",
        str(out),
        *COMMON,
        "--detector",
        str(judges["detector"]),
        "--estimator",
        str(judges["estimator"]),
        *extra,
    ]


def test_a2l_trainer_with_both_judges(cache, judges, tmp_path):
    train_a2l = load_script("train_a2l")
    args = a2l_args(
        cache, tmp_path, judges, "--max-steps", "120", "--lr", "1e-2", "--lambda-wd", "1e-5", "--lambda-tr", "1e-5"
    )
    metrics = train_a2l.main(args)["test"]
    assert metrics["lmd"] < 0.5 * metrics["lmd_still"], metrics  # it learnt to move the mouth with the audio
    assert {"lmd_mouth", "l_rec", "word_accuracy", "mi"} <= set(metrics)
    model, config = load_checkpoint(tmp_path / "a2l_wd_tr")
    assert isinstance(model, LandmarkPredictor) and config["variant"] == "a2l_wd_tr"
    assert config["lambda_wd"] == 1e-5 and config["judges"]["word_detector"] == str(judges["detector"])
    header = (tmp_path / "log.csv").read_text().splitlines()[0]
    assert header == "step,epoch,loss,l_rec,l_wd,l_tr,lr,s_per_step"


class Killed(Exception):
    pass


def test_a2l_trainer_resumes_exactly(cache, judges, tmp_path, monkeypatch):
    args = ["--max-steps", "30", "--lambda-tr", "0.01"]
    load_script("train_a2l").main(a2l_args(cache, tmp_path / "a", judges, *args))

    interrupted = load_script("train_a2l")
    schedule = interrupted.learning_rate

    def dies_at_step_26(step, a):  # after step 25 was logged, 5 steps after the last saved state (20)
        if step == 25:
            raise Killed
        return schedule(step, a)

    monkeypatch.setattr(interrupted, "learning_rate", dies_at_step_26)
    with pytest.raises(Killed):
        interrupted.main(a2l_args(cache, tmp_path / "b", judges, *args))
    assert len((tmp_path / "b" / "log.csv").read_text().splitlines()) == 1 + 5  # rows up to step 25
    load_script("train_a2l").main(a2l_args(cache, tmp_path / "b", judges, *args, "--resume"))

    a, b = (load_file(str(tmp_path / run / "a2l_tr.safetensors")) for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def losses(run: str) -> list[list[str]]:  # every column but the timing
        return [row.split(",")[:-1] for row in (tmp_path / run / "log.csv").read_text().splitlines()]

    assert losses("b") == losses("a") and len(losses("a")) == 1 + 6


def test_a2l_trainer_refuses_to_resume_with_other_loss_weights(cache, judges, tmp_path):
    load_script("train_a2l").main(a2l_args(cache, tmp_path, judges, "--max-steps", "20", "--lambda-tr", "0.01"))
    with pytest.raises(ResumeError, match=r"lambda_tr = 0\.01 but this run asks for 0\.1"):
        load_script("train_a2l").main(a2l_args(cache, tmp_path, judges, "--max-steps", "30", "--lambda-tr", "0.1",
                                               "--resume"))


def test_a_run_folder_is_never_overwritten_and_a_resume_needs_a_state(cache, judges, tmp_path):
    """Re-running without --resume on a finished (or interrupted) run refuses and changes nothing; --resume on a
    folder with no saved state refuses instead of silently starting from scratch."""
    from talkface.training import RunFolderError

    run = tmp_path / "run"
    load_script("train_a2l").main(a2l_args(cache, run, judges, "--max-steps", "20"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(RunFolderError, match=r"already holds a training run \(last\.safetensors, log\.csv"):
        load_script("train_a2l").main(a2l_args(cache, run, judges, "--max-steps", "20"))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    with pytest.raises(RunFolderError, match="has no saved state"):
        load_script("train_a2l").main(a2l_args(cache, tmp_path / "new", judges, "--max-steps", "20", "--resume"))
    assert not (tmp_path / "new").exists()


def test_a2l_trainer_refuses_a_missing_judge(cache, tmp_path):
    with pytest.raises(Exception, match="missing"):
        load_script("train_a2l").main(
            [
                "--cache",
                str(cache),
                "--out",
                str(tmp_path),
                *COMMON,
                "--lambda-wd",
                "1",
                "--detector",
                str(tmp_path / "nothing_here"),
            ]
        )


@pytest.mark.slow
def test_a2l_trainer_under_torchrun(cache, judges, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "train" / "train_a2l.py"),
        *a2l_args(cache, tmp_path, judges, "--max-steps", "12", "--lambda-wd", "0.01", "--lambda-tr", "0.01"),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "a2l_wd_tr.json").read_text())
    assert config["training"]["processes"] == 2 and config["training"]["steps"] == 12
