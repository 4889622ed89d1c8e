"""The app as a person sees it: seconds from clicking Generate to the first moving frame on screen, and to the
finished video, in headless Chromium on the running app (warm: one request first).

    python bench/first_frame.py                       # this checkout's app.py, bundled checkpoints
    python bench/first_frame.py --repo /tmp/old_wt    # another checkout's app.py (before/after in one run)
    python bench/first_frame.py --photo big.jpg       # another photo (above 512² the video is OpenH264's)
    python bench/first_frame.py --audio long.wav      # another speech (the target holds for any length)

Each run also says where the wait went, in seconds after the click: the request leaving the page, the app's handler
having its first piece (the app logs it), the page fetching the stream's playlist and its first segment.
The live video (Gradio's streaming output) counts as moving once its playback position passes its first frame.
Now and then it never does (hls.js stalls on the first pieces and the finished video replaces it first): such a
run is counted as "never moved" and shown apart, not waited on.
Needs Debian's chromium and the system's ffmpeg/ffprobe (bash run.sh test installs them), as the browser test.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

# as a user runs the app: L2F on the backend this machine chose ("auto") and its cache, which the browser tests'
# launcher below pins to PyTorch and a fresh folder when it is imported (tests.conftest)
SHIPPED_ENV = {"TALKFACE_BACKEND": os.environ.get("TALKFACE_BACKEND", "auto"),
               "TALKFACE_CACHE": os.environ.get("TALKFACE_CACHE", "")}

from bench.harness import machine_line  # noqa: E402
from tests.conftest import running_app  # noqa: E402  the browser tests' launcher: app.py on a free port

REPO = Path(__file__).resolve().parent.parent

CHROMIUM = "/usr/bin/chromium"
PHOTO = REPO / "assets" / "examples" / "face.jpg"
SPEECH = REPO / "assets" / "examples" / "speech.wav"
MAX_SECONDS = 120  # the app's default

MOVING = """() => { const v = document.querySelector('#talkface-live video');
                   return !!v && v.currentTime > 0.04 && !v.paused; }"""
FINISHED = """(before) => { const v = document.querySelector('#talkface-video video');
                     const live = document.querySelector('#talkface-live');
                     return !!v && v.currentSrc !== before && v.duration > 1
                            && (!live || live.offsetParent === null); }"""
SOURCE = """() => { const v = document.querySelector('#talkface-video video'); return v ? v.currentSrc : ""; }"""


MOVED_OR_FINISHED = f"""(before) => ({MOVING})() ? "moved" : ({FINISHED})(before) ? "finished" : null"""


def first_after(events: list[tuple[float, str]], start: float, *parts: str, nth: int = 1) -> float | None:
    """Seconds from `start` to the first (`nth`) network event whose text holds all of `parts`."""
    found = [t - start for t, text in events if t >= start and all(p in text for p in parts)]
    return found[nth - 1] if len(found) >= nth else None


def server_waits(log: Path | None) -> list[float]:
    """The app's own "first piece of the live video X s after the request" lines (timed from its handler's
    start), in order: one per run that streamed, so a run that did not would shift the later ones."""
    if log is None or not log.exists():
        return []
    found = re.findall(r"first piece of the live video ([0-9.]+) s after the request", log.read_text(errors="replace"))
    return [float(x) for x in found]


def breakdown(events: list[tuple[float, str]], start: float, server: float | None) -> str:
    """Where the wait before the first moving frame goes: the click's request reaching the queue, the app's handler
    making the first piece (its own log), the page asking for the stream's playlist and its first segment."""
    join = first_after(events, start, "request", "/queue/join")
    playlist = first_after(events, start, "response", "playlist.m3u8")
    segment = first_after(events, start, "response", ".ts")
    # a player that does not start on the first piece waits for the next playlist and segment
    again = first_after(events, start, "response", "playlist.m3u8", nth=2)
    second = first_after(events, start, "response", ".ts", nth=2)
    shown = [("request sent", join), ("first piece made (server)", None if server is None or join is None
                                                                    else join + server),
             ("playlist", playlist), ("first segment", segment), ("second playlist", again),
             ("second segment", second)]
    return ", ".join(f"{name} {t:.2f}" for name, t in shown if t is not None)


