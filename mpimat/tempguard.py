"""A guard that removes this process's named temp files if it dies without doing so, even by SIGKILL.

Writes that several ranks share (MPI-IO) need a named temp file beside the
target until the root renames it into place.  A launcher ends a failed job
by SIGKILL of every rank (Hydra does), where no handler runs; so the first
registered temp file starts a small guard process in a session of its own,
with a pipe from us: "+PATH" registers, "-PATH" forgets.  When the pipe
closes (we exited or were killed), the guard removes what is still
registered and ends.  Pure standard library, no MPI; the guard is a fresh
interpreter (`python -m mpimat.tempguard`), not a fork of an MPI process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

_guard: Optional[subprocess.Popen] = None


def _tell(line: str) -> None:
    global _guard
    if _guard is None or _guard.poll() is not None:
        _guard = subprocess.Popen([sys.executable, "-m", "mpimat.tempguard"], stdin=subprocess.PIPE,
                                  start_new_session=True, close_fds=True)
    try:
        _guard.stdin.write(line.encode("utf-8", "surrogateescape") + b"\n")
        _guard.stdin.flush()
    except OSError:
        pass  # the guard is gone: the in-process clean-up still runs on every other path


def watch(path: str) -> None:
    _tell("+" + os.path.abspath(path))


def forget(path: str) -> None:
    if _guard is not None:
        _tell("-" + os.path.abspath(path))


def main() -> None:
    pending = set()
    for raw in sys.stdin.buffer:
        line = raw.rstrip(b"\n").decode("utf-8", "surrogateescape")
        if line[:1] == "+":
            pending.add(line[1:])
        elif line[:1] == "-":
            pending.discard(line[1:])
    for path in pending:  # our parent is gone and never renamed or removed these
        try:
            os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    main()
