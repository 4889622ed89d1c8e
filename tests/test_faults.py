"""Faults from outside the program: a real SIGKILL in mid-training and in mid-preparation, damaged files.

The existing resume tests stop a trainer with an exception at a chosen step; here the kernel kills a real
subprocess wherever it happens to be (possibly while it writes a file), as an out-of-memory killer, a
pre-empted cloud machine or a closed laptop would. What must hold: the rerun continues as if nothing had
happened, loses at most one checkpoint interval, and never reads a half-written file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_data import face_frames, speech_like, write_video  # tiny real videos, as the preparation tests make
from test_train_a2l import load_script, make_toy_cache

from talkface.checkpoints import save_checkpoint
from talkface.data.dataset import LandmarkDataset
from talkface.data.lrw import write_lrw_txt
from talkface.errors import CheckpointError
from talkface.models.a2l import LandmarkPredictor
from talkface.pipeline import TalkingFacePipeline

REPO = Path(__file__).parent.parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # bit-exact runs, and fair to the other tests


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    assert process.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    """SIGKILL `process` as soon as `ready()` is true (polled every few milliseconds)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the process ended before it could be killed"
        assert time.monotonic() < deadline, "the process never got far enough to be killed"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def logged_steps(log_csv: Path) -> list[int]:
    """Step numbers of the complete rows of a trainer's log.csv."""
    if not log_csv.exists():
        return []
    lines = log_csv.read_text().split("\n")[1:-1]  # the header, and a last row still being written
    return [int(line.split(",")[0]) for line in lines if line]


def saved_step(state: Path) -> int:
    with safe_open(str(state), framework="pt") as f:
        return json.loads(f.metadata()["talkface"])["state"]["step"]


# training


STEPS, SAVE_EVERY, LOG_EVERY = 600, 50, 10


