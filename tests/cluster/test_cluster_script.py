"""scripts/cluster.sh itself: links, hostnames, reachability, idempotence,
clean-up after a crash, and its refusal without root."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import CLUSTER_SH, RATE, cannot_run, ns_pids, read_state, skip_or_fail

pytestmark = pytest.mark.cluster


def test_links_capped_in_both_directions(cluster):
    for i in range(1, cluster.n + 1):
        host_end = subprocess.run(["tc", "qdisc", "show", "dev", cluster.veth(i)],
                                  capture_output=True, text=True, timeout=10).stdout
        ns_end = subprocess.run(["tc", "-n", cluster.ns(i), "qdisc", "show", "dev", "eth0"],
                                capture_output=True, text=True, timeout=10).stdout
        for out in (host_end, ns_end):
            assert "tbf" in out and "rate 1Gbit" in out, out


def test_exec_runs_on_the_host_with_its_name_and_address(cluster):
    proc = cluster.script("exec", "h2", "sh", "-c", "hostname; ip -o -4 addr show dev eth0")
    assert proc.returncode == 0, proc.stderr
    name, addr = proc.stdout.splitlines()
    assert name == "h2" and f"inet {cluster.ip(2)}/24" in addr
    assert cluster.script("ip", "h3").stdout.strip() == cluster.ip(3)


def test_hosts_reach_each_other_over_the_bridge(cluster):
    # A refused connection proves the path (nothing listens on port 9).
    probe = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], 9), timeout=2)\n"
             "except ConnectionRefusedError:\n print('refused')\n")
    proc = cluster.script("exec", "h1", "python3", "-c", probe, cluster.ip(3))
    assert proc.stdout.strip() == "refused", proc.stdout + proc.stderr


def test_unknown_host_is_a_clear_error(cluster):
    proc = cluster.script("exec", "h9", "true")
    assert proc.returncode != 0 and "unknown host 'h9'" in proc.stderr


def test_up_again_is_idempotent_and_status_lists_hosts(cluster):
    again = cluster.script("up", "3", "--bandwidth", RATE, "--dir", cluster.dir)
    assert again.returncode == 0 and "already up" in again.stderr, again.stderr
    assert f"MPIMAT_CLUSTER_DIR={cluster.dir}" in again.stdout
    other = cluster.script("up", "2", "--dir", cluster.dir)
    assert other.returncode == 1 and "run down first" in other.stderr
    status = cluster.script("status")
    assert status.returncode == 0 and ": up, 3 hosts" in status.stdout
    assert [line.split()[0] for line in status.stdout.splitlines()[1:]] == ["h1", "h2", "h3"]


def test_usage_and_bad_arguments():
    existing = set(Path(tempfile.gettempdir()).glob("mpimat-cluster.*"))
    for args, code in (([], 2), (["up"], 2), (["up", "2", "--bandwidth", "fast"], 2),
                       (["frobnicate"], 2)):
        proc = subprocess.run(["bash", str(CLUSTER_SH), *args], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == code, (args, proc.stderr)
        if code == 2 and not args:
            assert "cluster.sh up N" in proc.stdout + proc.stderr
    # Refused before anything was made: no new state directory either.
    assert set(Path(tempfile.gettempdir()).glob("mpimat-cluster.*")) == existing


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and setpriv to run the script as another user")
def test_without_root_up_says_it_cannot_run_here(tmp_path):
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "bash", str(CLUSTER_SH), "up", "2", "--dir", "/nonexistent/x"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3 and "cannot run here: needs root" in proc.stderr, proc.stderr


def test_down_after_a_crash_removes_everything_and_kills_leftovers():
    reason = cannot_run()
    if reason:
        skip_or_fail(reason)
    state_dir = Path(tempfile.mkdtemp(prefix="mpimat-cluster."))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPIMAT_")}
    env["MPIMAT_CLUSTER_DIR"] = str(state_dir)

    def script(*args):
        return subprocess.run(["bash", str(CLUSTER_SH), *args], env=env, capture_output=True,
                              text=True, timeout=60)

    sleeper = None
    try:
        assert script("up", "2", "--bandwidth", "none").returncode == 0
        state = read_state(state_dir)
        sleeper = subprocess.Popen(["bash", str(CLUSTER_SH), "exec", "h1", "sleep", "300"],
                                   env=env)
        deadline = time.monotonic() + 10
        while not ns_pids(state["NS_1"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ns_pids(state["NS_1"])
        # A crash: the state file is gone, only the record of what was made is left.
        (state_dir / "state").unlink()
        proc = script("down")
        assert proc.returncode == 0, proc.stderr
        assert sleeper.wait(timeout=10) != 0
        for name in (state["NS_1"], state["NS_2"]):
            assert not Path("/var/run/netns", name).exists()
        for name in (state["BRIDGE"], state["VETH_1"], state["VETH_2"]):
            assert not Path("/sys/class/net", name).exists()
        again = script("down")
        assert again.returncode == 0, again.stderr
    finally:
        if sleeper and sleeper.poll() is None:
            sleeper.kill()
        script("down")
        shutil.rmtree(state_dir, ignore_errors=True)
