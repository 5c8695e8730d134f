"""The rendezvous on localhost, without Lightning: N shells of
`python -m mpimat.lightning`, one per "machine", joined into one MPI world.

Real mpiexec (MPICH Hydra, manual launcher), real ranks of `python -m mpimat`.
"""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import PYTHON, Node, free_port, tagged_processes, wait_no_leftovers


def start_nodes(num_nodes, job_args, env, cwd, head_opts=(), member_opts=(), ranks=None):
    port = free_port()
    ranks = range(num_nodes) if ranks is None else ranks
    nodes = []
    for rank in ranks:  # members first: they must wait for the head
        if rank:
            nodes.append(Node(rank, num_nodes, port, ["-P", "2", *member_opts], env, cwd))
    if 0 in ranks:
        nodes.insert(0, Node(0, num_nodes, port, ["-P", "2", *head_opts, "--", *job_args],
                             env, cwd))
    return nodes


@pytest.mark.parametrize("num_nodes", [2, 3])
def test_nodes_multiply(num_nodes, matrices, env, tag, tmp_path):
    a, b = matrices
    nodes = start_nodes(num_nodes, ["--a", "A.npy", "--b", "B.npy", "--out", "C.npy",
                                    "--report", "run.json"], env, tmp_path)
    try:
        codes = [n.finish(120) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0] * num_nodes, [n.err for n in nodes]
    np.testing.assert_allclose(np.load(tmp_path / "C.npy"), a @ b, rtol=1e-12, atol=1e-12)
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["ranks"] == 2 * num_nodes
    assert report["exit_code"] == 0
    assert "-hosts mpimat-node0:2,mpimat-node1:2" in nodes[0].err
    for n in nodes[1:]:
        assert f"node {n.rank}: joined node 0" in n.err
    assert wait_no_leftovers(tag) == []


def test_failing_rank_fails_the_job(matrices, env, tag, tmp_path):
    # B's rows do not match A's columns: an input error, exit status 2.
    np.save(tmp_path / "Bbad.npy", np.ones((91, 70)))
    nodes = start_nodes(2, ["--a", "A.npy", "--b", "Bbad.npy", "--out", "C.npy"], env, tmp_path)
    try:
        codes = [n.finish(120) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert codes == [2, 2], [n.err for n in nodes]
    assert "mpimat: error:" in nodes[0].err
    assert "node 1: the job failed on node 0 with status 2" in nodes[1].err
    assert not (tmp_path / "C.npy").exists()
    assert wait_no_leftovers(tag) == []


def test_member_never_comes(matrices, env, tag, tmp_path):
    # Three nodes announced, node 2 never starts.
    t0 = time.monotonic()
    nodes = start_nodes(3, ["--a", "A.npy", "--b", "B.npy", "--out", "C.npy"], env, tmp_path,
                        head_opts=["--join-timeout", "4"], ranks=[0, 1])
    try:
        codes = [n.finish(60) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert time.monotonic() - t0 < 45
    assert codes[0] == 1, nodes[0].err
    assert "error: node(s) 2 of 3 never joined within 4 s" in nodes[0].err
    assert codes[1] != 0, nodes[1].err
    assert not (tmp_path / "C.npy").exists()
    assert wait_no_leftovers(tag) == []


def test_head_never_comes(env, tag, tmp_path):
    node = Node(1, 2, free_port(), ["--join-timeout", "2"], env, tmp_path)
    try:
        code = node.finish(30)
    finally:
        node.kill()
    assert code == 1
    assert "node 1: got no launch command from node 0" in node.err
    assert "within 2 s" in node.err
    assert wait_no_leftovers(tag) == []


def test_killed_head_leaves_nothing_running(env, tag, tmp_path):
    # A long job; node 0 dies by SIGKILL while the ranks compute.  Its
    # reaper must end mpiexec, proxy 0 and the ranks; node 1 then fails.
    nodes = start_nodes(2, ["--size", "5000", "--verify", "none"], env, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len([c for _, c in tagged_processes(tag)
                   if c.split()[:3] == [PYTHON, "-m", "mpimat"]]) < 4:
            assert time.monotonic() < deadline, "the 4 ranks never started"
            assert nodes[0].proc.poll() is None
            time.sleep(0.2)
        os.kill(nodes[0].proc.pid, signal.SIGKILL)
        assert nodes[1].finish(60) != 0
        nodes[0].finish(10)
    finally:
        for n in nodes:
            n.kill()
    assert nodes[0].proc.returncode == -signal.SIGKILL
    assert wait_no_leftovers(tag, timeout=20) == []


def test_settings_missing_is_a_usage_error(env, tmp_path):
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "NUM_NODES", "WORLD_SIZE"):
        env.pop(name, None)
    proc = subprocess.run([PYTHON, "-m", "mpimat.lightning", "--", "--size", "8"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "not set: --main-address/MASTER_ADDR" in proc.stderr


def test_import_mpimat_never_imports_lightning(env):
    code = ("import sys, mpimat, mpimat.lightning, mpimat.lightning.rendezvous; "
            "print(sorted(m for m in sys.modules if m.startswith('lightning')))")
    proc = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_busy_main_port_is_a_clear_error(env, tag, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        node = Node(0, 2, port, ["--", "--size", "8"], env, tmp_path)
        try:
            code = node.finish(30)
        finally:
            node.kill()
    assert code == 1
    assert f"node 0 cannot listen on 0.0.0.0:{port}" in node.err
    assert wait_no_leftovers(tag) == []
