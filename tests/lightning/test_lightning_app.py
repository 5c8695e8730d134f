"""The example app on Lightning's real local runtime (lightning-app 2.3.2).

Needs the Lightning venv: `bash scripts/lightning_env.sh`, then
`.venv-lightning/bin/python -m pytest tests/lightning`.

The app runs through `lightning_app.runners.runtime.dispatch(...,
blocking=False)` in a child process (its own session), with MultiNode made
to believe it runs in the cloud (MPIMAT_SIMULATE_NODES=1) so both nodes run
here.  Lightning's work processes survive SIGTERM, so after the run the
test kills the runtime's session, then checks that nothing it started
(tagged) survives: mpiexec, proxies and ranks run in sessions of their own
and must have been ended by mpimat.lightning itself.
"""

import json
import os
import signal
import subprocess

import numpy as np
import pytest

from conftest import PYTHON, REPO, free_port, wait_no_leftovers

pytest.importorskip("lightning_app", reason="needs the Lightning venv (scripts/lightning_env.sh)")

pytestmark = pytest.mark.lightning

APP = REPO / "examples" / "lightning_app.py"

DRIVER = """
import sys
from pathlib import Path
from lightning_app.runners.runtime import dispatch
from lightning_app.runners.runtime_type import RuntimeType
dispatch(Path(sys.argv[1]), RuntimeType.MULTIPROCESS, port=int(sys.argv[2]),
         open_ui=False, blocking=False)
"""


def run_app(env, cwd, job_args, timeout=150):
    env = dict(env, MPIMAT_SIMULATE_NODES="1", MPIMAT_NUM_NODES="2",
               MPIMAT_PROCS_PER_NODE="2", MPIMAT_JOIN_TIMEOUT="60",
               MPIMAT_JOB_ARGS=" ".join(job_args))
    proc = subprocess.Popen([PYTHON, "-c", DRIVER, str(APP), str(free_port())], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"the app did not end within {timeout} s:\n{out}")
    finally:
        try:  # the runtime's leftover children (work processes ignore SIGTERM)
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    return proc.returncode, out


def test_app_runs_the_job_on_two_nodes(matrices, env, tag, tmp_path):
    a, b = matrices
    code, out = run_app(env, tmp_path, ["--a", "A.npy", "--b", "B.npy", "--out", "C.npy",
                                        "--report", "run.json"])
    assert code == 0, out
    assert "mpimat job finished on 2 node(s)" in out
    assert "node 1: joined node 0" in out
    np.testing.assert_allclose(np.load(tmp_path / "C.npy"), a @ b, rtol=1e-12, atol=1e-12)
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["ranks"] == 4 and report["exit_code"] == 0
    assert wait_no_leftovers(tag) == []


def test_failing_job_fails_the_app(matrices, env, tag, tmp_path):
    code, out = run_app(env, tmp_path, ["--a", "missing.npy", "--b", "B.npy", "--out", "C.npy"])
    assert code != 0, out
    assert "mpimat: error:" in out and "missing.npy" in out
    assert "failed with exit status 2" in out
    assert "mpimat job failed: root.job.ws." in out
    assert not (tmp_path / "C.npy").exists()
    assert wait_no_leftovers(tag) == []
