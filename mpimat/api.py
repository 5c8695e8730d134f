"""The library entry point: `matmul(A, B, comm=comm, root=0)`, and the strategy registry.

A and B are read on the root only; C comes back on the root and None
elsewhere.  The root validates the inputs and options and broadcasts the
whole job (shapes, dtypes, orders, grid, strategy, options) before any data
moves, so bad input raises the same exception on every rank of the
communicator instead of hanging the others, and every rank runs with the
root's decisions.  Nothing in the library imports this module: strategies
get what they need in a Job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional

import numpy as np
from mpi4py import MPI

from . import auto, compute, control, kernels, memory, options as strategy_options
from .errors import InputError
from .operands import (as_matrices, as_numpy_result, check_operands, order_of, out_mismatch, result_dtype,
                       result_shape, shared_mismatch)
from .partition import Grid, grid_for, parse_grid
from .session import Session, session
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
    options: object  # options.TilesOptions / DotOptions / None
    session: Session  # what is cached on the caller's communicator (grid communicators)
    kernel: kernels.Kernel  # who multiplies the local panels (kernels.py)
    # What a strategy works out from the job (its panel plan), kept with the
    # job: the session keeps jobs between calls, so a loop plans once.
    derived: dict = field(default_factory=dict)
    # Every rank reads A and B from memory shared with the root (matmul's
    # shared=True, one node): the tiles strategy sends no input data.
    shared: bool = False
    # matmul's out=: numpy's shape of the result the caller gave memory for (None: no out=).
    out_shape: Optional[tuple] = None

    @property
    def shared_out(self) -> bool:
        """Every rank writes its tiles into out= itself (shared with the root): no result travels."""
        return self.shared and self.out_shape is not None


# Strategy name -> run(A, B, job, stats) returning C on the root.
STRATEGIES: Dict[str, Callable] = {}
# Strategy name -> memory_need(job): bytes the calling rank will allocate.
MEMORY_NEEDS: Dict[str, Callable] = {}
# Strategies whose run() takes out= (the (m, n) view of it) and computes C there;
# for the others matmul copies C into out=.
WRITES_OUT = set()
# Products whose A + B + C are smaller than this skip the memory check (and its two messages).
CHECK_MEMORY_BYTES = 64 << 20


def register(name: str, run: Callable, memory_need: Optional[Callable] = None, writes_out: bool = False) -> None:
    STRATEGIES[name] = run
    if memory_need is not None:
        MEMORY_NEEDS[name] = memory_need
    (WRITES_OUT.add if writes_out else WRITES_OUT.discard)(name)


def strategy_names():
    """What `strategy=` accepts: the registered strategies and "auto"."""
    return sorted([*STRATEGIES, "auto"])


def choose_kernel(name, dtype_a, dtype_b) -> str:
    """The kernel that runs for `name` and these dtypes: numpy wherever the other would differ."""
    try:
        return kernels.resolve(name, dtype_a, dtype_b).name
    except (kernels.KernelUnavailable, ValueError) as exc:  # a missing library, an unknown name
        raise InputError(str(exc)) from None


def decide_job(A: np.ndarray, B: np.ndarray, size: int, grid, strategy: str,
               blas_threads: Optional[int], given_options: dict, kernel: str = "numpy",
               shared: bool = False, out_shape: Optional[tuple] = None) -> dict:
    """The root's description of the job, as a JSON-able dict (raises InputError)."""
    if strategy not in STRATEGIES and strategy != "auto":
        raise InputError(f"unknown strategy={strategy!r} (choose from {', '.join(strategy_names())})")
    (m, k), n = A.shape, B.shape[1]
    dtype_c = result_dtype(A.dtype, B.dtype)
    if isinstance(grid, str):
        grid = parse_grid(grid)
    grid = grid_for(m, k, n, size, grid, A.itemsize, B.itemsize)
    if blas_threads is not None and (isinstance(blas_threads, bool) or not isinstance(blas_threads, (int, np.integer))
                                     or blas_threads < 1):
        raise InputError(f"blas_threads= must be a whole number of at least 1, got {blas_threads!r}")
    chosen = None
    if strategy == "auto":
        # The model decides strategy, grid and options; options given to auto
        # are checked against no strategy, so none are accepted.
        strategy_options.check("auto", given_options)
        chosen = auto.choose(m, k, n, size, dtype_c)
        strategy, given_options = chosen["strategy"], chosen["options"]
        if chosen["grid"]:
            grid = Grid(*chosen["grid"])
    return {
        "m": m, "k": k, "n": n,
        "dtype_a": A.dtype.str, "dtype_b": B.dtype.str, "dtype_c": dtype_c.str,
        "order_a": order_of(A), "order_b": order_of(B),
        "grid": [grid.rows, grid.cols], "strategy": strategy,
        "options": strategy_options.check(strategy, given_options),
        "auto": chosen,
        # The dot strategy's one-element products stay numpy's.
        "kernel": choose_kernel(kernel, A.dtype, B.dtype) if strategy == "tiles" else "numpy",
        # Only the tiles strategy reads shared operands; the others send the root's.
        "shared": bool(shared) and strategy == "tiles",
        "out_shape": None if out_shape is None else list(out_shape),
    }


