#!/usr/bin/env python3
"""Parallel .npy reads on one node: independent reads (as shipped) against ROMIO's collective buffering.

    python scripts/bench_read.py [--gib 1] [--ranks 2] [--grids 1x2,2x1] [--repeats 3]

Writes an N x N float64 .npy of about --gib GiB in the current directory,
then reads it with mpimat.dist.load_npy on --ranks ranks for each grid
(1x2: column blocks, strided in a C-order file; 2x1: row blocks,
contiguous), alternating the shipped read (romio_cb_read=disable on one
node, dist/npyio.py) with ROMIO's default (collective buffering: the
benchmark's child process hands ROMIO no hint).  The page cache is
dropped before every read when this runs as root (else: warm cache, said
so).  Prints each run and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
MPIEXEC = str(Path(PY).with_name("mpiexec"))


def child(path: str, grid: str, variant: str) -> None:
    from mpi4py import MPI
    from mpimat.dist import npyio

    if variant == "collective":
        npyio._read_hints = lambda comm: MPI.INFO_NULL  # ROMIO's default, for comparison only
    comm = MPI.COMM_WORLD
    comm.Barrier()
    t = time.perf_counter()
    X = npyio.load_npy(path, comm, grid=grid)
    comm.Barrier()
    t = time.perf_counter() - t
    total = comm.allreduce(float(X.local.sum()))
    if comm.rank == 0:
        print(f"{t:.4f} {total!r}", flush=True)


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--grids", default="1x2,2x1")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=3, metavar=("PATH", "GRID", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return 0
    import numpy as np

    n = int((args.gib * 2 ** 30 / 8) ** 0.5)
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        path = os.path.join(tmp, "A.npy")
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, n))
        for r in range(0, n, 1024):
            out[r:r + 1024] = np.random.default_rng(r).standard_normal((min(1024, n - r), n))
        out.flush()
        del out
        cold = drop_caches()
        print(f"bench_read: {n}x{n} float64 ({os.path.getsize(path) / 2 ** 30:.2f} GiB), {args.ranks} ranks, "
              f"{'cold' if cold else 'warm (not root: page cache kept)'} cache, load {os.getloadavg()[0]:.2f}",
              flush=True)
        times = {}
        for _ in range(args.repeats):
            for grid in args.grids.split(","):
                sums = set()
                for variant in ("independent", "collective"):
                    drop_caches()
                    run = subprocess.run([MPIEXEC, "-n", str(args.ranks), PY, __file__, "--child", path, grid, variant],
                                         check=True, capture_output=True, text=True,
                                         env=dict(os.environ, MPIEXEC_TIMEOUT="900"))
                    seconds, total = run.stdout.split()
                    sums.add(total)
                    times.setdefault((grid, variant), []).append(float(seconds))
                    print(f"  {grid} {variant:11s} {float(seconds):6.2f} s", flush=True)
                if len(sums) != 1:
                    print(f"bench_read: the two reads of grid {grid} differ", file=sys.stderr)
                    return 1
        for grid in args.grids.split(","):
            ind, col = (statistics.median(times[grid, v]) for v in ("independent", "collective"))
            print(f"{grid}: independent {ind:.2f} s, collective buffering {col:.2f} s: {col / ind:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
