"""A real one-node Slurm cluster for the tests in this directory.

The session fixture `slurm` brings the cluster up with scripts/slurm_cluster.sh
(slurmctld + slurmd + a private munged, all state in a fresh temp directory,
packages installed with apt-get when missing) and tears it down at the end,
stopping exactly the daemons it started. Jobs are submitted with the real
slurm/ scripts and waited for by polling `scontrol` every 0.5 s.

Without root, or without Slurm and apt-get, the tests skip with the reason. In
CI (CI set in the environment) they must run: the same conditions fail instead.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
SLURM_DIR = REPO / "slurm"
# The jobs run the python of this test session (its venv has mpimat, mpi4py, mpich).
VENV = Path(sys.executable).parent.parent
POLL = 0.5
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _skip_or_fail(reason: str):
    if IN_CI:
        pytest.fail(f"Slurm tests must run in CI but cannot: {reason}", pytrace=False)
    pytest.skip(reason)


def _cannot_run() -> str | None:
    if sys.platform != "linux":
        return "the Slurm test cluster needs Linux"
    if os.geteuid() != 0:
        return "needs root: the test cluster's slurmd runs as root (run as root, e.g. in CI)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install it"
    if not (VENV / "bin" / "python").exists():
        return f"the test interpreter {sys.executable} is not in a virtualenv (MPIMAT_VENV)"
    return None


@dataclass
class Job:
    id: str
    state: str
    exit_code: str
    fields: dict
    elements: list = field(default_factory=list)


@dataclass
class Cluster:
    dir: Path
    env: dict

    def run(self, args, timeout=30, **kw):
        return subprocess.run(args, env=kw.pop("env", self.env), capture_output=True,
                              text=True, timeout=timeout, **kw)

    def sbatch(self, script, *args, opts=(), cwd, env=None, timeout=30) -> str:
        """Submit slurm/<script> with sbatch; return the job id."""
        job_env = dict(self.env, **(env or {}))
        proc = self.run(["sbatch", "--parsable", "--time=5", *opts, str(SLURM_DIR / script),
                         *map(str, args)], cwd=cwd, env=job_env, timeout=timeout)
        assert proc.returncode == 0, f"sbatch failed: {proc.stderr}"
        return proc.stdout.strip().split(";")[0]

    def job_lines(self, job_id: str) -> list[dict]:
        """One dict per job record (an array job gives one per element)."""
        proc = self.run(["scontrol", "show", "job", "-o", job_id])
        assert proc.returncode == 0, f"scontrol show job {job_id}: {proc.stderr}"
        out = []
        for line in proc.stdout.splitlines():
            if line.strip():
                out.append(dict(re.findall(r"(\w+)=(\S*)", line)))
        return out

    def wait(self, job_id: str, timeout: float = 90) -> Job:
        """Poll scontrol every 0.5 s until the job (every array element) ends."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.job_lines(job_id)
            # Before an array is split, one record stands for its pending elements.
            done = records and all(r.get("JobState") in TERMINAL for r in records) and not any(
                r.get("ArrayTaskId", "").count("-") or "[" in r.get("ArrayTaskId", "")
                for r in records)
            if done:
                break
            if time.monotonic() > deadline:
                self.run(["scancel", job_id])
                states = [(r.get("JobId"), r.get("JobState"), r.get("Reason")) for r in records]
                pytest.fail(f"job {job_id} not finished after {timeout} s: {states}\n"
                            f"{self.log_tail()}", pytrace=False)
            time.sleep(POLL)
        main = next((r for r in records if r.get("JobId") == job_id), records[0])
        return Job(job_id, main["JobState"], main.get("ExitCode", ""), main, records)

    def log_tail(self, lines: int = 15) -> str:
        text = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / "log" / name
            if path.exists():
                text.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(text)


@pytest.fixture(scope="session")
def slurm():
    reason = _cannot_run()
    if reason:
        _skip_or_fail(reason)
    state = Path(tempfile.mkdtemp(prefix="mpimat-slurm-"))
    started = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(CLUSTER_SCRIPT), "up", str(state)],
                              capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "down", str(state)], timeout=120)
        pytest.fail(f"cluster bring-up timed out: {exc}", pytrace=False)
    if proc.returncode == 3:
        shutil.rmtree(state, ignore_errors=True)
        _skip_or_fail(proc.stderr.strip())
    if proc.returncode != 0:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "down", str(state)], timeout=120)
        pytest.fail(f"cluster bring-up failed (exit {proc.returncode}):\n{proc.stderr}",
                    pytrace=False)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "MPIMAT_", "PMI_",
                                "PMIX_", "OMPI_"))}
    env.update(SLURM_CONF=str(state / "slurm.conf"), MPIMAT_VENV=str(VENV),
               MPIEXEC_TIMEOUT="120")
    print(f"\nslurm test cluster up in {time.monotonic() - started:.1f} s ({state})")
    pids = {p.name: p.read_text().strip() for p in (state / "pids").iterdir()}
    yield Cluster(state, env)

    down = subprocess.run(["bash", str(CLUSTER_SCRIPT), "down", str(state)],
                          capture_output=True, text=True, timeout=120)
    alive = [f"{name} ({pid})" for name, pid in pids.items()
             if Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)]
    if down.returncode == 0 and not alive and not os.environ.get("MPIMAT_KEEP_SLURM_DIR"):
        shutil.rmtree(state, ignore_errors=True)
    assert down.returncode == 0, f"cluster teardown failed: {down.stderr}"
    assert not alive, f"daemons still running after teardown: {alive}"


def _proc_state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
