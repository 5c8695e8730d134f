#!/usr/bin/env python3
"""mpimat end to end against single-process numpy, in one process tree.

    python scripts/bench.py --size 4096 --ranks 2 [--repeats 3] [--dtype float64]

Re-launches itself under the interpreter's own mpiexec.  Rank 0 generates A
and B once, then alternates:
  - numpy: rank 0 alone computes A @ B with every core (the other ranks
    sleep, not spin, so numpy has the machine to itself);
  - mpimat: matmul(A, B) on all ranks, timed from the barrier before to the
    moment C is complete on rank 0 (distribute + compute + gather; no
    process start, no input generation).
It prints both throughputs, the ratio (median over the repeats of numpy's
time / mpimat's time in back-to-back pairs), and, from one more untimed run
under tracemalloc (which slows the timed ones), each rank's peak array
memory against the budget:
  rank 0: size(A) + size(B) + size(C) + work buffers of at most one block each;
  others: their rows of A + columns of B + tile, +10%.
Machines are shared and noisy: compare the ratio, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--size", type=int, nargs="+", default=[4096])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def launch(args) -> int:
    mpiexec = Path(sys.executable).with_name("mpiexec")
    cmd = [str(mpiexec), "-n", str(args.ranks), sys.executable, os.path.abspath(__file__), "--worker",
           "--repeats", str(args.repeats), "--dtype", args.dtype, "--size", *map(str, args.size)]
    if args.json:
        cmd += ["--json", args.json]
    env = dict(os.environ, MPIEXEC_TIMEOUT=os.environ.get("MPIEXEC_TIMEOUT", "3600"))
    return subprocess.call(cmd, env=env)


def idle_barrier(comm):
    """A barrier that sleeps instead of spinning (MPI waits busy-poll a core)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.001)


def worker(args) -> int:
    import numpy as np
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    from mpimat import matmul
    from mpimat.compute import cpu_count
    from mpimat.generate import random_pair
    from mpimat.partition import Layout, choose_grid

    comm = MPI.COMM_WORLD
    results = []
    for n in args.size:
        A = B = None
        if comm.rank == 0:
            A, B = random_pair(n, n, n, args.dtype, 1)
        t_np, t_mm, peaks = [], [], []
        for _ in range(args.repeats):
            idle_barrier(comm)
            if comm.rank == 0:
                with threadpool_limits(limits=cpu_count(), user_api="blas"):
                    t0 = time.perf_counter()
                    A @ B
                    t_np.append(time.perf_counter() - t0)
            idle_barrier(comm)
            comm.Barrier()
            t0 = time.perf_counter()
            C = matmul(A, B, comm=comm)
            elapsed = time.perf_counter() - t0
            t_mm.append(comm.bcast(elapsed if comm.rank == 0 else None))
            if comm.rank == 0:
                ok = np.allclose(C[:64], A[:64] @ B, rtol=1e-10, atol=1e-8 * n)
                if not ok:
                    print("bench: WRONG RESULT", file=sys.stderr)
                    return 1
            del C
        # Memory in a separate, untimed run: tracemalloc slows the timed ones.
        idle_barrier(comm)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        C = matmul(A, B, comm=comm)
        peaks.append(tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.stop()
        del C
        peak = max(peaks)
        all_peaks = comm.gather(peak)
        if comm.rank != 0:
            continue
        item = np.dtype(args.dtype).itemsize
        grid = choose_grid(n, n, n, comm.size, item, item)
        layout = Layout(n, n, n, grid)
        budget = []
        for t in layout.tiles():
            rows, cols = t.shape
            block = (rows * n + n * cols + rows * cols) * item
            if t.rank == 0:
                # A and B already exist before the call; C is new.  Work
                # buffers: at most one block each.
                budget.append(n * n * item + block)
            else:
                budget.append(int(1.10 * block))
        flops = 2.0 * n ** 3
        med_np, med_mm = statistics.median(t_np), statistics.median(t_mm)
        # Each repeat runs numpy then mpimat back to back: the median of the
        # paired ratios is robust to the machine's load changing between pairs.
        ratio = statistics.median(a / b for a, b in zip(t_np, t_mm))
        row = {
            "n": n, "dtype": args.dtype, "ranks": comm.size, "grid": str(grid),
            "numpy_seconds": t_np, "mpimat_seconds": t_mm,
            "numpy_gflops": flops / med_np / 1e9, "mpimat_gflops": flops / med_mm / 1e9,
            "ratio": ratio,
            "peak_array_bytes": all_peaks, "budget_bytes": budget,
            "memory_ok": all(p <= b for p, b in zip(all_peaks, budget)),
        }
        results.append(row)
        print(f"n={n} {args.dtype} ranks={comm.size} grid {grid}: numpy {row['numpy_gflops']:.1f} GFLOP/s "
              f"(median {med_np:.3f} s), mpimat {row['mpimat_gflops']:.1f} GFLOP/s (median {med_mm:.3f} s), "
              f"ratio {ratio:.3f} (median of {len(t_np)} paired runs)", flush=True)
        for r, (p, b) in enumerate(zip(all_peaks, budget)):
            print(f"    rank {r}: peak new array memory {p / 2**20:9.1f} MiB, budget {b / 2**20:9.1f} MiB "
                  f"{'ok' if p <= b else 'OVER'}", flush=True)
    if comm.rank == 0 and args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def main() -> int:
    args = parse()
    return worker(args) if args.worker else launch(args)


if __name__ == "__main__":
    sys.exit(main())
