"""TalkFace: talking-face generation via semantic and temporal synchronous landmarks (Zheng et al., ICPR 2020)."""

import os
import sys

# How long PyTorch's idle OpenMP threads busy-wait for the next piece of work before they sleep. The default
# (300000 spins) fights the ffmpeg encoders on a small CPU, and sleeping at once (OMP_WAIT_POLICY=PASSIVE, used
# before 2026-12-06) pays a wake-up at every parallel region. A short spin wins both: on 2 cores, 5.5 s of speech,
# fresh processes, talkface imported first as here (best of 2): face crop 2.35-2.48 s against 2.71-2.80
# (PASSIVE), the CLI's default video 2.59-2.76 against 2.93-3.01, the app's request 3.77-3.83 against 4.08-4.15;
# 1000 to 30000 spins within noise of each other. Read by OpenMP when torch loads it: set before any torch import;
# a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
# GOMP_SPINCOUNT is GNU OpenMP's (torch's on Linux); elsewhere (LLVM's or Intel's OpenMP) the threads sleep at once,
# as before: not measured there.
if sys.platform.startswith("linux"):
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "3000")
else:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from talkface.errors import AudioError, CheckpointError, FaceError, TalkFaceError

__all__ = ["AudioError", "CheckpointError", "FaceError", "TalkFaceError", "TalkingFacePipeline", "release_memory"]


def _glibc():
    """The C library's handle where it is glibc (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _malloc_settings() -> None:
    """glibc's malloc set for PyTorch on a small CPU: one arena for every thread, and activations reused in place
    instead of mapped afresh. A setting the user made (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_,
    MALLOC_TRIM_THRESHOLD_, or glibc's tunables) is left as it is.

    - One arena (M_ARENA_MAX 1): L2F's streams (``talkface.renderer``) and the app's request threads would each
      get an arena of their own, where freed full-resolution activations are not reused but mapped afresh: on 2
      cores the generator ran 35-38 frames/s at batch 4 with an arena per thread against 39-44 with one, and
      peaked 30-60 MB higher on a 33-s video (docs/benchmarks.md).
    - Blocks up to 32 MB from the heap, and its top kept (M_MMAP_THRESHOLD 32 MB, M_TRIM_THRESHOLD 256 MB): the
      generator's activations (up to 8 MB each) were otherwise mapped and given back at every layer, each page
      faulted in and zeroed again (1,600-9,000 page faults a batch of 4 frames): 35.4 -> 38.6 frames/s on
      average (docs/benchmarks.md); 64 MB still let some batches fault. What a run kept is given back at its end
      (``release_memory``, called by ``TalkingFacePipeline.run``); its peak is the same.
    Process-wide, so set when talkface is imported, before any thread starts; elsewhere than glibc nothing is
    changed."""
    libc = _glibc()
    if libc is None:
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    for option, value, variable, tunable in ((-8, 1, "MALLOC_ARENA_MAX", "arena_max"),
                                             (-3, 32 << 20, "MALLOC_MMAP_THRESHOLD_", "mmap_threshold"),
                                             (-1, 256 << 20, "MALLOC_TRIM_THRESHOLD_", "trim_threshold")):
        if variable not in os.environ and tunable not in tunables:
            libc.mallopt(option, value)


_malloc_settings()


def release_memory() -> None:
    """Give the heap's free memory back to the system (glibc's ``malloc_trim``; a no-op elsewhere): after a video,
    so that a long-running process (the app, a server using the library) returns to its idle size, which
    ``_malloc_settings`` would otherwise keep up to its trim threshold above."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def __getattr__(name: str):
    """``from talkface import TalkingFacePipeline`` without importing torch for every ``talkface.*`` import."""
    if name == "TalkingFacePipeline":
        from talkface.pipeline import TalkingFacePipeline

        return TalkingFacePipeline
    raise AttributeError(f"module 'talkface' has no attribute {name!r}")
__version__ = "0.1.0"
