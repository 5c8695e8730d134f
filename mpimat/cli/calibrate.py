"""`python -m mpimat calibrate`: measure this machine's alpha, beta and gamma.

    mpiexec -n 2 python -m mpimat calibrate [--save PATH] [--quick]

- latency (alpha): half the round trip of an 8-byte ping-pong between
  ranks 0 and 1 (buffer-based Send/Recv, the best of several rounds);
- bandwidth (1/beta): from ping-pongs of 1 MiB and 16 MiB messages
  (the slope, so the latency cancels);
- gflops: float64 matmul rate of one rank with one BLAS thread (mpimat's
  default when ranks share a node); gflops_noblas: int64 matmul (numpy's
  own loops); dot_call: one task of the dot strategy on one rank (k=1);
  dot_gflops: np.dot of length 65536; blas_setup: limiting BLAS to one
  thread (threadpoolctl), paid once per local product when ranks share a node;
- dispatch_batch / dispatch_task: the dot strategy's dispatcher, timed on
  ranks 0 and 1 with one and with 32 tasks per message.

Saved as JSON to --save, else $MPIMAT_CALIBRATION, else
~/.config/mpimat/calibration.json; `python -m mpimat plan` reads it.
Needs at least 2 ranks (ranks beyond 1 wait); with 1 rank it says so and
exits with code 2.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
from mpi4py import MPI

from .. import calibration
from ..api import matmul
from ..compute import blas_threads, cpu_count
from ..control import agree
from ..errors import EXIT_OK, InputError
from ..stats import Stats
from .args import ArgumentParser

TAG = 4242


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="mpimat calibrate",
                       description="Measure latency, bandwidth and flop rates; save them for `mpimat plan`. "
                                   "Run with: mpiexec -n 2 python -m mpimat calibrate")
    p.add_argument("--save", metavar="PATH",
                   help=f"where to save (default $MPIMAT_CALIBRATION or {calibration.default_path()})")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (seconds, less precise)")
    p.add_argument("--json", action="store_true", help="print the saved JSON instead of a summary")
    return p


def pingpong(comm: MPI.Comm, nbytes: int, rounds: int, repeats: int) -> float:
    """Best one-way time of an nbytes message between ranks 0 and 1 (rank 0's view)."""
    buf = np.zeros(max(1, nbytes), dtype=np.uint8)
    best = float("inf")
    for _ in range(repeats):
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(rounds):
            if comm.rank == 0:
                comm.Send([buf, MPI.BYTE], dest=1, tag=TAG)
                comm.Recv([buf, MPI.BYTE], source=1, tag=TAG)
            else:
                comm.Recv([buf, MPI.BYTE], source=0, tag=TAG)
                comm.Send([buf, MPI.BYTE], dest=0, tag=TAG)
        best = min(best, (time.perf_counter() - start) / rounds / 2)
    return best


def idle_barrier(comm: MPI.Comm) -> None:
    """A barrier that sleeps instead of spinning while it waits."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.002)


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compute_rates(quick: bool) -> dict:
    reps = 2 if quick else 4
    n = 512 if quick else 1024
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n))
    B = rng.standard_normal((n, n))
    with blas_threads(1):
        np.matmul(A, B)
        t = best_time(lambda: np.matmul(A, B), reps)
    gflops = 2 * n ** 3 / t / 1e9
    ni = 96 if quick else 160
    Ai = rng.integers(-9, 9, (ni, ni))
    t = best_time(lambda: np.matmul(Ai, Ai), reps)
    gflops_noblas = 2 * ni ** 3 / t / 1e9
    # One task of the dot strategy on one rank (k=1): the per-dot-product
    # cost as the strategy pays it (the call, the views, the store).
    a1, b1 = np.ones((128, 1)), np.ones((1, 128))
    per_task = float("inf")
    for _ in range(3 * reps):  # short runs: take the best of many (shared machines are noisy)
        st = Stats()
        matmul(a1, b1, comm=MPI.COMM_SELF, strategy="dot", stats=st)
        per_task = min(per_task, st.extra["dispatch_seconds"] / (128 * 128))
    t = per_task
    big = 1 << 16
    xb, yb = rng.standard_normal(big), rng.standard_normal(big)
    tb = best_time(lambda: [xb.dot(yb) for _ in range(50)], reps) / 50

    def limited():
        with blas_threads(1):
            pass

    limited()
    setup = best_time(limited, 2 * reps)
    return {"gflops": gflops, "gflops_noblas": gflops_noblas, "dot_call": t,
            "dot_gflops": 2 * big / max(tb, 1e-9) / 1e9, "blas_setup": setup}


def dispatch_costs(comm: MPI.Comm, quick: bool) -> dict:
    """Root time per message of the dot strategy: K=1 and K=32 at k=1, K=1 at k=256.

    dispatch_batch + K dispatch_task is the cost of a message of K tasks
    whose vectors are tiny; dispatch_element is what each element of the
    row and column adds (packing a strided column touches one cache line
    per element, so it is more than the bytes on the link).
    """
    n = 48 if quick else 160  # long enough runs that start-up costs fade
    long_k = 256
    per_batch = {}
    # The long run packs columns of a 256 x 256 B (rows 2 KiB apart, the
    # benchmark's case): each element of a column is on its own cache line.
    for K, m, k, cols in ((1, n, 1, n), (32, n, 1, n), (1, 16 if quick else 64, long_k, long_k)):
        A = np.ones((m, k)) if comm.rank == 0 else None
        B = np.ones((k, cols)) if comm.rank == 0 else None
        best = float("inf")
        for _ in range(2 if quick else 4):
            stats = Stats()
            matmul(A, B, comm=comm, strategy="dot", stats=stats, tasks_per_message=K)
            if comm.rank == 0:
                batches = -(-m * cols // K)
                best = min(best, stats.extra["dispatch_seconds"] / batches)
        per_batch[K, k] = best
    if comm.rank != 0:
        return {}
    task = max((per_batch[32, 1] - per_batch[1, 1]) / 31, 0.0)
    batch = max(per_batch[1, 1] - task, 0.0)
    element = max((per_batch[1, long_k] - per_batch[1, 1]) / (long_k - 1), 0.0)
    return {"dispatch_batch": batch, "dispatch_task": task, "dispatch_element": element}


def measure(comm: MPI.Comm, quick: bool) -> Optional[dict]:
    """Every rank of `comm` (size >= 2) calls this; rank 0 gets the figures."""
    pair = comm.Split(0 if comm.rank < 2 else MPI.UNDEFINED, comm.rank)
    out = None
    if pair != MPI.COMM_NULL:
        rounds = 300 if quick else 2000
        latency = pingpong(pair, 8, rounds, 3 if quick else 5)
        small, large = 1 << 20, 16 << 20
        t_small = pingpong(pair, small, 5 if quick else 20, 3)
        t_large = pingpong(pair, large, 2 if quick else 5, 3)
        bandwidth = (large - small) / max(t_large - t_small, 1e-9)
        # Rank 1 waits without spinning while rank 0 times its arithmetic:
        # MPICH busy-polls in blocking calls, which would halve rank 0's
        # CPU on a machine with few cores.
        rates = compute_rates(quick) if pair.rank == 0 else None
        idle_barrier(pair)
        disp = dispatch_costs(pair, quick)
        if pair.rank == 0:
            out = {"latency": latency, "bandwidth": bandwidth, **rates, **disp,
                   "cores": cpu_count()}
        pair.Free()
    comm.Barrier()
    return out


def document(machine: dict) -> dict:
    """The calibration file's content: the figures and where they were measured."""
    import mpi4py

    return {
        "machine": machine,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "versions": {"numpy": np.__version__, "mpi4py": mpi4py.__version__,
                     "mpi": MPI.Get_library_version().splitlines()[0].strip()},
    }


def summary(machine: dict, path: Path) -> str:
    return "\n".join([
        f"mpimat calibrate: saved to {path}",
        f"  latency (alpha)     {machine['latency'] * 1e6:10.2f} us per message (one way, 8 bytes)",
        f"  bandwidth (1/beta)  {machine['bandwidth'] / 1e9:10.2f} GB/s",
        f"  gflops (gamma)      {machine['gflops']:10.2f} GFLOP/s float64 matmul, 1 BLAS thread",
        f"  gflops_noblas       {machine['gflops_noblas']:10.3f} GFLOP/s int64 matmul",
        f"  dot_call            {machine['dot_call'] * 1e6:10.2f} us per task, dot strategy on 1 rank",
        f"  dot_gflops          {machine['dot_gflops']:10.2f} GFLOP/s long dot products",
        f"  blas_setup          {machine['blas_setup'] * 1e3:10.2f} ms per local product (threadpoolctl)",
        f"  dispatch_batch      {machine['dispatch_batch'] * 1e6:10.2f} us per message (dot dispatcher)",
        f"  dispatch_task       {machine['dispatch_task'] * 1e6:10.2f} us per task (dot dispatcher)",
        f"  dispatch_element    {machine['dispatch_element'] * 1e9:10.2f} ns per element of k (dot dispatcher)",
        f"  cores               {machine['cores']:10d}",
    ])


def run(args, comm: MPI.Comm) -> int:
    """The subcommand; bad input raises InputError, which cli.main reports (exit 2)."""
    if comm.size < 2:
        raise InputError("calibrate measures latency and bandwidth between two ranks: "
                         f"run it as `{Path(sys.executable).with_name('mpiexec')} -n 2 "
                         f"{Path(sys.executable).name} -m mpimat calibrate`")
    path = Path(args.save).expanduser() if args.save else calibration.default_path()
    figures = measure(comm, args.quick)

    def decide():
        calibration.save(path, document(figures))
        if args.json:
            print(path.read_text(), end="", flush=True)
        else:
            print(summary(figures, path), flush=True)
        return {}

    agree(comm, 0, decide if comm.rank == 0 else None)
    return EXIT_OK
