"""`mpimat calibrate` across hosts of the namespace cluster measures the
network between hosts, not shared memory, and the link within a host apart.

Its own two hosts with links capped at 100 Mbit/s (12.5 MB/s; TCP through
such a link measures ~12 MB/s here, docs/cluster.md), launched by Hydra's
rsh launcher through scripts/cluster/rsh as users run it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MPIEXEC, RSH, Cluster, namespace_cluster

pytestmark = pytest.mark.cluster
RATE, CAP = "100mbit", 12.5e6  # bytes per second


@pytest.fixture(scope="module")
def slow_cluster():
    with namespace_cluster(2, RATE, "mpimat-cluster-cal.") as c:
        yield c


def calibrate(cluster: Cluster, tmp_path: Path, ppn: int) -> tuple[dict, str]:
    path = tmp_path / f"cal-{ppn}.json"
    proc = cluster.mpiexec(2, ppn, [sys.executable, "-m", "mpimat", "calibrate", "--quick", "--save", path],
                           timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(path.read_text()), proc.stdout


def test_two_hosts_one_rank_each_measure_the_network(slow_cluster, tmp_path):
    doc, out = calibrate(slow_cluster, tmp_path, 1)
    mach = doc["machine"]
    # The 100 Mbit/s cap, not shared memory (GB/s): within a factor 1.5 of 12.5 MB/s.
    assert CAP / 1.5 < mach["bandwidth"] < CAP * 1.5, mach["bandwidth"]
    assert mach["latency"] > 0
    assert doc["layout"]["nodes"] == 2 and doc["layout"]["pairs"] == {"inter": [0, 1]}
    # No two ranks share a host: nothing measured within one, and said so.
    assert mach["latency_intra"] is None and mach["bandwidth_intra"] is None
    assert mach["ranks_per_node"] == 1
    assert "between nodes" in out and "the link within a node is not measured" in out


def test_two_hosts_two_ranks_each_measure_both_links(slow_cluster, tmp_path):
    doc, out = calibrate(slow_cluster, tmp_path, 2)
    mach = doc["machine"]
    assert CAP / 1.5 < mach["bandwidth"] < CAP * 1.5, mach["bandwidth"]
    # Ranks 0 and 1 share h1 (MPICH's shared memory): far faster than the network.
    assert mach["bandwidth_intra"] > 20 * mach["bandwidth"]
    # (Latencies are not compared: on a loaded 2-core machine four busy-polling
    # ranks make the intra-host round trip wait for a core as often as not.)
    assert mach["latency_intra"] > 0
    assert mach["ranks_per_node"] == 2
    assert doc["layout"] == {"nodes": 2, "ranks": 4, "ranks_per_node": [2, 2],
                             "pairs": {"intra": [0, 1], "inter": [0, 2]}}
    assert "within a node" in out and "ranks_per_node               2" in out
    # plan reads the file as two levels.
    proc = subprocess.run([sys.executable, "-m", "mpimat", "plan", "--size", "1024", "--ranks", "4",
                           "--calibration", str(tmp_path / "cal-2.json")],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in slow_cluster.env.items() if not k.startswith("PMI_")})
    assert proc.returncode == 0, proc.stderr
    assert "2 ranks per node (2 nodes); between nodes" in proc.stdout


def test_uneven_hosts_measure_the_pair_on_the_other_host(slow_cluster, tmp_path):
    # h1 runs rank 0 alone, h2 ranks 1 and 2: the link within a host is
    # measured on h2 (ranks 1 and 2), and the layout is not in blocks.
    path = tmp_path / "cal-uneven.json"
    cmd = [str(MPIEXEC), "-launcher", "rsh", "-launcher-exec", str(RSH), "-localhost", slow_cluster.bridge_ip,
           "-hosts", "h1:1,h2:2", "-n", "3", sys.executable, "-m", "mpimat", "calibrate", "--quick",
           "--save", str(path)]
    proc = subprocess.run(cmd, env=dict(slow_cluster.env, MPIEXEC_TIMEOUT="90"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(path.read_text())
    mach = doc["machine"]
    assert doc["layout"]["ranks_per_node"] == [1, 2]
    assert doc["layout"]["pairs"] == {"intra": [1, 2], "inter": [0, 1]}
    assert CAP / 1.5 < mach["bandwidth"] < CAP * 1.5, mach["bandwidth"]
    assert mach["bandwidth_intra"] > 20 * mach["bandwidth"]
    assert mach["ranks_per_node"] is None
    assert "not placed in blocks" in proc.stdout
