"""`--strategy summa`: the job whose matrices never live on one rank (mpimat.dist).

Inputs are read in parallel (MPI-IO, each rank its block) or generated in
place (the same matrices as the root path for a seed), multiplied by SUMMA,
verified by Freivalds without gathering, and written in parallel.  The
report keeps the job's keys; for summa: load = parallel read or in-place
generation, distribute = redistribution between grids (normally 0),
compute = SUMMA (its panel broadcasts included), gather = 0 (C stays in
blocks), write = the collective write, verify = the distributed check.
--kernel reaches SUMMA's panel products (dist.matmul's kernel=), and the
report's `kernel` says which ran; the events hold each panel and wait.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

import numpy as np
from mpi4py import MPI

from .. import calibration, control, dist, kernels, memory, model, report
from ..dist import npyio
from ..dist.layout import BlockLayout, as_grid, choose_summa_grid
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_VERIFY, InputError
from ..fileio import npy_bytes, open_regular, read_header
from ..operands import check_dtype, result_dtype
from ..stats import Stats
from ..verify import Verdict
from .outputs import announce, commit, gather_ranks, versions
from .progress import Progress


def problem(args) -> dict:
    """Rank 0: the product's shape and dtypes, from the headers or the flags (no data read)."""
    if args.a is None:
        m, k, n = args.dims
        dtype = np.dtype(args.dtype or np.float64)
        return {"m": m, "k": k, "n": n, "dtype_a": dtype.str, "dtype_b": dtype.str}
    shapes = []
    for flag, path in (("--a", args.a), ("--b", args.b)):
        with open_regular(path, f"{flag} {path}") as fp:
            shape, _, dtype = read_header(fp, path)
        check_dtype(dtype, f"{flag} {path}")
        if len(shape) != 2:
            raise InputError(f"{flag} {path}: --strategy summa multiplies 2-D matrices, got shape {shape}")
        shapes.append((shape, np.dtype(args.dtype) if args.dtype is not None else dtype.newbyteorder("=")))
    (a_shape, dtype_a), (b_shape, dtype_b) = shapes
    if a_shape[1] != b_shape[0]:
        raise InputError(f"shape mismatch: A is {a_shape[0]}x{a_shape[1]} and B is {b_shape[0]}x{b_shape[1]}: "
                         f"A's columns ({a_shape[1]}) must equal B's rows ({b_shape[0]})")
    return {"m": a_shape[0], "k": a_shape[1], "n": b_shape[1], "dtype_a": dtype_a.str, "dtype_b": dtype_b.str}


def memory_need(shape: dict, grid, rank: int, width: int) -> int:
    """Bytes this rank holds: its blocks of A, B and C and two panels of each operand (`width` wide)."""
    m, k, n = shape["m"], shape["k"], shape["n"]
    sa, sb = np.dtype(shape["dtype_a"]).itemsize, np.dtype(shape["dtype_b"]).itemsize
    sc = result_dtype(np.dtype(shape["dtype_a"]), np.dtype(shape["dtype_b"])).itemsize
    a = BlockLayout((m, k), grid).block_of(rank)
    b = BlockLayout((k, n), grid).block_of(rank)
    c = BlockLayout((m, n), grid).block_of(rank)
    rows, cols = c.shape
    width = width if k else 0
    return (a.shape[0] * a.shape[1] * sa + b.shape[0] * b.shape[1] * sb + rows * cols * sc
            + 2 * width * (rows * sa + cols * sb))


def choose_panel(shape: dict, grid, budget: float) -> int:
    """Rank 0: SUMMA's panel width for this job, as the cost model picks it
    (model.summa_panel_width) for the saved calibration's machine, else the
    model's defaults, within `budget`, the least memory any rank may use."""
    mach = calibration.load_or_defaults()
    return model.summa_panel_width(shape["m"], shape["k"], shape["n"], grid, mach, np.dtype(shape["dtype_a"]),
                                   np.dtype(shape["dtype_b"]), memory=budget)


def choose_grid(args, shape: dict, ranks: int, auto: Optional[dict] = None) -> list:
    """Rank 0: --grid (checked against the job's ranks), auto's, or the grid moving the fewest bytes."""
    if args.grid is not None:
        if args.grid.size != ranks:
            raise InputError(f"--grid {args.grid} has {args.grid.size} ranks but the job has {ranks}")
        return [args.grid.rows, args.grid.cols]
    if auto and auto.get("grid"):
        return list(auto["grid"])
    grid = choose_summa_grid(shape["m"], shape["k"], shape["n"], ranks, np.dtype(shape["dtype_a"]).itemsize,
                             np.dtype(shape["dtype_b"]).itemsize)
    return [grid.rows, grid.cols]


