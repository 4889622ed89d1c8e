"""Shared fixtures: tiny but real checkpoints, so the app and the pipeline run their bundled code path."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from talkface.audio import FEATURES
from talkface.checkpoints import save_checkpoint
from talkface.models.a2l import LandmarkPredictor
from talkface.models.l2f import GENERATOR_SIZES, Generator
from talkface.models.word_detector import WordDetector
from talkface.pipeline import ABLATIONS

# L2F on PyTorch unless a test asks for another backend (tests replace the generator to watch what it is given),
# and the backends' cache (exported models, the timing choice) in a folder of this run, not the user's
os.environ.setdefault("TALKFACE_BACKEND", "torch")
os.environ.setdefault("TALKFACE_CACHE", tempfile.mkdtemp(prefix="talkface-test-cache-"))

TINY_A2L = dict(audio_channels=(4, 4, 4), audio_dim=8, landmark_dim=8, hidden=8, num_layers=1)
TINY_WORDS = dict(hidden=8, num_layers=1, fc_dim=8)
TINY_L2F = dict(GENERATOR_SIZES["tiny"], mode="warp", landmark_flow=True)  # as shipped
TINY_IMAGE_SIZE = 64  # the tiny generator paints 64 x 64 frames: heatmaps and frames stay cheap in tests


def make_tiny_checkpoints(root: Path) -> Path:
    """Randomly initialised tiny models saved under the bundled names (a2l_*, l2f, word_detector).

    Each A2L ablation gets its own small random output layer (the real one starts at zero, which would make
    every model return the still reference face), so the four tracks move, and differ from one another.
    """
    for seed, name in enumerate(ABLATIONS):
        torch.manual_seed(seed)
        model = LandmarkPredictor(**TINY_A2L)
        with torch.no_grad():
            model.head.weight.normal_(std=0.05)
        save_checkpoint(root / f"a2l_{name}", model.eval(), {"features": FEATURES, "ablation": name})
    torch.manual_seed(10)
    save_checkpoint(root / "word_detector", WordDetector(**TINY_WORDS).eval(), {})
    torch.manual_seed(11)
    # the keys train/train_l2f.py writes and the pipeline reads
    save_checkpoint(root / "l2f", Generator(**TINY_L2F).eval(),
                    {"image_size": TINY_IMAGE_SIZE, "heatmap_sigma": 2.0, "heatmap_scale": 0.5})
    return root


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> Path:
    """A checkpoint folder laid out like assets/checkpoints, with tiny random-weight models."""
    return make_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@contextmanager
def running_app(checkpoints: Path, log: Path, max_seconds: float, env: dict[str, str] | None = None,
                repo: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """The real app.py (this checkout's, or `repo`'s) in its own process, as `bash run.sh demo` starts it, on
    127.0.0.1 and a free port: (its URL, the process), stopped on exit. bench/first_frame.py uses it too."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--checkpoints", str(checkpoints), "--host", "127.0.0.1", "--port", str(port),
             "--max-seconds", f"{max_seconds:g}"],
            cwd=repo or Path(__file__).parent.parent, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start:\n{log.read_text()}") from None
                time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)