def word_detector(cache: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "train.train_word_detector", "--cache", str(cache), "--out", str(out), "--size", "tiny",
            "--batch-size", "16", "--max-steps", str(STEPS), "--save-every", str(SAVE_EVERY),
            "--log-every", str(LOG_EVERY), "--val-every", "100000", *extra]


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_where_it_stopped(tmp_path):
    cache = make_toy_cache(tmp_path / "cache", {"train": 96, "val": 16, "test": 16})
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = start(word_detector(cache, straight), tmp_path / "straight.log")

    run = start(word_detector(cache, killed), tmp_path / "killed.log")
    # well past the second saved state, so that some logged steps are lost with the kill
    kill_at = 2 * SAVE_EVERY + 3 * LOG_EVERY
    kill_when(run, lambda: logged_steps(killed / "log.csv")[-1:] >= [kill_at])
    at_kill = logged_steps(killed / "log.csv")
    resume_from = saved_step(killed / "last.safetensors")
    assert 0 < resume_from < STEPS and at_kill[-1] - resume_from <= SAVE_EVERY  # at most one interval lost
    assert not (killed / "word_detector.safetensors").exists()
    kept = (killed / "log.csv").read_text().splitlines()[: 1 + resume_from // LOG_EVERY]  # with their timings

    resumed = tmp_path / "resumed.log"
    finish(start(word_detector(cache, killed, "--resume"), resumed), resumed)
    finish(reference, tmp_path / "straight.log")

    def curve(out: Path) -> list[list[str]]:  # every column but the timing
        return [row.split(",")[:-1] for row in (out / "log.csv").read_text().splitlines()]

    # the loss curve continues exactly: each step once, the same numbers as the uninterrupted run
    assert logged_steps(killed / "log.csv") == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert (killed / "log.csv").read_text().splitlines()[: len(kept)] == kept  # continued, not redone
    assert curve(killed) == curve(straight)
    a, b = (load_file(str(out / "word_detector.safetensors")) for out in (straight, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_training_state_is_refused_not_restarted(tmp_path):
    cache = make_toy_cache(tmp_path / "cache", {"train": 32})
    out = tmp_path / "run"
    args = ["--cache", str(cache), "--out", str(out), "--size", "tiny", "--batch-size", "16",
            "--save-every", "4", "--log-every", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        load_script("train_word_detector").main([*args, "--max-steps", "4"])
        state = out / "last.safetensors"
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # the disk filled up mid-write
        log_before = (out / "log.csv").read_bytes()
        with pytest.raises(CheckpointError, match=r"last\.safetensors is damaged or incomplete"):
            load_script("train_word_detector").main([*args, "--max-steps", "8", "--resume"])
    finally:
        torch.set_num_threads(threads)
    assert (out / "log.csv").read_bytes() == log_before  # nothing was overwritten by a silent fresh start


# preparation


def make_about_tree(root: Path, clips: int = 4) -> list[str]:
    """`clips` LRW-shaped training clips of the word ABOUT (a real face drifting, speech-like sound)."""
    folder = root / "ABOUT" / "train"
    folder.mkdir(parents=True)
    ids = []
    for k in range(1, clips + 1):
        frames, _ = face_frames(29, (256, 256), 0.9, k)
        write_video(folder / f"ABOUT_{k:05d}.mp4", frames, speech_like(1.16, k), "libx264", "aac")
        write_lrw_txt(folder / f"ABOUT_{k:05d}.txt", "ABOUT", 0.4, 0.75)
        ids.append(f"train/ABOUT_{k:05d}")
    return ids


def test_preparation_killed_mid_shard_and_rerun(tmp_path):
    ids = make_about_tree(tmp_path / "lrw")
    out = tmp_path / "cache"
    prepare = ["-m", "talkface.data.prepare", "--dataset", "lrw", "--root", str(tmp_path / "lrw"), "--out",
               str(out), "--shard-size", "1"]
    first = out / "train" / "shard-00000.safetensors"
    run = start(prepare, tmp_path / "first.log")
    kill_when(run, first.exists)  # the second shard's clip is being prepared (or written) right now
    assert not (out / "manifest.json").exists()
    done = len(list(out.rglob("*.safetensors")))
    assert done < len(ids)  # work was left for the rerun
    kept = first.read_bytes()
    for shard in out.rglob("*.safetensors"):  # whatever the kill left under a final name is whole
        assert load_file(str(shard))["landmarks"].shape[1:] == (29, 68, 2)

    finish(start(prepare, tmp_path / "rerun.log"), tmp_path / "rerun.log")
    assert f"wrote {len(ids) - done} shards, kept {done} finished" in (tmp_path / "rerun.log").read_text()
    assert first.read_bytes() == kept  # the finished shard was kept, not redone
    assert not [p.name for p in out.rglob("*") if ".tmp" in p.name]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["clips"] == len(ids) and manifest["splits"]["train"]["skipped"] == 0
    data = LandmarkDataset(out, "train")
    assert sorted(item["clip_id"] for item in data) == ids  # none missing, none twice
    assert all(item["landmarks"].shape == (29, 68, 2) and torch.isfinite(item["mfcc"]).all() for item in data)


# checkpoints through the pipeline


def test_damaged_checkpoints_are_named_by_from_pretrained(tiny_checkpoints, tmp_path):
    root = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints, root)

    weights = root / "l2f.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # truncated: a copy or download cut short
    with pytest.raises(CheckpointError, match=r"l2f\.safetensors is damaged or incomplete"):
        TalkingFacePipeline.from_pretrained(checkpoint_dir=root)
    shutil.copy(tiny_checkpoints / "l2f.safetensors", root)

    # weights of another size under the name: the shapes do not match what the JSON describes
    other = LandmarkPredictor(audio_channels=(4, 4, 4), audio_dim=8, landmark_dim=8, hidden=12, num_layers=1)
    save_checkpoint(tmp_path / "other", other, {})
    shutil.copy(tmp_path / "other.safetensors", root / "a2l_wd_tr.safetensors")
    with pytest.raises(CheckpointError, match=r"a2l_wd_tr\.safetensors has tensor '.+' of shape .+ where the "
                                              r"model expects"):
        TalkingFacePipeline.from_pretrained("wd_tr", checkpoint_dir=root)
    TalkingFacePipeline.from_pretrained("baseline", checkpoint_dir=root)  # the other files are still usable

    (root / "word_detector.json").write_text('{"model_class": "WordDetector", "model_')
    with pytest.raises(CheckpointError, match=r"word_detector\.json is damaged") as info:
        TalkingFacePipeline.from_pretrained("baseline", checkpoint_dir=root)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_nothing_unpickles_anywhere():
    """Every way Python loads a pickle (which can run code from a file), in every file the repo ships or tests
    with: library, trainers, app, benchmarks, tests. Weights and states are safetensors + JSON only."""
    calls = [r"torch\.load", r"torch\.hub\.load", r"pickle\.loads?", r"pickle\.Unpickler", r"dill\.loads?",
             r"cloudpickle\.loads?", r"joblib\.load", r"read_pickle", r"shelve\.open"]
    flags = r"allow_pickle\s*=\s*True|weights_only\s*=\s*False"
    pattern = re.compile(r"\b(" + "|".join(calls) + r")\s*\(|" + flags)
    files = [p for folder in ("talkface", "train", "bench", "tests") for p in (REPO / folder).rglob("*.py")]
    files += list(REPO.glob("*.py"))
    this = Path(__file__).resolve()
    offenders = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in files if p.resolve() != this
                 for m in pattern.finditer(p.read_text())]
    assert len(files) > 20 and offenders == []
