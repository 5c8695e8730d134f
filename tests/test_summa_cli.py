"""`python -m mpimat --strategy summa`: matrices that never live on one rank, end to end through mpiexec."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from launch import MPIEXEC, one_error_line, run_mpimat
from test_robust import alive, job_ranks, kill_tree, leftovers, start_job, wait_for, wait_for_phase


def test_files_in_and_out(tmp_path):
    rng = np.random.default_rng(5)
    A = np.asfortranarray(rng.standard_normal((53, 31))).astype(">f8")  # Fortran order, big-endian
    B = rng.integers(-50, 50, (31, 47)).astype(np.int32)                 # mixed dtypes: numpy's promotion
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    proc = run_mpimat(["--strategy", "summa", "--a", "A.npy", "--b", "B.npy", "--out", "C.npy",
                       "--report", "r.json", "--quiet"], n=4, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    C = np.load(tmp_path / "C.npy")
    want = A @ B
    assert C.dtype == want.dtype and C.shape == want.shape
    np.testing.assert_allclose(C, want, rtol=1e-12)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["strategy"] == "summa" and rep["ranks"] == 4 and rep["verification"]["passed"]
    assert rep["phases"]["gather"] == 0 and rep["phases"]["load"] > 0
    # Each rank read only its blocks: nobody received all of A and B.
    assert all(0 < r["bytes_received"] < A.nbytes + B.nbytes for r in rep["per_rank"])
    assert sorted(os.listdir(tmp_path)) == ["A.npy", "B.npy", "C.npy", "r.json"]


def test_random_inputs_are_the_tiles_ones(tmp_path):
    for strategy, ranks in (("summa", 3), ("tiles", 2)):
        proc = run_mpimat(["--strategy", strategy, "--shape", 70, 40, 90, "--seed", 9, "--out", f"{strategy}.npy",
                           "--quiet"], n=ranks, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "summa.npy"), np.load(tmp_path / "tiles.npy"), rtol=1e-12)
    for dtype in ("int16", "bool"):  # exact: the same matrices, the same product
        for strategy, ranks in (("summa", 4), ("tiles", 2)):
            proc = run_mpimat(["--strategy", strategy, "--shape", 33, 20, 17, "--dtype", dtype, "--seed", 2,
                               "--out", f"{strategy}.npy", "--quiet"], n=ranks, cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr
        assert np.array_equal(np.load(tmp_path / "summa.npy"), np.load(tmp_path / "tiles.npy"))


@pytest.mark.parametrize("args, message", [
    (["--a", "missing.npy", "--b", "ok.npy"], "no such file"),
    (["--a", "garbage.npy", "--b", "ok.npy"], "not a valid .npy"),
    (["--a", "ok.npy", "--b", "wide.npy"], "shape mismatch"),
    (["--a", "vec.npy", "--b", "ok.npy"], "2-D"),
    (["--size", 4, "--out", "nodir/C.npy"], "does not exist"),
    (["--size", 4, "--grid", "2x2"], "has 4 ranks but the job has 3"),
    (["--size", 4, "--verify", "exact"], "--verify exact"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_input_errors_exit_2_with_one_line(tmp_path, args, message):
    np.save(tmp_path / "ok.npy", np.ones((3, 3)))
    np.save(tmp_path / "wide.npy", np.ones((4, 5)))
    np.save(tmp_path / "vec.npy", np.ones(3))
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    (tmp_path / "C.npy").write_bytes(b"existing result")
    extra = [] if "--out" in args else ["--out", "C.npy"]
    proc = run_mpimat(["--strategy", "summa", *args, *extra], n=3, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in one_error_line(proc)
    assert (tmp_path / "C.npy").read_bytes() == b"existing result"
    assert leftovers(tmp_path) == []


def test_auto_picks_summa_when_rank_0s_link_is_slow(tmp_path):
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"machine": {"latency": 1e-5, "bandwidth": 1e6, "gflops": 50.0}}))
    proc = run_mpimat(["--strategy", "auto", "--size", 400, "--report", "r.json", "--out", "C.npy", "--quiet"],
                      n=4, cwd=tmp_path, env={"MPIMAT_CALIBRATION": str(cal)})
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["auto"]["strategy"] == "summa" and rep["verification"]["passed"]
    assert rep["grid"] == "x".join(map(str, rep["auto"]["grid"]))


SLOW_ROOT_LINK = {"machine": {"latency": 1e-5, "bandwidth": 1e6, "gflops": 50.0}}  # auto then picks summa


@pytest.mark.parametrize("strategy, dtype, ran", [
    ("summa", "float64", "torch"),
    ("summa", "int16", "numpy"),   # torch does not multiply integers as numpy: numpy runs, and says so
    ("auto", "float64", "torch"),  # auto picking summa passes --kernel on too
])
def test_kernel_reaches_summa(tmp_path, strategy, dtype, ran):
    pytest.importorskip("torch")
    from mpimat.generate import random_pair

    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(SLOW_ROOT_LINK))
    m, k, n = (400, 400, 400) if strategy == "auto" else (61, 45, 38)
    proc = run_mpimat(["--strategy", strategy, "--kernel", "torch", "--shape", m, k, n, "--dtype", dtype,
                       "--seed", 4, "--out", "C.npy", "--report", "r.json", "--quiet"], n=4, cwd=tmp_path,
                      env={"MPIMAT_CALIBRATION": str(cal)})
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["verification"]["passed"] and rep["kernel"] == ran
    assert all(r["kernel"] == ran for r in rep["per_rank"])
    if strategy == "auto":
        assert rep["auto"]["strategy"] == "summa"
    A, B = random_pair(m, k, n, dtype, 4)
    C = np.load(tmp_path / "C.npy")
    if dtype == "int16":
        assert np.array_equal(C, A @ B)
    else:
        # Summed in another order than numpy's: an error bound of k roundings of |A| @ |B|.
        np.testing.assert_allclose(C, A @ B, rtol=1e-12, atol=1e-14 * k * np.abs(A).max() * np.abs(B).max())


def test_a_product_too_big_for_rank_0_runs_with_summa_and_tiles_refuses(tmp_path):
    # Every rank may map 700 MiB: A + B + C (443 MiB) on rank 0 do not fit, four ranks' blocks do.
    limit = ["prlimit", f"--as={700 << 20}"]
    env = dict(os.environ, MPIEXEC_TIMEOUT="150")
    runs = {}
    for strategy in ("tiles", "summa"):
        runs[strategy] = subprocess.run([*limit, str(MPIEXEC), "-n", "4", sys.executable, "-m", "mpimat",
                                         "--strategy", strategy, "--size", "4400", "--quiet", "--report",
                                         f"{strategy}.json"], cwd=tmp_path, capture_output=True, text=True,
                                        timeout=180, env=env)
    assert runs["tiles"].returncode == 2
    line = one_error_line(runs["tiles"])
    assert "needs" in line and "RLIMIT_AS" in line and "--strategy summa" in line
    assert runs["summa"].returncode == 0, runs["summa"].stderr
    rep = json.loads((tmp_path / "summa.json").read_text())
    assert rep["verification"]["passed"]
    assert all(r["peak_traced_bytes"] < 443 << 20 for r in rep["per_rank"])


def test_a_rank_killed_while_writing_leaves_the_old_file(tmp_path):
    (tmp_path / "C.npy").write_bytes(b"existing")
    proc = start_job(["--strategy", "summa", "--size", 4096, "--out", "C.npy", "--verify", "none", "--progress"],
                     tmp_path, n=2)
    ranks = []
    try:
        assert wait_for(lambda: job_ranks(proc, ranks), 30)
        wait_for_phase(proc, "write", timeout=90)
        os.kill(ranks[1], signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode != 0
        assert wait_for(lambda: not any(alive(r) for r in ranks), 10)
    finally:
        kill_tree(proc, ranks)
    assert (tmp_path / "C.npy").read_bytes() == b"existing"
    assert leftovers(tmp_path) == []
