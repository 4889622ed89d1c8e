"""Command line: photo + speech -> talking-face video.

    python -m talkface --photo face.jpg --audio speech.wav --out out.mp4 [--a2l wd_tr] [--articulation 1.2]
        [--compare] [--panels] [--crop | --max-side 1920] [--still]

Exit status 0 on success, 1 when an input or a checkpoint cannot be used (one plain sentence on stderr),
130 when interrupted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from talkface.face import AlignedFace

# torch, the pipeline and the face detectors are imported in main(), after the photo's alignment has started in a
# process of its own (see _align_beside)


ALIGN_TIMEOUT = 30.0  # seconds (it takes ~1); a child that takes longer is given up, the pipeline aligns the photo


def _photo_argument(argv: list[str]) -> str | None:
    """The --photo given, read off argv by hand: the real parser (with its messages) runs later."""
    for i, arg in enumerate(argv):
        if arg == "--photo" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--photo="):
            return arg.split("=", 1)[1]
    return None


def _align_beside(argv: list[str]) -> Callable[[], tuple[AlignedFace, float] | None]:
    """Align the photo in a forked process while this one imports torch and loads the models: the face detectors'
    import, loading and search (~1.1 s) run on the second core instead of before the video (process start to
    video 4.4-5.2 s against 5.7-6.1, bench/cold_start.py; and the detectors never load in this process). Returns
    a function that waits for (the aligned face, seconds it took); None when there is none to wait for (not
    Linux; torch or the detectors already loaded: fork is safe only before; no --photo; or the child failed or
    hung: the pipeline then aligns the photo itself, and says what is wrong in its usual order)."""
    photo = _photo_argument(argv)
    if sys.platform != "linux" or not photo or any(name in sys.modules for name in ("torch", "mediapipe", "dlib")):
        return lambda: None  # (a process that has them loaded gains nothing, and a fork of it could hang)
    try:
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_align_child, args=(photo, send), daemon=True)
        child.start()
        send.close()
    except Exception:  # no fork here (resources, a daemonic process...): aligned in process, as before
        return lambda: None

    def wait() -> tuple[AlignedFace, float] | None:
        try:
            start = time.monotonic()
            while not receive.poll(0.05):
                if not child.is_alive() and not receive.poll(0):
                    return None  # died without a word
                if time.monotonic() - start > ALIGN_TIMEOUT:
                    return None
            return receive.recv()
        except (EOFError, OSError):
            return None
        finally:
            receive.close()
            child.kill()  # gone already unless it hung
            child.join()

    return wait


def _align_child(photo: str, send) -> None:
    """The child: the aligned face and its seconds, or None; never a traceback (the parent reports errors)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    try:
        start = time.perf_counter()
        from talkface.face import align_photo

        answer = (align_photo(photo), time.perf_counter() - start)
    except BaseException:  # the parent aligns it again, and reports the error as it always has
        answer = None
    try:
        send.send(answer)
        send.close()
    except (OSError, ValueError):  # the parent is gone or gave up
        pass


