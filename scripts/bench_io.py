#!/usr/bin/env python3
"""Parallel .npy reads and writes on one node: independent I/O (as shipped) against ROMIO's defaults.

    python scripts/bench_io.py [--op read write] [--gib 1] [--ranks 2] [--grids 1x2,2x1] [--repeats 3]

read: writes an N x N float64 .npy of about --gib GiB in the current
directory, then reads it with mpimat.dist.load_npy on --ranks ranks for
each grid (1x2: column blocks, strided in a C-order file; 2x1: row blocks,
contiguous).  write: each rank generates its block of such a matrix
(mpimat.dist.random), then mpimat.dist.save_npy writes it, fsync and rename
included (what a user waits for).  Each alternates the shipped hints on
one node (dist/npyio.py ONE_NODE_HINTS: no collective buffering, and for
writes no data sieving) with ROMIO's defaults (collective buffering: the
benchmark's child process hands ROMIO no hint).  The page cache is dropped
before every run when this runs as root (else: warm cache, said so).
Prints each run and the medians.
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

from machine import cpu_model  # scripts/machine.py, beside this script

PY = sys.executable
MPIEXEC = str(Path(PY).with_name("mpiexec"))
VARIANTS = ("shipped", "defaults")


def child(op: str, path: str, n: int, grid: str, variant: str) -> None:
    from mpi4py import MPI
    from mpimat.dist import npyio, random

    if variant == "defaults":
        npyio._hints = lambda comm, op: MPI.INFO_NULL  # ROMIO's defaults, for comparison only
    comm = MPI.COMM_WORLD
    X = random((n, n), "float64", 1, comm, grid=grid) if op == "write" else None
    comm.Barrier()
    t = time.perf_counter()
    if op == "read":
        X = npyio.load_npy(path, comm, grid=grid)
    else:
        npyio.save_npy(path, X)
    comm.Barrier()
    t = time.perf_counter() - t
    # The same sum from both variants: the same data went in or out.
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
    p.add_argument("--op", nargs="+", choices=("read", "write"), default=["read", "write"])
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--grids", default="1x2,2x1")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=5, metavar=("OP", "PATH", "N", "GRID", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        op, path, n, grid, variant = args.child
        child(op, path, int(n), grid, variant)
        return 0
    import numpy as np

    n = int((args.gib * 2 ** 30 / 8) ** 0.5)
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        path = os.path.join(tmp, "A.npy")
        if "read" in args.op:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, n))
            for r in range(0, n, 1024):
                out[r:r + 1024] = np.random.default_rng(r).standard_normal((min(1024, n - r), n))
            out.flush()
            del out
        cold = drop_caches()
        print(f"bench_io: {n}x{n} float64 ({n * n * 8 / 2 ** 30:.2f} GiB), {args.ranks} ranks, {cpu_model()}, "
              f"{'cold' if cold else 'warm (not root: page cache kept)'} cache, load {os.getloadavg()[0]:.2f}",
              flush=True)
        times = {}
        for _ in range(args.repeats):
            for op in args.op:
                target = path if op == "read" else os.path.join(tmp, "C.npy")
                for grid in args.grids.split(","):
                    sums = set()
                    for variant in VARIANTS:
                        drop_caches()
                        run = subprocess.run([MPIEXEC, "-n", str(args.ranks), PY, __file__, "--child", op, target,
                                              str(n), grid, variant], check=True, capture_output=True, text=True,
                                             env=dict(os.environ, MPIEXEC_TIMEOUT="900"))
                        seconds, total = run.stdout.split()
                        sums.add(total)
                        times.setdefault((op, grid, variant), []).append(float(seconds))
                        print(f"  {op} {grid} {variant:8s} {float(seconds):6.2f} s", flush=True)
                        if op == "write":
                            os.unlink(target)
                    if len(sums) != 1:
                        print(f"bench_io: the two {op}s of grid {grid} differ", file=sys.stderr)
                        return 1
        for op in args.op:
            for grid in args.grids.split(","):
                shipped, defaults = (statistics.median(times[op, grid, v]) for v in VARIANTS)
                print(f"{op} {grid}: shipped {shipped:.2f} s, ROMIO's defaults {defaults:.2f} s: "
                      f"{defaults / shipped:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
