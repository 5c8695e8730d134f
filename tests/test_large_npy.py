"""Parallel .npy I/O (dist.save_npy / load_npy) of blocks over 2^31 elements, through the real wheel.

ROMIO's file calls assert count <= INT_MAX, so npyio reads and writes a block
as count rows (C order) or columns (Fortran order) of a contiguous unit.
Each case writes a ~4 GiB int8 matrix on 2 ranks whose blocks are strided
in the file (C order: 1x2 grid, row unit; Fortran order: 2x1 grid, column
unit), both blocks over 2^31 elements, then reads it back on the same grid
and on the transposed one (blocks contiguous in the file, rank 0's over
2^31) and checks every element of every block (large_npy_job.py); then this
process checks the file with numpy itself and that no temp file is left.
Needs 6 GiB of memory, 5 GiB of disk (4 GiB for the file, which is removed
even on failure) and 30-60 s per case, most of it writing and fsyncing the file.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from launch import MPIEXEC, ROOT
from large_npy_job import expected, pattern
from mpimat.memory import available, fmt

GiB = 1 << 30
# The shorter side is not a power of two; blocks are one column (row) apart:
# 32771 x 65532 and 32771 x 65531, both over 2^31 = 2147483648 elements.
SHORT, LONG = 32771, 131063
CASES = {"C": ((SHORT, LONG), "1x2", "2x1"), "F": ((LONG, SHORT), "2x1", "1x2")}
TIMEOUT = 300


def file_system_type(path):
    """The type of the file system holding `path` (its longest mount point prefix)."""
    path, best, kind = os.path.realpath(path), "", "?"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount = fields[4].replace("\\040", " ")
            fstype = fields[fields.index("-") + 1]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                best, kind = mount, fstype
    return kind


def run_job(args):
    """mpiexec -n 2 python large_npy_job.py ARGS: (exit code, stdout, stderr).

    MPIEXEC_TIMEOUT makes the launcher end a hung job; if even that fails,
    SIGTERM to mpiexec ends the job (it signals the ranks), SIGKILL the launcher.
    """
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(TIMEOUT))
    proc = subprocess.Popen([str(MPIEXEC), "-n", "2", sys.executable, str(ROOT / "tests" / "large_npy_job.py"),
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"the job did not end in {TIMEOUT + 30} s:\n{out}{err}")
    return proc.returncode, out, err


def samples(path, rows, cols, points):
    """Copies of whole rows, whole columns and single entries, read by numpy from the file (memory-mapped)."""
    X = np.load(path, mmap_mode="r", allow_pickle=False)
    try:
        meta = (X.shape, X.dtype, bool(X.flags.f_contiguous and not X.flags.c_contiguous), X.offset)
        ii, jj = points
        return (meta, [np.array(X[i, :]) for i in rows], [np.array(X[:, j]) for j in cols],
                np.array(X[ii, jj]))
    finally:
        del X  # unmapped here: the file's space is freed when the test removes it, even on failure


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_blocks_over_2_31_elements(order, tmp_path):
    (m, n), save_grid, other_grid = CASES[order]
    block = -(-m * n // 2)
    file_bytes = m * n + 128  # numpy's header is 128 bytes here
    tmpfs = file_system_type(tmp_path) in ("tmpfs", "ramfs")
    # Each rank holds one block at a time (plus interpreter, MPI and small check buffers);
    # a tmpfs keeps the file in memory too.
    need_memory = 2 * block + 2 * GiB + (file_bytes if tmpfs else 0)
    room, limit = available()
    if room < need_memory:
        pytest.skip(f"needs {fmt(need_memory)} of memory, {limit} allows {fmt(room)}")
    free = shutil.disk_usage(tmp_path).free
    if free < file_bytes + GiB:
        pytest.skip(f"needs {fmt(file_bytes + GiB)} of free disk in {tmp_path}, {fmt(free)} free")
    path = tmp_path / "X.npy"
    try:
        code, out, err = run_job([path, order, m, n, save_grid, save_grid, other_grid])
        print(out)  # the job's timings (pytest -rA shows them)
        assert code == 0, out + err
        assert f"large-npy ok {order} {m}x{n}" in out, out + err
        assert sorted(os.listdir(tmp_path)) == ["X.npy"]  # no temp file left
        assert os.path.getsize(path) == file_bytes

        a, b = pattern(m, n)
        rows = [0, 1, m // 2 - 1, m // 2, (m + 1) // 2, m - 1]  # the edges of the blocks of either grid
        cols = [0, 1, n // 2 - 1, n // 2, (n + 1) // 2, n - 1]
        rng = np.random.default_rng(order.encode()[0])
        points = rng.integers(0, m, 4096), rng.integers(0, n, 4096)
        meta, got_rows, got_cols, got_points = samples(path, rows, cols, points)
        assert meta == ((m, n), np.dtype(np.int8), order == "F", 128)
        for i, got in zip(rows, got_rows):
            assert np.array_equal(got.view(np.uint8), expected(a[[i]], b)[0]), f"row {i}"
        for j, got in zip(cols, got_cols):
            assert np.array_equal(got.view(np.uint8), expected(a, b[[j]])[:, 0]), f"column {j}"
        ii, jj = points
        assert np.array_equal(got_points.view(np.uint8), (a[ii] + b[jj]).astype(np.uint8))
    finally:
        for p in tmp_path.iterdir():  # the ~4 GiB file, and any temp file a failed job left
            p.unlink()
