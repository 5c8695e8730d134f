#!/usr/bin/env python3
"""SUMMA (mpimat.dist.matmul) with the data already distributed, against numpy.

    python scripts/bench_summa.py [--size 4096 8192] [--ranks 2] [--repeats 3]
                                  [--memory-size 8192] [--memory-ranks 4]

Two runs, each re-launched under the interpreter's own mpiexec:

1. Speed (compute only), float64, `--ranks` ranks on this node: every rank
   generates its blocks of A and B in place (dist.random), rank 0 also
   generates the whole of A and B (generate.random_pair: the same values).
   Then, alternately, in one process tree:
     - numpy: rank 0 alone computes A @ B with as many BLAS threads as there
       are ranks (the other ranks sleep, not spin);
     - summa: dist.matmul(A, B) on every rank (1 BLAS thread each), timed
       from a barrier before the call to a barrier after it (C stays
       distributed: no gather).
   The ratio is the median over the pairs of numpy's time / summa's time.
2. Memory: `--memory-ranks` ranks at n = --memory-size, under tracemalloc
   from before A and B exist: every rank's peak of numpy array memory
   against its budget, blocks of A, B and C + 2 panels of each operand,
   +10%.

Machines are shared and noisy: compare the ratio, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from machine import cpu_model  # scripts/machine.py, beside this script


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--size", type=int, nargs="*", default=[4096, 8192], help="sizes of the speed run (none: skip it)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-size", type=int, default=8192, help="n of the memory run (0: skip it)")
    p.add_argument("--memory-ranks", type=int, default=4)
    p.add_argument("--panel", type=int, default=None, help="panel width (default: the library's)")
    p.add_argument("--worker", choices=["speed", "memory"], help=argparse.SUPPRESS)
    return p.parse_args()


def launch(args) -> int:
    mpiexec = Path(sys.executable).with_name("mpiexec")
    me = os.path.abspath(__file__)
    env = dict(os.environ, MPIEXEC_TIMEOUT=os.environ.get("MPIEXEC_TIMEOUT", "3600"))
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; load average {os.getloadavg()}", flush=True)
    common = ["--repeats", str(args.repeats)] + (["--panel", str(args.panel)] if args.panel else [])
    rc = 0
    if args.size:
        rc |= subprocess.call([str(mpiexec), "-n", str(args.ranks), sys.executable, me, "--worker", "speed",
                               "--size", *map(str, args.size), *common], env=env)
    if args.memory_size:
        rc |= subprocess.call([str(mpiexec), "-n", str(args.memory_ranks), sys.executable, me, "--worker",
                               "memory", "--memory-size", str(args.memory_size), *common], env=env)
    print(f"load average at the end {os.getloadavg()}", flush=True)
    return rc


def idle_barrier(comm):
    """A barrier that sleeps instead of spinning (MPI waits busy-poll a core)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.001)


