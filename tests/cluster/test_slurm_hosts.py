"""Multi-node Slurm on the namespace cluster: one slurmd per host, jobs with
the real slurm/ scripts, ranks started by srun --mpi=pmi2 on both hosts."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SLURM_DIR

WHERE = Path(__file__).with_name("where.py")
pytestmark = [pytest.mark.cluster, pytest.mark.slurm]


def test_slurm_nodes_are_the_hosts(slurm_hosts):
    proc = slurm_hosts.run(["sinfo", "-h", "-N", "-o", "%N %T"])
    assert proc.stdout.split("\n")[:3] == ["h1 idle", "h2 idle", "h3 idle"], proc.stdout
    conf = (slurm_hosts.dir / "slurm.conf").read_text()
    for i in (1, 2, 3):
        assert f"NodeName=h{i} NodeAddr={slurm_hosts.cluster.ip(i)} " in conf


def test_srun_places_ranks_on_both_hosts(slurm_hosts, tmp_path):
    job = slurm_hosts.sbatch("-N", "2", "--ntasks-per-node=2", "--output=where-%j.out",
                             f"--wrap=srun --mpi=pmi2 {sys.executable} {WHERE}", cwd=tmp_path)
    (record,) = slurm_hosts.wait(job)
    out = (tmp_path / f"where-{job}.out").read_text()
    assert record["JobState"] == "COMPLETED", out
    rows = [line.split() for line in out.splitlines()]
    assert [row[1] for row in rows] == ["h1", "h1", "h2", "h2"], out
    assert all(row[2] == row[1] and row[3] == "tcp,self" for row in rows), out


def test_mpimat_job_on_two_nodes(slurm_hosts, tmp_path):
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((600, 500)), rng.standard_normal((500, 700))
    np.save(tmp_path / "A.npy", a)
    np.save(tmp_path / "B.npy", b)
    cluster = slurm_hosts.cluster
    before = cluster.counters()
    job = slurm_hosts.sbatch("-N", "2", "--ntasks-per-node=2", SLURM_DIR / "mpimat.sbatch",
                             "--a", "A.npy", "--b", "B.npy", "--out", "C.npy",
                             "--report", "run.json", cwd=tmp_path)
    (record,) = slurm_hosts.wait(job)
    after = cluster.counters()
    out = (tmp_path / f"mpimat-{job}.out").read_text()
    assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), out
    assert record["NodeList"] == "h[1-2]" and "--mpi=pmi2" in out
    np.testing.assert_allclose(np.load(tmp_path / "C.npy"), a @ b, rtol=1e-12, atol=1e-12)
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["ranks"] == 4 and report["verification"]["passed"]
    # srun's block distribution: ranks 2 and 3 on h2; what they received
    # beyond what they sent came in over h2's link.
    net_in = sum(p["bytes_received"] - p["bytes_sent"] for p in report["per_rank"][2:])
    assert net_in > 0
    assert after[2][1] - before[2][1] >= net_in


def test_failing_job_fails_with_mpimat_message(slurm_hosts, tmp_path):
    job = slurm_hosts.sbatch("-N", "2", "--ntasks-per-node=2", SLURM_DIR / "mpimat.sbatch",
                             "--a", "missing.npy", "--b", "missing.npy", "--out", "C.npy",
                             cwd=tmp_path)
    (record,) = slurm_hosts.wait(job)
    out = (tmp_path / f"mpimat-{job}.out").read_text()
    assert (record["JobState"], record["ExitCode"]) == ("FAILED", "2:0"), out
    assert "mpimat: error:" in out and "missing.npy" in out, out
    assert "Traceback" not in out
    assert not (tmp_path / "C.npy").exists()


def test_scaling_array_on_two_nodes(slurm_hosts, tmp_path):
    proc = slurm_hosts.run([SLURM_DIR / "submit_scaling.sh", "--time=5", "--ntasks-per-node=2",
                            "--ranks", "1,2,4", "--size", "160", "--dir", "sweep"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ids = dict(kv.split("=", 1) for kv in proc.stdout.strip().splitlines()[-1].split())
    elements = sorted(slurm_hosts.wait(ids["array"], timeout=150),
                      key=lambda r: int(r["ArrayTaskId"]))
    (collect,) = slurm_hosts.wait(ids["collect"], timeout=60)
    assert [r["JobState"] for r in elements] == ["COMPLETED"] * 3, slurm_hosts.log_tail()
    assert all(r["NodeList"] == "h[1-2]" for r in elements)
    assert collect["JobState"] == "COMPLETED"
    sweep = tmp_path / "sweep"
    reports = [json.loads(p.read_text()) for p in sorted(sweep.glob("report-*.json"))]
    assert [r["ranks"] for r in reports] == [1, 2, 4]
    assert all(r["verification"]["passed"] and r["shape"] == [160, 160, 160] for r in reports)
    with open(sweep / "scaling.csv") as f:
        assert [int(row["ranks"]) for row in csv.DictReader(f)] == [1, 2, 4]
    assert (sweep / "scaling.md").exists() and (sweep / "scaling.png").stat().st_size > 0
