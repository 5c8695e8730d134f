"""mpimat across hosts of the namespace cluster, launched by Hydra's rsh
launcher through scripts/cluster/rsh (the command docs/cluster.md gives)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import cmdline, ns_pids, remove_orphans, shm_files

WHERE = Path(__file__).with_name("where.py")
pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("hosts", [2, 3])
def test_ranks_run_on_distinct_hosts_over_tcp(cluster, hosts):
    proc = cluster.mpiexec(hosts, 2, [sys.executable, WHERE], timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    # -ppn 2 fills h1 first: rank r runs on h(r // 2 + 1), as MPI and the kernel both say.
    expected = [[str(r), f"h{r // 2 + 1}", f"h{r // 2 + 1}", "tcp,self"] for r in range(2 * hosts)]
    assert rows == expected


def _write_inputs(tmp_path: Path, m: int, k: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    np.save(tmp_path / "A.npy", a)
    np.save(tmp_path / "B.npy", b)
    return a, b


@pytest.mark.parametrize("hosts", [2, 3])
@pytest.mark.parametrize("strategy,shape", [("tiles", (512, 512, 512)), ("dot", (32, 40, 36))])
def test_product_across_hosts_crosses_the_links(cluster, tmp_path, hosts, strategy, shape):
    ppn = 2
    a, b = _write_inputs(tmp_path, *shape, seed=hosts)
    before = cluster.counters()
    proc = cluster.mpiexec(hosts, ppn, [sys.executable, "-m", "mpimat", "--a", "A.npy", "--b",
                                        "B.npy", "--out", "C.npy", "--strategy", strategy,
                                        "--report", "run.json", "--quiet"],
                           timeout=90, cwd=tmp_path)
    after = cluster.counters()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "C.npy"), a @ b, rtol=1e-12, atol=1e-12)
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["ranks"] == hosts * ppn and report["strategy"] == strategy
    # -ppn fills h1 first: the job's own ranks ran on distinct hosts.
    assert [r["host"] for r in report["per_rank"]] == [f"h{r // ppn + 1}" for r in range(hosts * ppn)]

    # Flow conservation per host: whatever its ranks received beyond what they
    # sent (or sent beyond what they received) came in (went out) over its
    # link; the link also carries headers and Hydra's control traffic, so its
    # counters can only be larger. Through shared memory they would stay ~0.
    per_rank = report["per_rank"]
    for i in range(1, hosts + 1):
        ranks = range((i - 1) * ppn, i * ppn)
        sent = sum(per_rank[r]["bytes_sent"] for r in ranks)
        received = sum(per_rank[r]["bytes_received"] for r in ranks)
        out_bytes = after[i][0] - before[i][0]
        in_bytes = after[i][1] - before[i][1]
        assert sent + received > 0
        assert in_bytes >= received - sent, (i, in_bytes, received, sent)
        assert out_bytes >= sent - received, (i, out_bytes, sent, received)
    # Rank 0 (on h1) reads A and B: what the other hosts work on left h1.
    remote_received = sum(p["bytes_received"] for p in per_rank[ppn:])
    remote_sent = sum(p["bytes_sent"] for p in per_rank[ppn:])
    assert remote_received > remote_sent or strategy == "dot"
    total_in = sum(after[i][1] - before[i][1] for i in range(2, hosts + 1))
    assert total_in >= remote_received - remote_sent
    # Hosts not in the job saw (almost) nothing: no stray traffic.
    for i in range(hosts + 1, cluster.n + 1):
        assert after[i][1] - before[i][1] < 64 * 1024


def test_rank_killed_on_host_2_ends_the_job_everywhere(cluster, tmp_path):
    # Big enough to still be running when the rank dies (seconds at 1 Gbit/s).
    cmd = cluster.mpiexec_cmd(2, 2, [sys.executable, "-m", "mpimat", "--size", "4000",
                                     "--verify", "none", "--quiet"])
    env = dict(cluster.env, MPIEXEC_TIMEOUT="60")
    job = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    segments = set()
    try:
        victim = None
        deadline = time.monotonic() + 30
        while victim is None and time.monotonic() < deadline and job.poll() is None:
            ranks = [p for p in ns_pids(cluster.ns(2)) if "-m mpimat" in cmdline(p)]
            victim = ranks[0] if len(ranks) == 2 else None
            time.sleep(0.1)
        assert victim is not None, "no mpimat rank appeared on h2"
        time.sleep(1.0)
        assert job.poll() is None, "the job ended before the rank could be killed"
        segments = shm_files(p for pids in cluster.all_pids().values() for p in pids)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        rc = job.wait(timeout=30)
        ended = time.monotonic() - killed
        left = {}
        while time.monotonic() - killed < 10:
            left = {i: p for i, p in cluster.all_pids().items() if p}
            if not left:
                break
            time.sleep(0.1)
        cleared = time.monotonic() - killed
    finally:
        if job.poll() is None:
            job.kill()
        output = job.communicate(timeout=30)[0]
        remove_orphans(segments)
    assert rc != 0, output
    assert ended < 10, f"mpiexec took {ended:.1f} s to end after the kill"
    assert not left, {i: [cmdline(p) for p in pids] for i, pids in left.items()}
    assert cleared < 10
    assert "h2" in output  # Hydra names the host of the dead rank
