"""End-to-end CLI tests: real `mpiexec -n N python -m mpimat` subprocesses."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from launch import MPIEXEC, ROOT, one_error_line, run_mpimat
from mpimat.generate import random_pair
from mpimat.partition import Layout, parse_grid

FAULT_JOB = ROOT / "tests" / "fault_job.py"


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((37, 23))
    B = rng.standard_normal((23, 29))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    return tmp_path, A, B


def test_default_job():
    proc = run_mpimat([], n=2, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "A 2048x2048, B 2048x2048, float64, 2 ranks, grid" in out
    assert "strategy tiles, A and B shared on the node (nothing distributed)" in out  # one node
    for phase in ("generate", "distribute", "compute", "gather", "write", "verify", "GFLOP/s"):
        assert phase in out
    assert "freivalds: PASSED" in out
    assert proc.stderr == ""


def test_files_in_and_out_with_report(tmp_path):
    rng = np.random.default_rng(2)
    A = np.asfortranarray(rng.standard_normal((41, 17))).astype(">f8")  # Fortran order, big-endian
    B = rng.standard_normal((17, 33)).astype("<f8")
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    proc = run_mpimat(["--a", "A.npy", "--b", "B.npy", "--out", "C.npy", "--report", "run.json",
                       "--verify", "exact", "--quiet"], n=3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    C = np.load(tmp_path / "C.npy", allow_pickle=False)
    np.testing.assert_allclose(C, A @ B, rtol=1e-12)
    assert C.dtype == (A @ B).dtype
    rep = json.loads((tmp_path / "run.json").read_text())
    assert rep["shape"] == [41, 17, 33] and rep["ranks"] == 3 and rep["exit_code"] == 0
    assert set(rep["phases"]) == {"load", "distribute", "compute", "gather", "write", "verify"}
    assert all(v >= 0 for v in rep["phases"].values())
    assert rep["verification"]["method"] == "exact" and rep["verification"]["passed"] is True
    assert len(rep["per_rank"]) == 3
    for r in rep["per_rank"]:
        assert r["max_rss_bytes"] > 0 and r["peak_traced_bytes"] > 0
        assert r["bytes_sent"] >= 0 and r["bytes_received"] >= 0
    # Non-root ranks receive exactly their rows of A and columns of B.
    layout = Layout(41, 17, 33, parse_grid(rep["grid"]))
    for rank, r in enumerate(rep["per_rank"][1:], start=1):
        tile = layout.tile(rank)
        want = ((tile.row1 - tile.row0) + (tile.col1 - tile.col0)) * 17 * A.itemsize
        assert r["bytes_received"] == want, (rank, r["bytes_received"], want)
    assert {"numpy", "mpi4py", "mpi", "mpimat"} <= set(rep["versions"])
    assert sorted(os.listdir(tmp_path)) == ["A.npy", "B.npy", "C.npy", "run.json"]


def test_dtype_casts_file_inputs(inputs):
    tmp, A, B = inputs
    np.save(tmp / "Ai.npy", (A * 10).astype(np.int16))
    proc = run_mpimat(["--a", "Ai.npy", "--b", "B.npy", "--dtype", "float32", "--out", "C.npy", "--quiet"],
                      n=2, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    C = np.load(tmp / "C.npy")
    want = (A * 10).astype(np.int16).astype(np.float32) @ B.astype(np.float32)
    assert C.dtype == np.float32
    np.testing.assert_allclose(C, want, rtol=1e-4, atol=1e-3)


def test_same_seed_same_matrices_whatever_the_ranks(tmp_path):
    # One rank generates alone; several on one node fill a shared window together.
    results = []
    for n in (1, 3, 4):
        out, rep = tmp_path / f"C{n}.npy", tmp_path / f"r{n}.json"
        proc = run_mpimat(["--shape", 300, 270, 280, "--dtype", "int64", "--seed", 5, "--out", out,
                           "--report", rep, "--quiet"], n=n)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(rep.read_text()).get("shared", False) is (n > 1)
        results.append(np.load(out))
    A, B = random_pair(300, 270, 280, "int64", 5)
    for C in results:
        np.testing.assert_array_equal(C, A @ B)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a private /dev/shm")
def test_a_small_dev_shm_keeps_inputs_on_rank_0(tmp_path):
    # A small /dev/shm (here 32 MiB in a private mount namespace: MPICH's own
    # segments need more than 16; Docker gives 64) cannot hold A and B
    # (2 x 1500^2 float64, 36 MB): rank 0 holds them and sends them, rather
    # than the window's first write dying of SIGBUS.
    rep = tmp_path / "r.json"
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "mpimat", "--size", "1500", "--report", str(rep)]
    proc = subprocess.run(["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=32m tmpfs /dev/shm && exec "$@"',
                           "sh", *cmd], capture_output=True, text=True, timeout=150, cwd=ROOT,
                          env=dict(os.environ, MPIEXEC_TIMEOUT="120"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(rep.read_text())
    assert report["shared"] is False and report["verification"]["passed"]
    assert report["per_rank"][1]["bytes_received"] > 1500 * 1500 * 8 / 2


def test_forced_grid_and_int_dtype_report(tmp_path):
    proc = run_mpimat(["--shape", 12, 7, 9, "--dtype", "int8", "--grid", "2x2", "--report",
                       tmp_path / "r.json", "--verify", "exact"], n=4)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["grid"] == "2x2" and rep["dtype"] == "int8"
    assert "grid 2x2" in proc.stdout


def write_bad_inputs(tmp):
    np.save(tmp / "ok.npy", np.ones((3, 3)))
    np.save(tmp / "cube.npy", np.ones((3, 3, 3)))
    np.save(tmp / "wide.npy", np.ones((4, 5)))
    (tmp / "garbage.npy").write_bytes(b"this is not a numpy file at all")
    full = (tmp / "ok.npy").read_bytes()
    (tmp / "trunc.npy").write_bytes(full[:-10])
    obj = np.empty((2, 2), dtype=object)
    with open(tmp / "obj.npy", "wb") as f:
        np.lib.format.write_array(f, obj, allow_pickle=True)
    (tmp / "adir").mkdir()


BAD_INPUTS = [
    (["--a", "missing.npy", "--b", "ok.npy"], "no such file"),
    (["--a", "adir", "--b", "ok.npy"], "is a directory"),
    (["--a", "garbage.npy", "--b", "ok.npy"], "not a valid .npy"),
    (["--a", "trunc.npy", "--b", "ok.npy"], "truncated"),
    (["--a", "obj.npy", "--b", "ok.npy"], "object (pickled) arrays are not supported"),
    (["--a", "cube.npy", "--b", "ok.npy"], "2-D"),
    (["--a", "ok.npy", "--b", "wide.npy"], "shape mismatch"),
    (["--size", 4, "--out", "nodir/C.npy"], "does not exist"),
    (["--size", 4, "--out", "adir"], "is a directory"),
    (["--bogus"], "unrecognized arguments"),
    (["--size", -3], "must not be negative"),
    (["--size", "x"], "expected a whole number"),
    (["--dtype", "object", "--size", 4], "object"),
    (["--dtype", "banana", "--size", 4], "unknown dtype"),
    (["--dtype", "U5", "--size", 4], "string"),
    (["--grid", "2x2", "--size", 4], "has 4 ranks but the job has 3"),
    (["--grid", "two", "--size", 4], "PRxPC"),
    (["--a", "ok.npy"], "--a and --b go together"),
    (["--verify", "maybe"], "invalid choice"),
    (["--strategy", "magic"], "unknown --strategy"),
    (["--shape", 2, 3], "expected 3 arguments"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_input_errors_exit_2_with_one_line(tmp_path, args, message):
    write_bad_inputs(tmp_path)
    (tmp_path / "C.npy").write_bytes(b"existing result")
    extra = [] if "--out" in args else ["--out", "C.npy"]
    started = time.monotonic()
    proc = run_mpimat([*args, *extra], n=3, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    line = one_error_line(proc)
    assert message in line
    assert time.monotonic() - started < 30
    assert (tmp_path / "C.npy").read_bytes() == b"existing result"
    assert not (tmp_path / "nodir").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".mpimat-")]


def test_unwritable_output_directory(tmp_path):
    if os.geteuid() == 0:
        target = "/sys/mpimat-C.npy"  # read-only for root too
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = str(locked / "C.npy")
    proc = run_mpimat(["--size", 4, "--out", target], n=2, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "cannot write in" in one_error_line(proc)


def test_verification_failure_exit_3_and_no_output(tmp_path):
    (tmp_path / "C.npy").write_bytes(b"existing result")
    proc = run_mpimat(["corrupt", "--size", 64, "--out", "C.npy", "--report", "r.json"], n=2, cwd=tmp_path,
                      script=FAULT_JOB)
    assert proc.returncode == 3, proc.stderr
    assert "mpimat: error: verification failed" in proc.stderr
    assert (tmp_path / "C.npy").read_bytes() == b"existing result"
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["verification"]["passed"] is False and rep["exit_code"] == 3
    proc = run_mpimat(["corrupt", "--size", 64, "--out", "new.npy", "--verify", "exact"], n=2, cwd=tmp_path,
                      script=FAULT_JOB)
    assert proc.returncode == 3
    assert not (tmp_path / "new.npy").exists()


def test_check_panels_passes_and_names_the_rank_of_a_wrong_panel(tmp_path):
    proc = run_mpimat(["--size", 300, "--check-panels", "--report", "r.json"], n=3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    checked = [r["panels_checked"] for r in rep["per_rank"]]
    assert all(count >= 1 for count in checked)
    assert f"panels     {sum(checked)} result panels checked" in proc.stdout
    assert rep["verification"]["passed"] and rep["exit_code"] == 0
    (tmp_path / "C.npy").write_bytes(b"existing result")
    proc = run_mpimat(["panel:2", "--size", 300, "--check-panels", "--out", "C.npy", "--report", "r.json"], n=3,
                      cwd=tmp_path, script=FAULT_JOB)
    assert proc.returncode == 3, proc.stderr
    line = one_error_line(proc)
    assert line.startswith("mpimat: error: verification failed: ") and "rank 2's panel C[" in line, line
    assert (tmp_path / "C.npy").read_bytes() == b"existing result"
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["verification"]["method"] == "panels" and not rep["verification"]["passed"]
    assert rep["exit_code"] == 3
    for strategy in ("dot", "summa", "auto"):
        proc = run_mpimat(["--size", 16, "--check-panels", "--strategy", strategy], n=2, cwd=tmp_path)
        assert proc.returncode == 2
        assert "--check-panels checks the tiles strategy's panels" in one_error_line(proc)


def test_crash_on_one_rank_aborts_the_job_instead_of_hanging(tmp_path):
    started = time.monotonic()
    proc = run_mpimat(["crash:1", "--size", 256, "--out", "C.npy"], n=3, cwd=tmp_path, timeout=60,
                      script=FAULT_JOB)
    assert proc.returncode != 0
    assert "injected fault" in proc.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "C.npy").exists()


def test_foreign_launcher_is_detected():
    # What Open MPI's mpirun exports to each process it starts; a process
    # that sees it but an MPI world of 1 is one of N singletons.
    proc = run_mpimat(["--size", 8], n=None, timeout=60,
                      env={"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0"})
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "started 4 processes but MPI sees a world of 1" in line
    assert str(MPIEXEC) in line


def test_singleton_without_launcher_runs():
    proc = run_mpimat(["--size", 16, "--quiet"], n=None, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_help_and_quiet():
    proc = run_mpimat(["--help"], n=2)
    assert proc.returncode == 0
    assert proc.stdout.count("usage: mpimat") == 1
    proc = run_mpimat(["--size", 32, "--quiet"], n=2)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


def test_progress_line_on_request():
    proc = run_mpimat(["--size", 2560, "--progress", "--verify", "exact"], n=2, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # text mode turns the carriage returns into newlines
    assert "mpimat: compute" in proc.stderr or "mpimat: verify" in proc.stderr


def test_more_ranks_than_dot_products(tmp_path):
    proc = run_mpimat(["--shape", 1, 3, 2, "--out", "C.npy", "--seed", 3, "--verify", "exact"], n=4, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "C.npy").shape == (1, 2)


def test_zero_sized(tmp_path):
    proc = run_mpimat(["--shape", 0, 5, 3, "--out", "C.npy"], n=3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "C.npy").shape == (0, 3)


def test_vectors_in_files_follow_numpys_rules(tmp_path):
    rng = np.random.default_rng(4)
    A, x = rng.standard_normal((31, 17)), rng.standard_normal(17)
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "x.npy", x)
    proc = run_mpimat(["--a", "A.npy", "--b", "x.npy", "--out", "y.npy", "--report", "r.json", "--quiet"],
                      n=3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (31,)
    np.testing.assert_allclose(y, A @ x, rtol=1e-12)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["shape"] == [31, 17, 1] and rep["verification"]["passed"]
    proc = run_mpimat(["--a", "x.npy", "--b", "x.npy", "--out", "s.npy", "--quiet"], n=2, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    s = np.load(tmp_path / "s.npy")
    assert s.shape == () and np.isclose(s, x @ x)