def speed(args) -> int:
    import numpy as np
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    from mpimat import dist
    from mpimat.generate import random_block, random_pair
    from mpimat.stats import Stats

    comm = MPI.COMM_WORLD
    for n in args.size:
        X = dist.random((n, n), "float64", 1, comm, "A")
        Y = dist.random((n, n), "float64", 1, comm, "B")
        A = B = None
        if comm.rank == 0:
            A, B = random_pair(n, n, n, "float64", 1)
        t_np, t_su, cpu_np, cpu_su = [], [], [], []
        stats = None
        for _ in range(args.repeats):
            idle_barrier(comm)
            if comm.rank == 0:
                with threadpool_limits(limits=comm.size, user_api="blas"):
                    t0, c0 = time.perf_counter(), time.process_time()
                    A @ B  # the result is dropped at once, like summa's C below
                    t_np.append(time.perf_counter() - t0)
                    cpu_np.append(time.process_time() - c0)
            idle_barrier(comm)
            comm.Barrier()
            stats = Stats()
            t0, c0 = time.perf_counter(), time.process_time()
            C = dist.matmul(X, Y, panel=args.panel, stats=stats)
            cpu = time.process_time() - c0
            comm.Barrier()
            t_su.append(time.perf_counter() - t0)
            cpu_su.append(comm.allreduce(cpu))
            # Check a corner of this rank's block against numpy.
            b = C.block
            rows, cols = min(32, b.shape[0]), min(32, b.shape[1])
            if rows and cols:
                a = random_block(1, "A", (n, n), "float64", (b.row0, b.row0 + rows), (0, n))
                bb = random_block(1, "B", (n, n), "float64", (0, n), (b.col0, b.col0 + cols))
                if not np.allclose(C.local[:rows, :cols], a @ bb, rtol=1e-10, atol=1e-8 * n):
                    print(f"bench: WRONG RESULT on rank {comm.rank}", file=sys.stderr, flush=True)
                    comm.Abort(1)
            del C
        if comm.rank == 0:
            flops = 2.0 * n ** 3
            med_np, med_su = statistics.median(t_np), statistics.median(t_su)
            ratio = statistics.median(a / b for a, b in zip(t_np, t_su))
            print(f"speed n={n} float64, {comm.size} ranks, grid {stats.extra['grid']}, "
                  f"{stats.extra['panels']} panels of <= {stats.extra['panel_width']}: "
                  f"numpy ({comm.size} threads) {flops / med_np / 1e9:.1f} GFLOP/s (median {med_np:.3f} s), "
                  f"summa {flops / med_su / 1e9:.1f} GFLOP/s (median {med_su:.3f} s), "
                  f"ratio {ratio:.3f} (median of {len(t_np)} pairs: "
                  f"{', '.join(f'{a / b:.3f}' for a, b in zip(t_np, t_su))})", flush=True)
            # CPU seconds (all threads / all ranks): the work each side did,
            # less sensitive than wall time to other load on a shared machine.
            print(f"    CPU seconds: numpy {statistics.median(cpu_np):.2f}, summa (all ranks) "
                  f"{statistics.median(cpu_su):.2f}, ratio "
                  f"{statistics.median(a / b for a, b in zip(cpu_np, cpu_su)):.3f}; summa waited "
                  f"{stats.extra['wait_seconds']:.3f} s on rank 0 for broadcasts", flush=True)
        sent = comm.gather(stats.bytes_sent)
        received = comm.gather(stats.bytes_received)
        if comm.rank == 0:
            print("    bytes per rank (sent / received): "
                  + "; ".join(f"rank {r}: {s / 2**20:.0f} / {v / 2**20:.0f} MiB"
                              for r, (s, v) in enumerate(zip(sent, received))), flush=True)
        del A, B, X, Y
    return 0


def memory(args) -> int:
    import numpy as np
    from mpi4py import MPI

    from mpimat import dist
    from mpimat.stats import Stats

    comm = MPI.COMM_WORLD
    n = args.memory_size
    tracemalloc.start()
    X = dist.random((n, n), "float64", 2, comm, "A")
    Y = dist.random((n, n), "float64", 2, comm, "B")
    stats = Stats()
    t0 = time.perf_counter()
    C = dist.matmul(X, Y, panel=args.panel, stats=stats)
    comm.Barrier()
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    v = dist.freivalds(X, Y, C, seed=1)
    w = stats.extra["panel_width"]
    item = np.dtype("float64").itemsize
    a, b, c = X.block.shape, Y.block.shape, C.block.shape
    blocks = (a[0] * a[1] + b[0] * b[1] + c[0] * c[1]) * item
    panels = 2 * (a[0] * w + w * b[1]) * item
    budget = int(1.10 * (blocks + panels))
    rows = comm.gather((peak, blocks, panels, budget, stats.bytes_sent, stats.bytes_received))
    if comm.rank == 0:
        print(f"memory n={n} float64, {comm.size} ranks, grid {stats.extra['grid']}, "
              f"{stats.extra['panels']} panels of <= {w}, {elapsed:.1f} s "
              f"(oversubscribed if ranks > cores), freivalds: {v.passed} ({v.detail})", flush=True)
        for r, (p, bl, pa, bu, s, rv) in enumerate(rows):
            print(f"    rank {r}: peak array memory {p / 2**20:8.1f} MiB; blocks of A, B, C {bl / 2**20:.1f} MiB "
                  f"+ 2 panels of each operand {pa / 2**20:.1f} MiB, +10% = budget {bu / 2**20:.1f} MiB: "
                  f"{'ok' if p <= bu else 'OVER'} ({p / (bl + pa):.3f} of blocks + panels); "
                  f"sent {s / 2**20:.0f} MiB, received {rv / 2**20:.0f} MiB", flush=True)
    return 0


def main() -> int:
    args = parse()
    if args.worker == "speed":
        return speed(args)
    if args.worker == "memory":
        return memory(args)
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