def call_key(A, B, grid, strategy: str, blas_threads, kernel: str, given_options: dict, shared=False,
             has_out: bool = False):
    """What check_operands and decide_job read from a call, hashable; None for a call the root
    checks afresh (array-likes and subclasses, which asarray converts; unhashable options).

    Shape, strides and dtype fix the checks' outcome (contiguity follows from
    them, byte order from the dtype); options keep their types (True and 1
    are different options).
    """
    if type(A) is not np.ndarray or type(B) is not np.ndarray:
        return None
    key = (A.shape, A.strides, A.dtype, B.shape, B.strides, B.dtype, type(grid), grid, strategy,
           type(blas_threads), blas_threads, kernel, type(shared), shared, has_out,
           tuple((name, type(value), value) for name, value in sorted(given_options.items())) if given_options else ())
    try:
        hash(key)
    except TypeError:
        return None
    return key


def remembered_decision(cached: Session, A, B, grid, strategy: str, blas_threads, given_options: dict,
                        kernel: str, shared=False, has_out: bool = False) -> tuple:
    """(A, B, ndims, plan): the root's checked operands as matrices, their numbers of
    dimensions and decide_job's plan, checked and decided once per distinct call.

    A solver repeats the same few calls: a repeat skips check_operands and
    decide_job (raises InputError like them).  Only calls whose operands
    needed no copy are remembered, so a repeat passes A and B on as given.
    A calibration saved after the first such call is seen by new shapes only.
    """
    key = call_key(A, B, grid, strategy, blas_threads, kernel, given_options, shared, has_out)
    known = cached.decisions.get(key) if key is not None else None
    if known is not None:
        return (*as_matrices(A, B), *known)
    if not isinstance(shared, (bool, np.bool_)):
        raise InputError(f"shared= must be True or False, got {shared!r}")
    A2, B2 = check_operands(A, B)
    as_given = A2 is A and B2 is B
    if shared and cached.ranks_on_node != cached.comm.size:
        raise InputError(f"shared=True needs every rank of comm on one node: {cached.ranks_on_node} of "
                         f"{cached.comm.size} share the root's")
    if shared and not as_given:
        # A converted copy lives on the root only: the others' views would differ.
        raise InputError("shared=True needs A and B as the tiles strategy reads them: native byte order, C or "
                         "Fortran order (the root would otherwise multiply a converted copy)")
    ndims = A2.ndim, B2.ndim
    # Vectors (numpy's 1-D rules) travel as 1-row / 1-column matrices.
    A2, B2 = as_matrices(A2, B2)
    out_shape = result_shape(A2.shape[0], B2.shape[1], *ndims) if has_out else None
    plan = decide_job(A2, B2, cached.comm.size, grid, strategy, blas_threads, given_options, kernel, shared,
                      out_shape)
    if key is not None and as_given:
        cached.decisions.put(key, (ndims, plan))
    return A2, B2, ndims, plan


def agreed_job(cached: Session, root: int, data: bytes) -> dict:
    """The settled verdict (control.settle's bytes) with, when it is a plan, the Job it
    describes: made once per distinct verdict on every rank alike (a loop repeats them)."""
    def make():
        verdict = json.loads(data)
        if verdict["ok"]:
            verdict["plan"] = (verdict["plan"], make_job(cached, root, verdict["plan"]))
        return verdict

    return cached.jobs((root, data), make)


def make_job(cached: Session, root: int, agreed: dict) -> Job:
    """Every rank's Job for the agreed plan (blas_threads: this rank's default; matmul sets the caller's)."""
    return Job(
        comm=cached.comm, root=root, session=cached, m=agreed["m"], k=agreed["k"], n=agreed["n"],
        dtype_a=np.dtype(agreed["dtype_a"]), dtype_b=np.dtype(agreed["dtype_b"]),
        dtype_c=np.dtype(agreed["dtype_c"]), order_a=agreed["order_a"], order_b=agreed["order_b"],
        grid=Grid(*agreed["grid"]), strategy=agreed["strategy"],
        blas_threads=compute.default_blas_threads(cached.ranks_on_node),
        options=strategy_options.build(agreed["strategy"], agreed["options"]),
        kernel=control.agree_kernel(cached.comm, agreed["kernel"], agreed["dtype_a"], agreed["dtype_b"]),
        shared=agreed["shared"],
        out_shape=None if agreed["out_shape"] is None else tuple(agreed["out_shape"]),
    )


def check_memory(job: Job) -> None:
    """Refuse, on every rank, a product some rank cannot hold (before anything is allocated)."""
    total = job.m * job.k * job.dtype_a.itemsize + job.k * job.n * job.dtype_b.itemsize \
        + job.m * job.n * job.dtype_c.itemsize
    need = MEMORY_NEEDS.get(job.strategy)
    if need is None or total < CHECK_MEMORY_BYTES:
        return
    complaint = memory.shortfall(need(job), f"rank {job.comm.rank} (its part of {job.m}x{job.k} @ {job.k}x{job.n})")
    advice = ": use more ranks (each holds less) or smaller matrices"
    if job.strategy == "tiles" and job.comm.rank == job.root and complaint:
        complaint += " (the root holds all of C with the root-scatter strategies; mpimat.dist keeps C in blocks)"
    control.refuse_if_any(job.comm, job.root, complaint, advice)


