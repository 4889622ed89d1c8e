"""One temporary folder per process, for everything TalkFace writes that nobody asked to keep.

The app's request folders, the sound tracks handed to ffmpeg, the videos of ``run(out=None)``: all go under
``process_dir()``, removed when the process exits. A process that is killed (out of memory, SIGKILL) cannot clean
up, so the first call in a new process removes the folders of TalkFace processes that are no longer running.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

PREFIX = "talkface-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-")
_lock = threading.Lock()
_dir: Path | None = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the temporary folders of TalkFace processes that are gone; returns what was removed."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        match = _NAME.match(path.name)
        if match and path.is_dir() and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def process_dir() -> Path:
    """This process's temporary folder (created on first use, removed at exit)."""
    global _dir
    with _lock:
        if _dir is None or not _dir.is_dir():
            remove_orphans()
            _dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
            atexit.register(shutil.rmtree, _dir, ignore_errors=True)
        return _dir


def new_dir(prefix: str = "") -> Path:
    """A fresh folder inside ``process_dir()``."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=process_dir()))


def new_file(suffix: str) -> Path:
    """A fresh, empty file inside ``process_dir()`` (the caller removes it when done)."""
    fd, path = tempfile.mkstemp(suffix=suffix, dir=process_dir())
    os.close(fd)
    return Path(path)
