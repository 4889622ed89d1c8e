"""What every benchmark shares: the machine it ran on, checkpoints of the real sizes, timing, the table.

Figures from a loaded machine are not figures of the machine, so every script prints `machine_line()`
(cores, CPU model, torch threads, OpenMP settings, load average when it started) above its numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# isort: off
import talkface  # noqa: F401 - before torch: it sets OpenMP's spin-wait, which the CLI and the app run with
# isort: on
import numpy as np
import soundfile as sf
import torch

from talkface.backends import cpu_model  # one reading of /proc/cpuinfo for bench and library

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "assets" / "examples" / "face.jpg"
SPEECH = REPO / "assets" / "examples" / "speech.wav"
# OpenMP's threads spin while they wait for work; on a CPU shared with other processes (here: the ffmpeg
# encoders of every run) that spinning can cost more than the work.
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# the machine


def memory_total_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def openmp_setting() -> str:
    """The OpenMP variables this process started with: they change CPU figures several-fold on a busy CPU."""
    found = [f"{k}={os.environ[k]}" for k in OPENMP_VARIABLES if k in os.environ]
    return ", ".join(found) or "OpenMP defaults (spin-wait)"


def machine_line(device: torch.device | None = None) -> str:
    """One line that tells a quiet run from a noisy one: cores, CPU, threads, load average now."""
    device = device or default_device()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"machine: {cores} cores ({cpu_model()}), {memory_total_gib():.0f} GiB RAM, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, {openmp_setting()}, "
            f"load average {load} (1/5/15 min) at start{gpu}")


def fresh_python(args: list[str], env: dict[str, str] | None = None, timeout: float = 600
                 ) -> tuple[dict, float]:
    """Run `python ARGS` in a new process (OpenMP variables only as `env` sets them) and return the JSON
    object it prints last, and its wall time. OpenMP reads its variables once, when torch loads, so
    comparing them takes a process each."""
    clean = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], env={**clean, **(env or {})}, capture_output=True,
                         text=True, timeout=timeout, cwd=REPO, check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


# inputs and checkpoints


def speech(seconds: float | None = None) -> np.ndarray:
    """The bundled example speech at 16 kHz, cut or repeated (real speech throughout) to `seconds`."""
    wave, rate = sf.read(SPEECH, dtype="float32")
    if seconds is None:
        return wave
    n = round(seconds * rate)
    return np.tile(wave, -(-n // len(wave)))[:n]


def write_speech(path: Path, seconds: float | None = None) -> Path:
    sf.write(path, speech(seconds), 16000, subtype="PCM_16")
    return path


def benchmark_checkpoints(root: Path) -> Path:
    """The bundled checkpoints when they are all there, else the real model classes at their default sizes
    with random weights, saved like the trainers export them (fp16 safetensors + JSON) under `root`.

    The A2L output layers get small random weights (a trained model's start at zero), so that the landmarks
    move and the heatmaps and frames change from frame to frame as they would with trained weights.
    """
    from talkface.audio import FEATURES
    from talkface.checkpoints import BUNDLED, save_checkpoint
    from talkface.data.lrw import lrw_vocabulary
    from talkface.models.a2l import LandmarkPredictor
    from talkface.models.l2f import GENERATOR_SIZES, HEATMAP_SCALE, Generator
    from talkface.models.word_detector import WordDetector
    from talkface.pipeline import ABLATIONS, missing_checkpoints

    if not missing_checkpoints(BUNDLED):
        return BUNDLED
    root.mkdir(parents=True, exist_ok=True)
    if not missing_checkpoints(root):
        return root
    for seed, name in enumerate(ABLATIONS):
        torch.manual_seed(seed)
        model = LandmarkPredictor()
        with torch.no_grad():
            model.head.weight.normal_(std=0.002)
        save_checkpoint(root / f"a2l_{name}", model.eval(), {"features": FEATURES, "variant": f"a2l_{name}"},
                        half=True)
    torch.manual_seed(10)
    save_checkpoint(root / "word_detector", WordDetector().eval(),
                    {"features": FEATURES, "vocabulary": lrw_vocabulary()}, half=True)
    torch.manual_seed(11)
    save_checkpoint(root / "l2f", Generator(mode="warp", landmark_flow=True, **GENERATOR_SIZES["default"]).eval(),
                    {"image_size": 256, "heatmap_sigma": 2.0, "heatmap_scale": HEATMAP_SCALE}, half=True)
    return root


def checkpoint_note(path: Path) -> str:
    from talkface.checkpoints import BUNDLED

    if path == BUNDLED:
        return "bundled checkpoints"
    return "default-size models, random weights (no trained ones yet)"


# timing


def seconds_per_call(fn: Callable[[], object], min_seconds: float = 1.0, min_calls: int = 3,
                     max_calls: int = 1000, warmup: int = 1, sync: bool = False) -> float:
    """Median wall time of one call, after `warmup` calls: the median shrugs off a neighbour's burst."""
    def call() -> float:
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        call()
    times: list[float] = []
    begin = time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - begin < min_seconds and len(times) < max_calls):
        times.append(call())
    return float(np.median(times))


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, min_seconds: float = 1.0) -> float:
    """Measured FLOP/s of large square matrix multiplies, the fastest call of several sizes: the most this
    device does in practice (the fastest, not the median, because a peak is what is asked for)."""
    best = 0.0
    for size in (1024, 2048, 3072):
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        for _ in range(2):
            a @ b  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        while time.perf_counter() - begin < min_seconds / 3:
            start = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def _status_mib(field: str, pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries that over from
    the parent when a child is started, so a small child of a big benchmark would report the parent's peak."""
    return _status_mib("VmHWM", pid)


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process now (VmRSS)."""
    return _status_mib("VmRSS", pid)


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid` (the ffmpeg encoders of a pipeline run, say), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its children now (shared pages counted in each, as RSS does)."""
    total = 0.0
    for p in [pid, *child_pids(pid)]:
        try:
            total += rss_mib(p)
        except OSError:
            pass  # gone meanwhile
    return total


class PeakSampler(threading.Thread):
    """Samples the RSS of a process alone (`peak_alone`) and with its children (`peak`) every `interval`
    seconds in the background, keeping the peaks."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.peak_alone = pid, interval, 0.0, 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak_alone = max(self.peak_alone, rss_mib(self.pid))
                self.peak = max(self.peak, tree_rss_mib(self.pid))
            except OSError:
                return
            self._stop_event.wait(self.interval)

    def stop(self) -> float:
        """Stop sampling; returns the peak with the children."""
        self._stop_event.set()
        self.join()
        return self.peak


# the table


@dataclass
class Row:
    """One figure: where it belongs, what it is, its value, and the target it is held against (if any)."""

    section: str
    figure: str
    value: str
    target: str = ""


def markdown_table(rows: list[Row]) -> str:
    lines = ["| section | figure | value | target |", "|---|---|---|---|"]
    lines += [f"| {r.section} | {r.figure} | {r.value} | {r.target} |" for r in rows]
    return "\n".join(lines)


def report(title: str, rows: list[Row], device: torch.device | None = None, header: str | None = None
           ) -> None:
    """Print a benchmark's figures under the machine line taken when it started."""
    print(f"\n## {title}\n")
    print(header or machine_line(device))
    print()
    print(markdown_table(rows))