def run(args, comm: MPI.Comm, writers: dict, shape: dict, grid: list, auto: Optional[dict] = None) -> int:
    """The distributed job (writers: rank 0's checked AtomicWriters; shape, grid: agreed on rank 0)."""
    stats = Stats()
    root = 0
    stats.record(memory_budget_bytes=int(min(memory.available()[0], 2 ** 62)), host=MPI.Get_processor_name())
    if auto:
        stats.record(auto=auto)
    m, k, n = shape["m"], shape["k"], shape["n"]
    dtype_a, dtype_b = np.dtype(shape["dtype_a"]), np.dtype(shape["dtype_b"])
    grid = as_grid(tuple(grid), comm.size)
    # The panel width: rank 0's model (its calibration file), within the least memory of any rank.
    budget = comm.allreduce(min(memory.available()[0], 2.0 ** 62), op=MPI.MIN)
    width = control.agree(comm, root, (lambda: choose_panel(shape, grid, budget)) if comm.rank == root else None)
    # Every rank checks what it will hold, before anything is read or made.
    control.refuse_if_any(comm, root, memory.shortfall(memory_need(shape, grid, comm.rank, width),
                                                       f"rank {comm.rank} (its blocks of A, B and C)"),
                          ": use more ranks (each holds less)")
    comm.Barrier()
    stats.origin = time.perf_counter()
    show = comm.rank == root and not args.quiet and (args.progress or sys.stderr.isatty())
    with Progress(stats, show):
        with stats.phase("load"):
            kernels.preload(args.kernel)  # torch's import (seconds) belongs in a phase
            if args.a is not None:
                A = dist.load_npy(args.a, comm, root, grid=grid, dtype=args.dtype)
                B = dist.load_npy(args.b, comm, root, grid=grid, dtype=args.dtype)
            else:
                A = dist.random((m, k), dtype_a, args.seed, comm, "A", grid=grid)
                B = dist.random((k, n), dtype_b, args.seed, comm, "B", grid=grid)
        # --kernel as for tiles: numpy for the dtypes the kernel does not do exactly as numpy
        # (dist.matmul records the kernel that ran, for the report).
        C = dist.matmul(A, B, grid=grid, panel=width, stats=stats, blas_threads=args.blas_threads,
                        kernel=args.kernel)
        stats.add("gather", 0.0)
        code, failure, tmp = EXIT_OK, None, None
        with stats.phase("verify"):
            verdict = dist.freivalds(A, B, C, root=root) if args.verify == "freivalds" else \
                Verdict("none", True, "not verified")
        if not verdict.passed:
            code = EXIT_VERIFY
        elif args.out is not None:
            with stats.phase("write"):
                try:
                    tmp = npyio.write_npy(args.out, C, root)
                except InputError as exc:  # a late failure: the same on every rank
                    code, failure = EXIT_FAILURE, str(exc).replace("path=", "--out ", 1)
    per_rank, code, failure = gather_ranks(comm, stats, root, code, failure)
    if comm.rank == root:
        dtype_c = C.dtype
        rep = report.build(
            shape=[m, k, n], dtype_a=str(dtype_a), dtype_b=str(dtype_b), dtype_c=str(dtype_c),
            inputs="files" if args.a else "random", seed=None if args.a else args.seed, ranks=comm.size,
            strategy=args.strategy, phases=stats.phases, recorded=stats.extra, per_rank=per_rank,
            verification=verdict.as_dict(), exit_code=code,
            sizes={"A": m * k * dtype_a.itemsize, "B": k * n * dtype_b.itemsize, "C": m * n * dtype_c.itemsize},
            versions=versions(), out=args.out if code == EXIT_OK and args.out is not None else None)
        code, failure = commit(writers, rep, code, failure, out=lambda: npyio.commit_npy(tmp, args.out))
        if tmp is not None and code != EXIT_OK:
            npyio.discard_npy(tmp)
        announce(rep, code, failure, verdict, args.quiet)
    return int(control.bcast_json(comm, code, root))


def space_needed(shape: dict) -> int:
    dtype_c = result_dtype(np.dtype(shape["dtype_a"]), np.dtype(shape["dtype_b"]))
    return npy_bytes((shape["m"], shape["n"]), dtype_c)
