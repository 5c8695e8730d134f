"""`python -m mpimat.lightning` across hosts of the namespace cluster
(scripts/cluster.sh): one process per host, each in that host's network
namespace with its hostname, MASTER_ADDR = h1's address on the bridge, as
Lightning's multi-machine jobs start it. Root only: without root the tests
skip (in CI, CI set, they fail instead).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PYTHON, tagged_processes

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
PORT = 29500  # a fresh namespace: nothing else listens there
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")

pytestmark = pytest.mark.lightning


def _cannot_run():
    if sys.platform != "linux":
        return "the namespace cluster needs Linux"
    if os.geteuid() != 0:
        return "needs root: network namespaces and veth links need CAP_NET_ADMIN"
    for tool in ("ip", "tc", "unshare"):
        if not shutil.which(tool):
            return f"'{tool}' not found"
    return None


def _state(directory: Path) -> dict:
    return dict(line.split("=", 1) for line in (directory / "state").read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def _ns_pids(ns: str):
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                         timeout=10).stdout
    return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def hosts():
    reason = _cannot_run()
    if reason:
        if IN_CI:
            pytest.fail(f"cluster tests must run in CI but cannot: {reason}", pytrace=False)
        pytest.skip(reason)
    state_dir = Path(tempfile.mkdtemp(prefix="mpimat-cluster."))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPIMAT_")}
    env["MPIMAT_CLUSTER_DIR"] = str(state_dir)

    def down():
        return subprocess.run(["bash", str(CLUSTER_SH), "down", "--dir", str(state_dir)],
                              env=env, capture_output=True, text=True, timeout=120)

    try:
        up = subprocess.run(["bash", str(CLUSTER_SH), "up", "3", "--bandwidth", "1gbit",
                             "--dir", str(state_dir)],
                            env=env, capture_output=True, text=True, timeout=60)
        if up.returncode != 0:
            pytest.fail(f"cluster bring-up failed ({up.returncode}): {up.stderr}", pytrace=False)
        yield state_dir, _state(state_dir), env
    finally:
        result = down()
        shutil.rmtree(state_dir, ignore_errors=True)
        assert result.returncode == 0, result.stderr


class HostNode:
    """`python -m mpimat.lightning` on host hI (node rank I-1)."""

    def __init__(self, host, node_rank, num_nodes, master, args, env, cwd):
        node_env = dict(env, MASTER_ADDR=master, MASTER_PORT=str(PORT),
                        NODE_RANK=str(node_rank), NUM_NODES=str(num_nodes))
        self.rank = node_rank
        self.proc = subprocess.Popen(
            ["bash", str(CLUSTER_SH), "exec", host, PYTHON, "-m", "mpimat.lightning", *args],
            cwd=cwd, env=node_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        self.err = ""

    def finish(self, timeout):
        try:
            _, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"node {self.rank} did not finish in {timeout} s:\n{self.err}")
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        _, err = self.proc.communicate()
        self.err = self.err or err


def _no_processes_left(state, count, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        left = {i: _ns_pids(state[f"NS_{i}"]) for i in range(1, count + 1)}
        left = {i: p for i, p in left.items() if p}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _counters(state, i):
    stats = Path("/sys/class/net", state[f"VETH_{i}"], "statistics")
    return int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text())


def test_entry_point_on_two_hosts(hosts, env, tag, tmp_path):
    state_dir, state, cluster_env = hosts
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 250))
    np.save(tmp_path / "A.npy", a)
    np.save(tmp_path / "B.npy", b)
    node_env = dict(env, **cluster_env, UCX_TLS="tcp,self")
    before = _counters(state, 2)
    nodes = [HostNode("h2", 1, 2, state["IP_1"], ["-P", "2"], node_env, tmp_path),
             HostNode("h1", 0, 2, state["IP_1"],
                      ["-P", "2", "--join-timeout", "60", "--", "--a", "A.npy", "--b", "B.npy",
                       "--out", "C.npy", "--report", "run.json"], node_env, tmp_path)]
    try:
        codes = [n.finish(120) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    after = _counters(state, 2)
    assert codes == [0, 0], [n.err for n in nodes]
    np.testing.assert_allclose(np.load(tmp_path / "C.npy"), a @ b, rtol=1e-12, atol=1e-12)
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["ranks"] == 4
    assert f"-localhost {state['IP_1']}" in nodes[1].err
    assert "node 1: joined node 0" in nodes[0].err
    # Ranks 2 and 3 ran on h2: what they received beyond what they sent came
    # in over h2's link.
    net_in = sum(p["bytes_received"] - p["bytes_sent"] for p in report["per_rank"][2:])
    assert net_in > 0 and after[1] - before[1] >= net_in
    assert _no_processes_left(state, 3) == {}
    assert tagged_processes(tag) == []


def test_host_that_never_joins_times_out_cleanly(hosts, env, tag, tmp_path):
    state_dir, state, cluster_env = hosts
    node_env = dict(env, **cluster_env, UCX_TLS="tcp,self")
    t0 = time.monotonic()
    # Three nodes announced; h3 never starts its node.
    nodes = [HostNode("h2", 1, 3, state["IP_1"], ["-P", "1"], node_env, tmp_path),
             HostNode("h1", 0, 3, state["IP_1"],
                      ["-P", "1", "--join-timeout", "4", "--", "--size", "64", "--out", "C.npy"],
                      node_env, tmp_path)]
    try:
        codes = [n.finish(60) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert time.monotonic() - t0 < 45
    head, member = nodes[1], nodes[0]
    assert codes[1] == 1, head.err
    assert "error: node(s) 2 of 3 never joined within 4 s" in head.err
    assert codes[0] != 0, member.err
    assert not (tmp_path / "C.npy").exists()
    assert _no_processes_left(state, 3) == {}
    assert tagged_processes(tag) == []
