"""OpenMP's wait policy: how long PyTorch's idle threads spin before they sleep, on the requests people make.

    python bench/openmp.py                   # the shipped setting, PASSIVE, ACTIVE, OpenMP's default, 1000-30000
    python bench/openmp.py --settings "GOMP_SPINCOUNT=3000" "OMP_WAIT_POLICY=PASSIVE"

OpenMP reads its settings once, when torch loads it, so each setting runs in a fresh process that imports
talkface first (as the CLI and the app do; talkface sets GOMP_SPINCOUNT=3000 unless one of the two variables is
given). Each process makes six requests (the 5.5-s example) twice and reports the best time of each: the face
crop and the CLI's default (the whole 512² photo with the living head) on the bundled photo; the crop, the whole
photo with a still head and with the living head on a 1200 x 1500 portrait (1024 x 1280 out); and the app's
request (whole photo, living head, panel video, live pieces).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

SETTINGS = ("as shipped", "OMP_WAIT_POLICY=PASSIVE", "OMP_WAIT_POLICY=ACTIVE", "GOMP_SPINCOUNT=300000",
            "GOMP_SPINCOUNT=1000", "GOMP_SPINCOUNT=10000", "GOMP_SPINCOUNT=30000")
REQUESTS = ("face crop", "CLI default (whole 512², living)", "crop, 1280 portrait", "whole 1280, still",
            "whole 1280, living", "app's request")


def child(work: Path, repeats: int) -> dict[str, float]:
    """The six requests in this process, `repeats` times round-robin: the best seconds of each."""
    import talkface  # noqa: F401 - first, as the CLI: it sets OpenMP's spin before torch loads
    from bench.harness import PHOTO, SPEECH
    from bench.whole_photo import portrait
    from talkface.pipeline import TalkingFacePipeline

    big = portrait(work)
    requests = dict(zip(REQUESTS, (
        dict(photo=PHOTO, full_frame=False, still=True), dict(photo=PHOTO), dict(photo=big, full_frame=False,
                                                                                 still=True),
        dict(photo=big, still=True), dict(photo=big), dict(photo=PHOTO, panels=True, on_chunk=lambda path: None))))
    pipe = TalkingFacePipeline.from_pretrained(device="cpu")
    pipe.run(PHOTO, SPEECH, out=work / "warm.mp4")
    best = dict.fromkeys(requests, float("inf"))
    for _ in range(repeats):
        for name, request in requests.items():
            request = dict(request)
            photo = request.pop("photo")
            start = time.perf_counter()
            pipe.run(photo, SPEECH, out=work / "out.mp4", max_seconds=None, **request)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def run(quick: bool = False, settings: list[str] | None = None, repeats: int = 2) -> list:
    """Each setting in a fresh process; `quick`: the shipped setting and PASSIVE, once each."""
    from bench.harness import Row, fresh_python

    settings = settings or (["as shipped", "OMP_WAIT_POLICY=PASSIVE"] if quick else list(SETTINGS))
    repeats = 1 if quick else repeats
    rows = []
    for setting in settings:
        env = dict(kv.split("=", 1) for kv in setting.split(",") if "=" in kv)
        work = Path(tempfile.mkdtemp(prefix="talkface-bench-"))
        best = fresh_python([__file__, "--child", str(work), "--repeats", str(repeats)], env, timeout=1800)[0]
        rows.append(Row("OpenMP", f"{setting} (best of {repeats}; {os.cpu_count()} cores)",
                        ", ".join(f"{name} {seconds:.2f} s" for name, seconds in best.items())))
        print(f"  {setting}: {rows[-1].value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    from bench.harness import machine_line, report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), metavar="VAR=VALUE",
                        help="OpenMP variables per process ('as shipped': none)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the shipped setting and PASSIVE, once each")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return
    header = machine_line()
    print(header, flush=True)
    settings = None if args.quick and args.settings == list(SETTINGS) else args.settings
    report("OpenMP's wait policy", run(args.quick, settings, args.repeats), header=header)


if __name__ == "__main__":
    main()
