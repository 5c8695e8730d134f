#!/usr/bin/env python3
"""Dot products per second of `--strategy dot` (the one-task-per-entry scheme).

    python scripts/bench_dot.py                       # n=256 float64, K=1, 2 ranks
    python scripts/bench_dot.py --size 256 --ranks 2 --tasks-per-message 1 --repeats 3

Re-launches itself under the interpreter's own mpiexec.  Rank 0 generates A
and B once, then runs matmul(strategy="dot") `--repeats` times and prints
the dot products per second of each run (tasks / dispatcher wall time), the
best and the median, and checks C against numpy.  Target of issue 3:
>= 70,000/s at n=256 float64 K=1 with 2 ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

TARGET = 70_000


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--tasks-per-message", type=int, default=1)
    p.add_argument("--keep-blocks", action="store_true")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def launch(args) -> int:
    mpiexec = Path(sys.executable).with_name("mpiexec")
    argv = [a for a in sys.argv[1:] if a != "--worker"]
    cmd = [str(mpiexec), "-n", str(args.ranks), sys.executable, os.path.abspath(__file__), "--worker", *argv]
    env = dict(os.environ, MPIEXEC_TIMEOUT=os.environ.get("MPIEXEC_TIMEOUT", "600"))
    return subprocess.run(cmd, env=env, timeout=900).returncode


def work(args) -> int:
    import numpy as np
    from mpi4py import MPI

    from mpimat import matmul
    from mpimat.generate import random_pair
    from mpimat.stats import Stats

    comm = MPI.COMM_WORLD
    n = args.size
    A = B = None
    if comm.rank == 0:
        A, B = random_pair(n, n, n, np.dtype(args.dtype), seed=0)
    rates, ok = [], True
    for _ in range(args.repeats):
        stats = Stats()
        comm.Barrier()
        C = matmul(A, B, comm=comm, strategy="dot", stats=stats,
                   tasks_per_message=args.tasks_per_message, keep_blocks=args.keep_blocks)
        if comm.rank == 0:
            rates.append(stats.extra["dot_products_per_second"])
            ref = A @ B
            ok = ok and (np.array_equal(C, ref) if C.dtype.kind in "biu" else
                         bool(np.allclose(C, ref, rtol=1e-3 if C.dtype.itemsize <= 4 else 1e-9, atol=1e-3)))
    if comm.rank != 0:
        return 0
    best, median = max(rates), statistics.median(rates)
    print(f"dot strategy, n={n} {args.dtype}, K={args.tasks_per_message}, keep_blocks={args.keep_blocks}, "
          f"{comm.size} ranks: {n * n} dot products per run")
    print("  per run:  " + "  ".join(f"{r:,.0f}/s" for r in rates))
    print(f"  best {best:,.0f}/s   median {median:,.0f}/s   (target >= {TARGET:,}/s at n=256 float64 K=1 "
          f"-n 2)   result {'matches numpy' if ok else 'WRONG'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "size": n, "dtype": args.dtype, "ranks": comm.size, "tasks_per_message": args.tasks_per_message,
            "keep_blocks": args.keep_blocks, "rates": rates, "best": best, "median": median,
            "correct": ok}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    a = parse()
    sys.exit(work(a) if a.worker else launch(a))
