"""Helper job for test_large_npy.py: parallel .npy I/O of blocks over 2^31 elements.

    mpiexec -n 2 python large_npy_job.py PATH ORDER M N SAVE_GRID LOAD_GRID...

Every rank fills its block of the M x N int8 matrix (SAVE_GRID, memory order
ORDER) with pattern(), dist.save_npy writes PATH; then, for each LOAD_GRID,
dist.load_npy reads it back and every rank checks its whole block against
the pattern.  Each operation must have a rank whose block has more than
2^31 elements, so the MPI-IO calls go past int counts (npyio's unit is a
row of the block in C order, a column in Fortran order).  Prints one line
"large-npy ok ..." on rank 0 and exits 0, or exits 1 with what went wrong.

pattern() and expected() are plain numpy (no MPI), so the test imports them
to check the file itself.
"""

import sys
import time

import numpy as np

SEED = 20240612
CHUNK = 1 << 20  # elements compared at a time (in the L2 cache)


def pattern(m, n, seed=SEED):
    """Row and column vectors (uint8) of the matrix: X[i, j] = (a[i] + b[j]) mod 256, as int8.

    Random a and b: any misplaced, shifted, transposed or missing part of
    the matrix changes values (a linear i*p + j*q pattern would repeat).
    """
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, m, dtype=np.uint8), rng.integers(0, 256, n, dtype=np.uint8)


def expected(a_rows, b_cols, out=None):
    """The block of the pattern for these row and column vectors (uint8, wraps mod 256)."""
    return np.add(a_rows[:, None], b_cols[None, :], out=out, dtype=np.uint8)


def first_mismatch(local, order, a_rows, b_cols, row0, col0):
    """None if the int8 block equals the pattern, else (i, j, got, expected) where it first does not."""
    got = local.view(np.uint8)
    # CHUNK elements at a time along the block's memory order (whole rows in C
    # order, whole columns in Fortran order), each compared eight bytes at a time.
    rows, cols = got.shape
    step = max(1, CHUNK // max(1, cols if order == "C" else rows))
    buf = np.empty(step * (cols if order == "C" else rows), dtype=np.uint8)
    for s in range(0, rows if order == "C" else cols, step):
        if order == "C":
            part, a_part, b_part, i0, j0 = got[s:s + step], a_rows[s:s + step], b_cols, s, 0
        else:
            part, a_part, b_part, i0, j0 = got[:, s:s + step], a_rows, b_cols[s:s + step], 0, s
        want = buf[:part.size].reshape(part.shape, order=order)
        expected(a_part, b_part, out=want)
        flat_got, flat_want = part.reshape(-1, order=order), want.reshape(-1, order=order)  # views
        k = flat_got.size // 8 * 8
        if not (np.array_equal(flat_got[:k].view(np.uint64), flat_want[:k].view(np.uint64))
                and np.array_equal(flat_got[k:], flat_want[k:])):
            i, j = np.argwhere(part != want)[0]
            return (row0 + i0 + int(i), col0 + j0 + int(j), int(part[i, j]), int(want[i, j]))
    return None


def main(argv):
    from mpi4py import MPI

    from mpimat import dist

    path, order, m, n, save_grid, load_grids = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4], argv[5:]
    comm = MPI.COMM_WORLD
    a, b = pattern(m, n)
    problems = []
    timings = []

    def over_int(X, what):
        sizes = comm.allgather(X.local.size)
        if max(sizes) <= 2**31:
            problems.append(f"{what}: no block over 2^31 elements (sizes {sizes})")
        return sizes

    X = dist.empty((m, n), np.int8, comm, grid=save_grid, order=order)
    blk = X.block
    expected(a[blk.row0:blk.row1], b[blk.col0:blk.col1], out=X.local.view(np.uint8))
    sizes = over_int(X, f"save on {save_grid}")
    comm.Barrier()
    t = time.perf_counter()
    dist.save_npy(path, X)
    timings.append(f"save {save_grid} {time.perf_counter() - t:.1f}s")
    del X

    for grid in load_grids:
        comm.Barrier()
        t = time.perf_counter()
        Y = dist.load_npy(path, comm, grid=grid)
        seconds = time.perf_counter() - t
        blk = Y.block
        what = f"load on {grid}"
        if (Y.shape, Y.dtype, Y.order, str(Y.grid)) != ((m, n), np.dtype(np.int8), order, grid):
            problems.append(f"{what}: got {Y!r}")
        over_int(Y, what)
        bad = first_mismatch(Y.local, Y.order, a[blk.row0:blk.row1], b[blk.col0:blk.col1], blk.row0, blk.col0)
        for rank, where in enumerate(comm.allgather(bad)):
            if where:
                i, j, got, want = where
                problems.append(f"{what}: rank {rank}: X[{i}, {j}] = {got} (as uint8), expected {want}")
        timings.append(f"load {grid} {seconds:.1f}s")
        del Y

    if comm.rank == 0:
        if problems:
            print("large-npy FAILED:", *problems, sep="\n  ", flush=True)
        else:
            print(f"large-npy ok {order} {m}x{n} save blocks {sizes};", ", ".join(timings), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BaseException:
        import traceback

        from mpi4py import MPI

        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)  # the other ranks may be waiting in a collective
    sys.exit(code)
