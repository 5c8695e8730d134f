"""Start mpimat under the interpreter's own mpiexec, always with a timeout."""

import os
import subprocess
import sys
from pathlib import Path

MPIEXEC = Path(sys.executable).with_name("mpiexec")
ROOT = Path(__file__).resolve().parent.parent


def run_mpimat(args, n=2, timeout=120, env=None, cwd=None, module="mpimat", script=None):
    """`mpiexec -n N python -m mpimat ARGS` (n=None: a plain singleton run).

    script: run this Python file (with ARGS) instead of the module.

    Returns the CompletedProcess.  MPIEXEC_TIMEOUT makes the launcher itself
    end a hung job; the subprocess timeout is the backstop.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("MPIEXEC_TIMEOUT", str(int(timeout)))
    start = [str(script)] if script else ["-m", module]
    cmd = [sys.executable, *start, *map(str, args)]
    if n is not None:
        cmd = [str(MPIEXEC), "-n", str(n), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30,
                          env=full_env, cwd=cwd or ROOT)


def one_error_line(proc):
    """stderr is exactly one line, `mpimat: error: ...`, and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mpimat: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]
