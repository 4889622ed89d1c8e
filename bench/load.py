"""Load: the Gradio app on 127.0.0.1 under 8 concurrent requests through `gradio_client`.

    python bench/load.py            # two bursts of 8 requests, 1.0-4.5 s of speech each
    python bench/load.py --quick    # two bursts of 8 requests, 0.6-2.0 s of speech each
    python bench/load.py --app-env MALLOC_ARENA_MAX=2    # only an app started with that variable

The app starts as a person starts it (`python app.py --checkpoints DIR --port PORT`, a free port, checkpoints
from the bench set-up). After one warm-up request (the first loads the models) its memory is the baseline;
then each burst sends 8 requests at once, each with a different length of real speech, so every answer can
be checked against its own question: all must succeed, each video must have exactly the frames and the
sound of its own speech, and no two videos may be the same file. Reported: latency percentiles (the queue
runs one generation at a time, so the last of 8 waits for the other 7), and the app's memory (with its
ffmpeg encoders) at the peak and after each burst against the baseline. Everything is bounded: 8 requests
a burst, a time limit per burst, and the app is stopped at the end whatever happens.

The whole test runs three times: the app as shipped; started with MALLOC_MMAP_THRESHOLD_=131072 (glibc then
serves large blocks with mmap and hands them back when freed); and with glibc's malloc_trim(0) called after
every request (app.py's own main, its request function wrapped here: the change proposed for app.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.harness import (
    PHOTO,
    REPO,
    PeakSampler,
    Row,
    benchmark_checkpoints,
    checkpoint_note,
    machine_line,
    report,
    tree_rss_mib,
    write_speech,
)
from talkface.audio import SAMPLE_RATE, num_video_frames
from talkface.video import probe

SECTION = "load"
REQUESTS = 8
# glibc keeps freed heap memory for reuse, per thread arena; Gradio runs requests on many threads, so the
# app's RSS climbs request after request. Large blocks served by mmap go back to the system when freed.
MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}
VARIANTS = (("as shipped", False, {}), ("MALLOC_MMAP_THRESHOLD_=131072", False, MMAP_THRESHOLD),
            ("malloc_trim(0) after each request", True, {}))


def serve_with_trim(argv: list[str]) -> None:
    """app.py's main, with glibc's malloc_trim(0) after every request: freed memory of the request goes back
    to the system at once, whichever of Gradio's worker threads (and malloc arenas) served it."""
    import ctypes
    import functools
    import importlib.util

    spec = importlib.util.spec_from_file_location("talkface_app", REPO / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    libc = ctypes.CDLL("libc.so.6")
    generate = app.TalkFaceApp.generate

    @functools.wraps(generate)
    def trimmed(self, *args, **kwargs):
        try:
            yield from generate(self, *args, **kwargs)
        finally:
            libc.malloc_trim(0)

    app.TalkFaceApp.generate = trimmed
    app.main(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(url: str, app: subprocess.Popen, downloads: Path, timeout: float):
    """A gradio_client.Client once the app answers (it takes a few seconds to import and start)."""
    from gradio_client import Client

    deadline = time.monotonic() + timeout
    while True:
        if app.poll() is not None:
            raise RuntimeError(f"the app exited with status {app.returncode} before it answered")
        try:
            return Client(url, verbose=False, download_files=str(downloads))
        except Exception:  # not listening yet: connection refused, or its config not ready
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def burst(client, speeches: list[Path], timeout: float) -> tuple[list[float], list[tuple]]:
    """Send every request at once; returns each one's latency and outputs, in request order."""
    from gradio_client import handle_file

    start = time.perf_counter()
    photo = handle_file(str(PHOTO))
    jobs = [client.submit(photo, handle_file(str(s)), True, True, False, api_name="/generate")
            for s in speeches]
    latency: list[float | None] = [None] * len(jobs)
    while any(t is None for t in latency):
        if time.perf_counter() - start > timeout:
            for job in jobs:
                job.cancel()
            raise TimeoutError(f"only {sum(t is not None for t in latency)} of {len(jobs)} requests finished "
                               f"within {timeout:.0f} s")
        for i, job in enumerate(jobs):
            if latency[i] is None and job.done():
                latency[i] = time.perf_counter() - start
        time.sleep(0.05)
    return latency, [job.result() for job in jobs]  # result() re-raises a failed request's error


def check(outputs: list[tuple], speeches: list[Path]) -> None:
    """Every request got its own, complete video: its frame count and sound, a file no other request got."""
    import soundfile as sf

    seen = set()
    for path, out in zip(speeches, outputs):
        video, panels = Path(out[1]), Path(out[2])
        expected = num_video_frames(round(sf.info(path).duration * SAMPLE_RATE))
        info = probe(video)
        if not (info["has_video"] and info["has_audio"] and info["frames"] == expected):
            raise AssertionError(f"{path.name}: the video has {info['frames']} frames "
                                 f"(audio: {info['has_audio']}), expected {expected} with audio")
        if probe(panels)["frames"] != expected:
            raise AssertionError(f"{path.name}: the panel video does not match its speech")
        if f"{expected} frames" not in out[-1]:
            raise AssertionError(f"{path.name}: the details say {out[-1][:80]!r}")
        digest = hashlib.sha256(video.read_bytes()).hexdigest()
        if digest in seen:
            raise AssertionError(f"{path.name}: its video is the same file as another request's")
        seen.add(digest)


def run(quick: bool = False, work: Path | None = None, bursts: int = 2, variants: tuple = VARIANTS
        ) -> list[Row]:
    """The load test once per variant: (label, trim after each request, environment of the app)."""
    work = Path(work or tempfile.mkdtemp(prefix="talkface-bench-"))
    rows = []
    for label, trim, app_env in variants:
        rows += load_test(quick, work, bursts, label, trim, app_env)
    return rows


def load_test(quick: bool, work: Path, bursts: int, label: str, trim: bool, app_env: dict[str, str]
              ) -> list[Row]:
    checkpoints = benchmark_checkpoints(work / "checkpoints")
    lengths = [0.6 + 0.2 * i for i in range(REQUESTS)] if quick else [1.0 + 0.5 * i for i in range(REQUESTS)]
    speeches = [write_speech(work / f"speech_{s:.1f}s.wav", s) for s in lengths]
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(work / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False",
           **app_env}
    log = open(work / f"app_{port}.log", "w")  # closed in the finally below
    launch = [__file__, "--serve-with-trim"] if trim else ["app.py"]
    app = subprocess.Popen([sys.executable, *launch, "--checkpoints", str(checkpoints), "--port", str(port),
                            "--max-seconds", "30"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    extra = f"; app {label}"
    rows = [Row(SECTION, "set-up", f"{checkpoint_note(checkpoints)}; {REQUESTS} requests a burst, "
                f"{lengths[0]:.1f}-{lengths[-1]:.1f} s of speech each, WD+TR, panels on (as the app does)"
                f"{extra}")]
    try:
        start = time.perf_counter()
        client = connect(f"http://127.0.0.1:{port}/", app, work / "downloads", timeout=180)
        started = time.perf_counter() - start
        fresh = tree_rss_mib(app.pid)
        start = time.perf_counter()
        burst(client, speeches[:1], timeout=300)
        rows.append(Row(SECTION, "app start, then first request (loads the models)",
                        f"{started:.1f} s, then {time.perf_counter() - start:.1f} s"))
        time.sleep(2)
        baseline = tree_rss_mib(app.pid)
        rows.append(Row(SECTION, "app memory: started -> after the first request (baseline)",
                        f"{fresh:.0f} -> {baseline:.0f} MiB"))
        for k in range(bursts):
            sampler = PeakSampler(app.pid, interval=0.1)
            sampler.start()
            latency, outputs = burst(client, speeches, timeout=60 + 40 * sum(lengths))
            peak = sampler.stop()
            check(outputs, speeches)
            time.sleep(3)
            after = tree_rss_mib(app.pid)
            p50, p90 = np.percentile(latency, [50, 90])
            rows.append(Row(SECTION, f"burst {k + 1}: {REQUESTS} concurrent requests",
                            f"all succeeded, each video has its own speech's frames and sound, all distinct; "
                            f"latency p50 {p50:.1f} s, p90 {p90:.1f} s, max {max(latency):.1f} s "
                            f"(all done in {max(latency):.1f} s)"))
            rows.append(Row(SECTION, f"burst {k + 1}: app memory peak / 3 s after / baseline",
                            f"{peak:.0f} (app alone {sampler.peak_alone:.0f}) / {after:.0f} / "
                            f"{baseline:.0f} MiB (after = {after / baseline:.2f}x baseline)",
                            "back to baseline"))
            for row in rows[-2:]:
                print(f"  {row.figure}: {row.value}", flush=True)
        if app.poll() is not None:
            raise RuntimeError("the app died during the load test")
    finally:
        if app.poll() is None:
            app.send_signal(signal.SIGINT)  # Gradio closes its server and temporary files on Ctrl-C
            try:
                app.wait(timeout=20)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
        log.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter speech (0.6-2.0 s)")
    parser.add_argument("--bursts", type=int, default=2, help="bursts of 8 requests (default 2)")
    parser.add_argument("--app-env", action="append", default=[], metavar="NAME=VALUE",
                        help="test only an app started with these environment variables (repeatable)")
    parser.add_argument("--serve-with-trim", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.serve_with_trim:
        serve_with_trim(rest)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    variants = VARIANTS
    if args.app_env:
        env = dict(item.split("=", 1) for item in args.app_env)
        variants = ((", ".join(args.app_env), False, env),)
    header = machine_line()
    print(header, flush=True)
    report("Load", run(args.quick, bursts=args.bursts, variants=variants), header=header)


if __name__ == "__main__":
    main()
