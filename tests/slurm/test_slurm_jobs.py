"""The slurm/ batch scripts, submitted with sbatch to a real one-node cluster.

Every job runs the python of this test session (MPIMAT_VENV) on the mpich
wheel, launched by srun --mpi=pmi2 unless a test says otherwise.
"""
from __future__ import annotations

import csv
import json
import re
import struct
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

SLURM_DIR = Path(__file__).resolve().parents[2] / "slurm"

pytestmark = pytest.mark.slurm


def output_of(cwd: Path, job_name: str, job_id: str) -> str:
    return (cwd / f"{job_name}-{job_id}.out").read_text()


def header_ntasks(output: str) -> int:
    """SLURM_NTASKS as the job script saw it (its first log line)."""
    match = re.search(r"SLURM_NTASKS=(\d+)", output)
    assert match, f"no SLURM_NTASKS in the job output:\n{output}"
    return int(match.group(1))


def write_inputs(tmp_path: Path, m: int, k: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    np.save(tmp_path / "A.npy", a)
    np.save(tmp_path / "B.npy", b)
    return a, b


def test_job_product_equals_numpy_on_all_tasks(slurm, tmp_path):
    a, b = write_inputs(tmp_path, 150, 97, 120, seed=1)
    job = slurm.sbatch("mpimat.sbatch", "--a", "A.npy", "--b", "B.npy", "--out", "C.npy",
                       "--report", "run.json", "--verify", "exact",
                       opts=["--ntasks=4"], cwd=tmp_path)
    result = slurm.wait(job)
    out = output_of(tmp_path, "mpimat", job)
    assert (result.state, result.exit_code) == ("COMPLETED", "0:0"), out
    np.testing.assert_allclose(np.load(tmp_path / "C.npy"), a @ b, rtol=1e-12, atol=1e-12)
    report = json.loads((tmp_path / "run.json").read_text())
    # A wrong --mpi plugin would give 4 singletons each reporting ranks=1.
    assert report["ranks"] == header_ntasks(out) == int(result.fields["NumTasks"]) == 4
    assert report["verification"]["passed"] is True
    assert report["shape"] == [150, 97, 120]
    assert "--mpi=pmi2" in out
    # One BLAS thread per rank by default.
    assert report["blas_threads"] == 1


def test_arguments_from_environment_and_tasks_per_node(slurm, tmp_path):
    job = slurm.sbatch("mpimat.sbatch", opts=["--nodes=1", "--ntasks-per-node=3"], cwd=tmp_path,
                       env={"MPIMAT_ARGS": "--size 96 --seed 5 --report env.json"})
    result = slurm.wait(job)
    out = output_of(tmp_path, "mpimat", job)
    assert result.state == "COMPLETED", out
    report = json.loads((tmp_path / "env.json").read_text())
    assert report["ranks"] == header_ntasks(out) == 3
    assert report["shape"] == [96, 96, 96] and report["seed"] == 5
    assert report["verification"]["passed"] is True


def test_bad_input_fails_the_job_with_mpimat_message(slurm, tmp_path):
    job = slurm.sbatch("mpimat.sbatch", "--a", "missing.npy", "--b", "missing.npy",
                       "--out", "C.npy", opts=["--ntasks=2"], cwd=tmp_path)
    result = slurm.wait(job)
    out = output_of(tmp_path, "mpimat", job)
    assert result.state == "FAILED", out
    assert result.exit_code == "2:0", out
    assert "mpimat: error:" in out and "missing.npy" in out, out
    assert not (tmp_path / "C.npy").exists()


def test_wrong_mpi_plugin_is_reported_not_silently_run(slurm, tmp_path):
    # srun --mpi=none starts 2 MPICH singletons; mpimat must notice and fail.
    job = slurm.sbatch("mpimat.sbatch", "--size", "64", "--report", "r.json",
                       opts=["--ntasks=2"], cwd=tmp_path, env={"MPIMAT_SRUN_MPI": "none"})
    result = slurm.wait(job)
    out = output_of(tmp_path, "mpimat", job)
    assert "--mpi=none" in out
    assert result.state == "FAILED", out
    assert "mpimat: error:" in out and "world of 1" in out, out


def test_mpirun_inside_the_allocation(slurm, tmp_path):
    a, b = write_inputs(tmp_path, 64, 80, 72, seed=2)
    job = slurm.sbatch("mpimat.sbatch", "--a", "A.npy", "--b", "B.npy", "--out", "C.npy",
                       "--report", "run.json", opts=["--ntasks=3"], cwd=tmp_path,
                       env={"MPIMAT_LAUNCHER": "mpirun"})
    result = slurm.wait(job)
    out = output_of(tmp_path, "mpimat", job)
    assert result.state == "COMPLETED", out
    assert "bin/mpirun -n 3" in out
    np.testing.assert_allclose(np.load(tmp_path / "C.npy"), a @ b, rtol=1e-12, atol=1e-12)
    assert json.loads((tmp_path / "run.json").read_text())["ranks"] == 3


def _submit_scaling(slurm, tmp_path, *args):
    proc = slurm.run([str(SLURM_DIR / "submit_scaling.sh"), "--time=5", *args], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ids = dict(kv.split("=", 1) for kv in proc.stdout.strip().splitlines()[-1].split())
    return ids["array"], ids["collect"], Path(ids["dir"])


def _slurm_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")


def _png_size(path: Path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_scaling_array_and_dependent_collect_job(slurm, tmp_path):
    array, collect, out_dir = _submit_scaling(slurm, tmp_path, "--ranks", "1,2,4",
                                              "--size", "192", "--dir", "sweep")
    assert out_dir == tmp_path / "sweep"
    arr = slurm.wait(array, timeout=150)
    col = slurm.wait(collect, timeout=60)
    elements = sorted(arr.elements, key=lambda r: int(r["ArrayTaskId"]))
    assert [r["ArrayTaskId"] for r in elements] == ["0", "1", "2"]
    assert [r["JobState"] for r in elements] == ["COMPLETED"] * 3
    collect_out = output_of(tmp_path, "mpimat-collect", collect)
    assert col.state == "COMPLETED", collect_out
    # afterok: the collect job started only after every element had ended.
    assert _slurm_time(col.fields["StartTime"]) >= max(_slurm_time(r["EndTime"]) for r in elements)

    reports = [json.loads(p.read_text()) for p in sorted(out_dir.glob("report-*.json"))]
    assert [r["ranks"] for r in reports] == [1, 2, 4]
    assert all(r["shape"] == [192, 192, 192] and r["verification"]["passed"] for r in reports)
    for element, report in zip(elements, reports):
        out = output_of(tmp_path, "mpimat-scaling", f"{array}_{element['ArrayTaskId']}")
        assert f"ranks={report['ranks']}" in out, out

    with open(out_dir / "scaling.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["ranks"]) for r in rows] == [1, 2, 4]
    for row, report in zip(rows, reports):
        assert float(row["matmul_s"]) == pytest.approx(report["matmul_seconds"])
        expected_eff = reports[0]["matmul_seconds"] / report["matmul_seconds"] / report["ranks"]
        assert float(row["efficiency"]) == pytest.approx(expected_eff)
    table = (out_dir / "scaling.md").read_text()
    assert len([line for line in table.splitlines() if re.match(r"\| [124] \|", line)]) == 3
    assert table.splitlines()[0] in collect_out
    width, height = _png_size(out_dir / "scaling.png")
    assert width >= 400 and height >= 200


def test_failed_sweep_cancels_the_collect_job(slurm, tmp_path):
    array, collect, out_dir = _submit_scaling(slurm, tmp_path, "--ranks", "1,2",
                                              "--", "--a", "missing.npy", "--b", "missing.npy")
    arr = slurm.wait(array, timeout=90)
    assert {r["JobState"] for r in arr.elements} == {"FAILED"}
    col = slurm.wait(collect, timeout=30)
    assert col.state == "CANCELLED"
    assert not (out_dir / "scaling.md").exists()


def test_cluster_script_refuses_a_second_bring_up(slurm):
    proc = slurm.run(["bash", str(SLURM_DIR.parent / "scripts" / "slurm_cluster.sh"), "up",
                      str(slurm.dir)])
    assert proc.returncode == 1 and "already running" in proc.stderr
    status = slurm.run(["bash", str(SLURM_DIR.parent / "scripts" / "slurm_cluster.sh"),
                        "status", str(slurm.dir)])
    assert status.stdout.count("running (pid") == 3, status.stdout
