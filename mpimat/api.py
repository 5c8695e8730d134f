"""The library entry point: `matmul(A, B, comm=comm, root=0)`.

A and B are read on the root only; C comes back on the root and None
elsewhere.  The root validates the inputs and broadcasts its verdict before
any data moves, so bad input raises the same exception on every rank of
the communicator instead of hanging the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np
from mpi4py import MPI

from . import compute
from .control import agree
from .errors import InputError
from .operands import check_operands, order_of, result_dtype
from .partition import Grid, choose_grid, parse_grid
from .stats import Stats


@dataclass
class Job:
    """What every rank agrees on before data moves."""

    comm: MPI.Comm
    root: int
    m: int
    k: int
    n: int
    dtype_a: np.dtype
    dtype_b: np.dtype
    dtype_c: np.dtype
    order_a: str
    order_b: str
    grid: Grid
    strategy: str
    blas_threads: Optional[int]
    options: Dict[str, object]


# Strategy name -> run(A, B, job, stats) returning C on the root.
STRATEGIES: Dict[str, Callable] = {}


def register(name: str, run: Callable) -> None:
    STRATEGIES[name] = run


def plan_job(A: np.ndarray, B: np.ndarray, size: int, grid, strategy: str,
             blas_threads: Optional[int]) -> dict:
    """The root's description of the job, as a JSON-able dict."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r} (choose from {', '.join(sorted(STRATEGIES))})")
    (m, k), n = A.shape, B.shape[1]
    dtype_c = result_dtype(A.dtype, B.dtype)
    if grid is None:
        grid = choose_grid(m, k, n, size, A.itemsize, B.itemsize)
    elif isinstance(grid, str):
        grid = parse_grid(grid)
    if grid.size != size:
        raise InputError(f"--grid {grid} has {grid.size} ranks but the job has {size}")
    if blas_threads is not None and blas_threads < 1:
        raise InputError("--blas-threads must be at least 1")
    return {
        "m": m, "k": k, "n": n,
        "dtype_a": A.dtype.str, "dtype_b": B.dtype.str, "dtype_c": dtype_c.str,
        "order_a": order_of(A), "order_b": order_of(B),
        "grid": [grid.rows, grid.cols], "strategy": strategy,
    }


def make_job(comm: MPI.Comm, root: int, plan: dict, blas_threads: Optional[int], options) -> Job:
    if blas_threads is None:
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        blas_threads = compute.default_blas_threads(local.size)
        local.Free()
    return Job(
        comm=comm, root=root, m=plan["m"], k=plan["k"], n=plan["n"],
        dtype_a=np.dtype(plan["dtype_a"]), dtype_b=np.dtype(plan["dtype_b"]),
        dtype_c=np.dtype(plan["dtype_c"]), order_a=plan["order_a"], order_b=plan["order_b"],
        grid=Grid(*plan["grid"]), strategy=plan["strategy"], blas_threads=blas_threads,
        options=dict(options or {}),
    )


def check_root(comm: MPI.Comm, root: int) -> None:
    # Every rank checks its own argument: no communication, so no hang even
    # when the ranks disagree about what is wrong.
    if not isinstance(root, (int, np.integer)) or not 0 <= root < comm.size:
        raise ValueError(f"root must be a rank of the communicator (0..{comm.size - 1}), got {root!r}")


def matmul(A=None, B=None, comm: Optional[MPI.Comm] = None, root: int = 0, *,
           grid=None, strategy: str = "tiles", blas_threads: Optional[int] = None,
           stats: Optional[Stats] = None, **options) -> Optional[np.ndarray]:
    """C = A @ B computed by every rank of `comm`.

    A and B are needed on `root` only (pass anything, e.g. None, elsewhere).
    Returns C on `root` and None on the other ranks.  The result has numpy's
    dtype and values for every dtype numpy's `@` accepts.

    grid: "PRxPC" or a partition.Grid to force the process grid (default:
    the grid that moves the fewest bytes).  blas_threads: BLAS threads per
    rank (default: 1 when ranks share a node, BLAS's default otherwise).
    Bad input raises ValueError or TypeError on every rank.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    check_root(comm, root)
    stats = Stats() if stats is None else stats
    # A private communicator keeps our messages apart from the caller's.
    comm = comm.Dup()
    try:
        if comm.rank == root:
            def decide():
                nonlocal A, B
                A, B = check_operands(A, B)
                return plan_job(A, B, comm.size, grid, strategy, blas_threads)
        else:
            decide = None
            A = B = None
        plan = agree(comm, root, decide)
        job = make_job(comm, root, plan, blas_threads, options)
        stats.extra["grid"] = str(job.grid)
        stats.extra["blas_threads"] = job.blas_threads
        return STRATEGIES[job.strategy](A, B, job, stats)
    finally:
        comm.Free()


def _register_builtin() -> None:
    from . import dot, plan, tiles

    register("tiles", tiles.run)
    register("dot", dot.run)
    register("auto", plan.run_auto)


_register_builtin()
