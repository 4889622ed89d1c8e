"""Temporary files: one folder per process, removed at exit, and by the next process after a kill."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from talkface import tempdir

REPO = Path(__file__).parent.parent


def test_a_killed_process_leaves_its_folder_and_the_next_one_removes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    code = ("import os, signal; from talkface.tempdir import new_dir, new_file\n"
            "d = new_dir('app-'); (d / 'video.mp4').write_bytes(b'x'); new_file('.wav')\n"
            "print(d.parent, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "TMPDIR": str(tmp_path)}, check=False)
    assert killed.returncode == -signal.SIGKILL
    left = Path(killed.stdout.strip())
    assert left.is_dir() and left.parent == tmp_path and len(list(left.rglob("*"))) == 3  # atexit never ran
    clean = subprocess.run([sys.executable, "-c", "from talkface.tempdir import process_dir; print(process_dir())"],
                           capture_output=True, text=True, cwd=REPO, check=True,
                           env={**os.environ, "TMPDIR": str(tmp_path)})
    assert not left.exists()  # the next process removed the orphan...
    assert list(tmp_path.iterdir()) == []  # ...and its own folder at its exit
    assert Path(clean.stdout.strip()).parent == tmp_path


def test_folders_of_running_processes_are_kept(tmp_path):
    mine = tmp_path / f"{tempdir.PREFIX}1-abc"  # pid 1 is always running
    mine.mkdir()
    other = tmp_path / "talkface-notapid"
    other.mkdir()
    assert tempdir.remove_orphans(tmp_path) == [] and mine.exists() and other.exists()