def _articulation(text: str) -> float:
    from talkface.pipeline import MAX_ARTICULATION

    value = float(text)
    if not 0.0 <= value <= MAX_ARTICULATION:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_ARTICULATION:g}, not {value:g}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    aligned = _align_beside(argv)
    import torch
    from tqdm import tqdm

    from talkface.audio import MAX_SECONDS
    from talkface.backends import BACKENDS
    from talkface.composite import MAX_SIDE
    from talkface.errors import TalkFaceError
    from talkface.pipeline import ABLATIONS, DEFAULT_A2L, TalkingFacePipeline

    parser = argparse.ArgumentParser(prog="python -m talkface", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", required=True, help="a photo with a face (JPEG, PNG, ...)")
    parser.add_argument("--audio", required=True, help="speech (wav, mp3, ogg, m4a, webm, ...)")
    parser.add_argument("--a2l", default=DEFAULT_A2L, choices=list(ABLATIONS),
                        help=f"which A2L model speaks: the paper's ablations (default {DEFAULT_A2L}, the best on real "
                             "video)")
    parser.add_argument("--articulation", type=_articulation, default=1.0,
                        help="how far the mouth moves: 0 still, 1 as calibrated on real video (default), up to 2")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--max-side", type=_positive_int, default=MAX_SIDE,
                      help=f"the whole photo comes back, its long side capped at this (default {MAX_SIDE}; never "
                           "enlarged; an odd width or height loses one pixel, as H.264 needs even sizes)")
    size.add_argument("--crop", action="store_true", help="write the aligned 256x256 face crop instead")
    parser.add_argument("--still", action="store_true", help="no blinks or head motion: only the mouth moves")
    parser.add_argument("--out", default="talkface.mp4", help="the video to write (default talkface.mp4)")
    parser.add_argument("--compare", action="store_true",
                        help="also run all four A2L models and write OUT_compare.mp4, a 2x2 grid")
    parser.add_argument("--panels", action="store_true",
                        help="also write OUT_panels.mp4: landmarks | heatmaps | frames side by side")
    parser.add_argument("--checkpoints", "--checkpoint-dir", dest="checkpoint_dir", default=None,
                        help="checkpoint folder (default: the bundled ones)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="where L2F runs on a CPU: torch, onnx (ONNX Runtime), bf16 (bfloat16, on CPUs "
                             "with AVX-512 BF16 or AMX), int8 (int8 convolutions, x86) or auto, the fastest here "
                             "(default: TALKFACE_BACKEND, else auto)")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                        help=f"longest speech accepted (default {MAX_SECONDS:g})")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="frames generated at once (default 4, or 8 where the auto backend measured it faster "
                             "on this machine's first run)")
    args = parser.parse_args(argv)
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} was asked for, but this machine has no usable CUDA GPU")

    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}<{remaining}", file=sys.stderr)

    def progress(fraction: float, message: str) -> None:
        bar.set_description(message)
        bar.update(round(100 * fraction) - bar.n)

    # Ctrl-C reaches the ffmpeg encoders too (talkface.video starts them in this process group), and one may die
    # first: the next frame then meets a broken pipe before Python raises KeyboardInterrupt. Either is "interrupted".
    interrupted = []

    def on_interrupt(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        pipe = TalkingFacePipeline.from_pretrained(args.a2l, device=args.device, checkpoint_dir=args.checkpoint_dir,
                                                   backend=args.backend)
        early = aligned()
        result = pipe.run(early[0] if early else args.photo, args.audio, compare=args.compare, panels=args.panels,
                          out=args.out, articulation=args.articulation, full_frame=not args.crop,
                          max_side=args.max_side, still=args.still,
                          max_seconds=args.max_seconds, batch_size=args.batch_size, progress=progress,
                          preview_frames=0)  # the app's previews: ~0.15 s of drawing the command line never shows
    except TalkFaceError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. --out in a folder that cannot be written
        bar.close()
        if interrupted:
            print("interrupted", file=sys.stderr)
            return 130
        print(f"error: could not write {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.close()
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    bar.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for path in (result.video_path, result.panel_video_path, result.compare_video_path):
        if path is not None:
            width, height = result.video_size if path == result.video_path else (None, None)
            print(f"wrote {path}" + (f" ({width}x{height})" if width else ""))
    seconds = {"face (beside the imports)": early[1], **result.seconds} if early else result.seconds
    total = result.wall + (early[1] if early else 0.0)  # the stages overlap: L2F runs beside the rest
    print(f"{result.num_frames} frames ({result.duration:.2f} s) in {total:.1f} s: "
          + ", ".join(f"{stage} {s:.1f} s" for stage, s in seconds.items()))
    print("the lips say (word detector, top 5): "
          + ", ".join(f"{word} {p:.1%}" for word, p in result.words))
    return 0


if __name__ == "__main__":
    sys.exit(main())
