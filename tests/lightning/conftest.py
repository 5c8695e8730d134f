"""Helpers for the multi-node tests: free ports, tagged processes, cleanup.

Every process a test starts carries MPIMAT_TEST_TAG=<unique> in its
environment (mpiexec hands its environment to every rank), so a test can
list exactly the processes it left behind, even with other MPI jobs running
on the machine.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
MPIEXEC = Path(sys.executable).with_name("mpiexec")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tagged_processes(tag: str):
    """(pid, command line) of the processes whose environment holds tag."""
    needle = f"MPIMAT_TEST_TAG={tag}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in env and cmd:  # zombies have an empty command line
            found.append((int(name), cmd))
    return found


def wait_no_leftovers(tag: str, timeout: float = 15.0):
    """The tagged processes still alive after timeout (should be none)."""
    deadline = time.monotonic() + timeout
    while True:
        left = tagged_processes(tag)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def kill_tagged(tag: str) -> None:
    for pid, _ in tagged_processes(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def tag():
    """A unique tag; whatever still carries it at teardown is killed."""
    value = uuid.uuid4().hex
    yield value
    kill_tagged(value)


@pytest.fixture
def env(tag):
    e = dict(os.environ)
    e["MPIMAT_TEST_TAG"] = tag
    e["MPIEXEC_TIMEOUT"] = "90"
    e["PYTHONUNBUFFERED"] = "1"
    e.pop("PYTEST_CURRENT_TEST", None)
    return e


@pytest.fixture
def matrices(tmp_path):
    rng = np.random.default_rng(20240605)
    a = rng.standard_normal((150, 90))
    b = rng.standard_normal((90, 70))
    np.save(tmp_path / "A.npy", a)
    np.save(tmp_path / "B.npy", b)
    return a, b


class Node:
    """One `python -m mpimat.lightning` process, in a session of its own."""

    def __init__(self, rank, num_nodes, port, args, env, cwd, address="127.0.0.1"):
        node_env = dict(env, MASTER_ADDR=address, MASTER_PORT=str(port),
                        NODE_RANK=str(rank), NUM_NODES=str(num_nodes))
        self.rank = rank
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "mpimat.lightning", *args], cwd=cwd, env=node_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.out = self.err = None

    def finish(self, timeout=120):
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.out, self.err = self.proc.communicate()
            raise AssertionError(f"node {self.rank} did not finish in {timeout} s:\n{self.err}")
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.communicate()
