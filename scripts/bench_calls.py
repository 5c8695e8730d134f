#!/usr/bin/env python3
"""Per-call cost of `matmul` for small products in a loop, against numpy, and memory over many calls.

    python scripts/bench_calls.py [--ranks 2] [--sizes 64 256 1024] [--calls 2000] [--soak 10000]

Re-launches itself under the interpreter's own mpiexec.  For each size, rank 0
times `--calls` back-to-back calls of matmul(A, B, comm) (the other ranks
call along) and as many of numpy's A @ B on rank 0 alone; it prints both per
call, the difference (mpimat's fixed cost: a product this small moves and
computes in microseconds) and the ratio.  Two rows per size: "default" as a
caller gets it (products below the tiles option alone_flops are computed by
the root alone) and "distributed" (alone_flops=0: every product is sent out,
the cost of the messages and of the Python around them).  Then `--soak`
calls at n=64 in both modes and the resident set size (RSS) of every rank
before and after: a cache or a request that leaks would grow it.  Target of
issue 13: fixed cost <= 50 us per call on 2 ranks, no memory growth over
10,000 calls.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--soak", type=int, default=10000)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(args) -> int:
    import numpy as np
    from mpi4py import MPI

    from mpimat import matmul

    def idle_barrier(comm):  # sleeps while it waits (not mpimat's own: the script also times older releases)
        request = comm.Ibarrier()
        while not request.Test():
            time.sleep(0.001)

    from mpimat.options import TilesOptions

    comm = MPI.COMM_WORLD
    root = comm.rank == 0
    # Releases before alone_flops distributed every product.
    modes = {"default": {}}
    if "alone_flops" in TilesOptions.__dataclass_fields__:
        modes["distributed"] = {"alone_flops": 0}
    if root:
        from machine import cpu_model  # scripts/machine.py, beside this script

        print(f"bench_calls: {comm.size} ranks, {cpu_model()}", flush=True)
    for n in args.sizes:
        rng = np.random.default_rng(n)
        A, B = (rng.standard_normal((n, n)), rng.standard_normal((n, n))) if root else (None, None)
        calls = max(10, args.calls if n <= 256 else args.calls // 10)
        for mode, options in modes.items():
            for _ in range(5):  # warm up (first calls build caches, fault in pages)
                matmul(A, B, comm=comm, **options)
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(calls):
                C = matmul(A, B, comm=comm, **options)
            per_call = (time.perf_counter() - t0) / calls
            per_call = comm.bcast(per_call)
            if root:  # the other ranks sleep meanwhile (a spinning rank would slow numpy's threads)
                assert np.allclose(C, A @ B)
                A @ B
                t0 = time.perf_counter()
                for _ in range(calls):
                    A @ B
                numpy_call = (time.perf_counter() - t0) / calls
                print(f"  n={n:5d} {mode:>11}: mpimat {per_call * 1e6:9.1f} us/call, numpy {numpy_call * 1e6:9.1f} "
                      f"us/call, difference {(per_call - numpy_call) * 1e6:8.1f} us, ratio {per_call / numpy_call:6.2f} "
                      f"({calls} calls)", flush=True)
            idle_barrier(comm)
    for mode, options in modes.items() if args.soak else ():
        n = 64
        rng = np.random.default_rng(0)
        A, B = (rng.standard_normal((n, n)), rng.standard_normal((n, n))) if root else (None, None)
        for _ in range(100):
            matmul(A, B, comm=comm, **options)
        before = rss_bytes()
        t0 = time.perf_counter()
        for _ in range(args.soak):
            matmul(A, B, comm=comm, **options)
        elapsed = time.perf_counter() - t0
        after = rss_bytes()
        growth = comm.gather((before, after))
        if root:
            print(f"  soak ({mode}): {args.soak} calls at n={n} in {elapsed:.2f} s "
                  f"({elapsed / args.soak * 1e6:.1f} us/call)", flush=True)
            for r, (b, a) in enumerate(growth):
                print(f"    rank {r}: RSS {b / 2**20:.1f} MiB -> {a / 2**20:.1f} MiB "
                      f"({(a - b) / 2**10:+.0f} KiB)", flush=True)
    return 0


def launch(args) -> int:
    mpiexec = Path(sys.executable).with_name("mpiexec")
    cmd = [str(mpiexec), "-n", str(args.ranks), sys.executable, os.path.abspath(__file__), "--worker",
           "--calls", str(args.calls), "--soak", str(args.soak), "--sizes", *map(str, args.sizes)]
    env = dict(os.environ, MPIEXEC_TIMEOUT=os.environ.get("MPIEXEC_TIMEOUT", "1800"))
    return subprocess.call(cmd, env=env)


def main() -> int:
    args = parse()
    return worker(args) if args.worker else launch(args)


if __name__ == "__main__":
    sys.exit(main())