def measure(url: str, runs: int, photo: Path = PHOTO, screenshot: Path | None = None, speech: Path = SPEECH,
            log: Path | None = None) -> list[tuple[float | None, float]]:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        events: list[tuple[float, str]] = []  # (time, "request URL" / "response URL"): the breakdown's clock
        page.on("request", lambda r: events.append((time.monotonic(), f"request {r.url}")))
        page.on("response", lambda r: events.append((time.monotonic(), f"response {r.url}")))
        page.goto(url)
        page.locator("#talkface-photo input[type=file]").set_input_files(str(photo))
        page.locator("#talkface-audio input[type=file]").set_input_files(str(speech))
        page.locator("#talkface-speech-note").get_by_text("s of sound").wait_for(timeout=60_000)
        page.locator("#talkface-photo-note").get_by_text("face was found").wait_for(timeout=60_000)
        for k in range(runs + 1):  # the first request loads the models: not counted
            before = page.evaluate(SOURCE)  # the last video, until this request's replaces it
            start = time.monotonic()
            page.locator("#talkface-generate").click()
            first = page.wait_for_function(MOVED_OR_FINISHED, arg=before, polling=20, timeout=240_000).json_value()
            moving = time.monotonic() - start if first == "moved" else None
            page.wait_for_function(FINISHED, arg=before, polling=100, timeout=240_000)
            finished = time.monotonic() - start
            # the request is still closing its stream for a moment after the video lands, and the page ignores a
            # click until it has ("once"): wait, as a person watching the new video would
            page.wait_for_timeout(2000)
            if k:
                times.append((moving, finished))
            seen = f"{moving:.2f} s" if moving is not None else "never (the finished video came first)"
            # the app's own count of its work ("Done: ... in X s"), apart from when the page shows the finished video
            made = re.search(r"in ([0-9.]+) s", page.locator("#talkface-status").inner_text())
            waits = server_waits(log)
            server = waits[k] if len(waits) > k else None
            print(f"  {'run ' + str(k) if k else 'warm-up'}: first moving frame {seen}, "
                  f"finished video {finished:.2f} s{f' (made in {made.group(1)} s)' if made else ''} "
                  f"(seconds after the click: {breakdown(events, start, server)})",
                  flush=True)
        if screenshot:
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose app.py runs")
    parser.add_argument("--checkpoints", type=Path, default=REPO / "assets" / "checkpoints")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--photo", type=Path, default=PHOTO, help="the photo (default: the bundled example)")
    parser.add_argument("--screenshot", type=Path, help="a PNG of the page after the last run")
    parser.add_argument("--audio", type=Path, default=SPEECH, help="the speech (default: the bundled example)")
    parser.add_argument("--backend", default=SHIPPED_ENV["TALKFACE_BACKEND"],
                        help="L2F's backend in the app (default: TALKFACE_BACKEND, else auto, as shipped)")
    args = parser.parse_args(argv)
    print(machine_line(), flush=True)
    log = Path(tempfile.mkdtemp(prefix="talkface-bench-")) / "app.log"
    env = {**SHIPPED_ENV, "TALKFACE_BACKEND": args.backend}
    with running_app(args.checkpoints.resolve(), log, MAX_SECONDS, env=env, repo=args.repo.resolve()) as (url, _):
        times = measure(url, args.runs, args.photo.resolve(), args.screenshot, args.audio.resolve(), log)
    moved = [m for m, _ in times if m is not None]
    finished = [f for _, f in times]
    span = f"{min(moved):.2f}-{max(moved):.2f} s" if moved else "never"
    print(f"{args.repo}: first moving frame {span} ({len(times) - len(moved)} of {len(times)} runs never moved), "
          f"finished video {min(finished):.2f}-{max(finished):.2f} s after Generate ({len(times)} warm runs; the "
          f"speech {args.audio.name}, photo {args.photo.name}, whole photo, bundled checkpoints, L2F backend "
          f"{args.backend})")


if __name__ == "__main__":
    main()