def matmul(A=None, B=None, comm: Optional[MPI.Comm] = None, root: int = 0, *,
           grid=None, strategy: str = "tiles", blas_threads: Optional[int] = None,
           kernel: str = "numpy", shared: bool = False, out: Optional[np.ndarray] = None,
           stats: Optional[Stats] = None, **options) -> Optional[np.ndarray]:
    """C = A @ B computed by every rank of `comm`.

    A and B are needed on `root` only (pass anything, e.g. None, elsewhere).
    Returns C on `root` and None on the other ranks.  The result has numpy's
    dtype, values and shape for every dtype numpy's `@` accepts and for 1-D
    operands (numpy's rules: `A @ x` and `x @ B` are vectors, `x @ y` a
    scalar); stacks of matrices (3-D and more) are refused.

    grid: "PRxPC" or a partition.Grid to force the process grid (default:
    the grid that moves the fewest bytes).  strategy: "tiles", "dot" or
    "auto" (the cost model picks strategy, grid and options).
    blas_threads: BLAS threads per rank (default: 1 when ranks share a node,
    BLAS's default otherwise).  kernel: "numpy", "torch" (CPU, zero copy;
    only for the dtypes it multiplies exactly as numpy, numpy elsewhere) or
    "auto" (the faster one for the dtype, as calibrate measured it); the
    report's `kernel` says which ran.  shared: every rank passes its own
    view of the same A and B (memory shared with the root on one node, e.g.
    nodemem.NodeArrays): the tiles strategy then sends no input data, each
    rank reading its rows and columns in place (the other strategies send
    the root's as usual); the other ranks' views must have the root's
    shapes, dtypes and memory order.  out: where the root's C goes (and is
    returned): numpy's result shape and dtype, C-contiguous, writeable; with
    shared=True every rank passes its view of the same out (shared memory)
    and writes its tiles there itself, so no result travels either.
    options: the strategy's own (options.py:
    TilesOptions, DotOptions); only the root's values count.
    Bad input raises ValueError or TypeError on every rank (an unknown option
    name is a TypeError).
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    stats = Stats() if stats is None else stats
    # The private duplicate of comm and what derives from it, made by the first call.
    cached = session(comm)
    comm = cached.comm
    ndims = None
    if comm.rank == root:
        def decide():
            nonlocal A, B, ndims
            A, B, ndims, plan = remembered_decision(cached, A, B, grid, strategy, blas_threads, options, kernel,
                                                    shared, out is not None)
            if out is not None:  # checked every call: a loop may pass new memory
                wrong = out_mismatch(out, tuple(plan["out_shape"]), plan["dtype_c"])
                if wrong:
                    raise InputError(wrong)
            return plan
    else:
        decide = None
    # One small allreduce: every rank names the same root, and learns the job.
    agreed, job = control.settle(comm, root, decide, cached.scratch,
                                 parse=lambda data: agreed_job(cached, root, data), encode=cached.encode)
    if blas_threads is not None and blas_threads != job.blas_threads:
        job = replace(job, blas_threads=blas_threads)
    if job.shared:  # each rank checks its own views; a mismatch is refused on every rank
        mismatch = None if comm.rank == root else shared_mismatch(
            A, B, job.m, job.k, job.n, job.dtype_a, job.dtype_b, job.order_a, job.order_b) or (
            job.shared_out and out_mismatch(out, job.out_shape, job.dtype_c)) or None
        control.refuse_if_any(comm, root, mismatch and f"shared=True: rank {comm.rank}'s {mismatch}",
                              advice=" (every rank passes its own view of the root's A and B)")
        if comm.rank != root:
            A, B = as_matrices(A, B)
    elif comm.rank != root:
        A = B = None  # only the root's count
    if comm.rank != root and not job.shared_out:
        out = None
    check_memory(job)
    stats.record(grid=str(job.grid), blas_threads=job.blas_threads, kernel=job.kernel.name, shared=job.shared)
    if agreed["auto"]:
        stats.record(auto=agreed["auto"])
    out2 = None if out is None else out.reshape(job.m, job.n)  # a view: out is C-contiguous
    if job.strategy in WRITES_OUT:
        C = STRATEGIES[job.strategy](A, B, job, stats, out=out2)
    else:
        C = STRATEGIES[job.strategy](A, B, job, stats)
        if C is not None and out2 is not None:
            out2[...] = C
    if comm.rank != root:
        return None
    return out if out is not None else as_numpy_result(C, *ndims)


def _register_builtin() -> None:
    from . import dot, tiles

    register("tiles", tiles.run, tiles.memory_need, writes_out=True)
    register("dot", dot.run, dot.memory_need)


_register_builtin()
