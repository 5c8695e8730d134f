"""The job: `python -m mpimat [options]` multiplies two matrices and reports.

    mpiexec -n 4 python -m mpimat                                  # default job
    mpiexec -n 8 python -m mpimat --a A.npy --b B.npy --out C.npy
    mpiexec -n 2 python -m mpimat --shape 8192 8192 8192 --dtype float32 --report run.json

`run(args, comm)` returns the exit code, the same on every rank.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from mpi4py import MPI

from .. import api, auto, control, generate, kernels, memory, nodemem, report, verify
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_VERIFY, InputError, PanelCheckError
from ..fileio import OutputError, load_npy, npy_bytes
from ..operands import as_matrices, result_dtype
from ..partition import parse_grid
from ..stats import Stats
from . import summa
from .outputs import announce, check_outputs, commit, gather_ranks, versions
from .progress import Progress
from .args import ArgumentParser, dtype_arg, nonneg, positive

DEFAULT_SIZE = 2048
STRATEGIES = ("auto", "dot", "summa", "tiles")  # api's (root-scatter) and summa (mpimat.dist)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="mpimat",
        description="Distributed dense matrix multiplication C = A @ B over MPI. "
                    "Launch with: mpiexec -n N python -m mpimat [options]. "
                    "Subcommands: plan, calibrate (see `python -m mpimat plan --help`).",
    )
    src = p.add_argument_group("inputs (default: two seeded random 2048x2048 float64 matrices)")
    src.add_argument("--a", metavar="PATH", help="A as a .npy file (read on rank 0)")
    src.add_argument("--b", metavar="PATH", help="B as a .npy file (read on rank 0)")
    src.add_argument("--shape", nargs=3, type=nonneg, metavar=("M", "K", "N"),
                     help="random A (MxK) and B (KxN)")
    src.add_argument("--size", type=nonneg, metavar="N", help="random square NxN matrices")
    src.add_argument("--dtype", type=dtype_arg,
                     help="dtype of random inputs (default float64); with --a/--b, cast both inputs")
    src.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    run = p.add_argument_group("run")
    run.add_argument("--strategy", default="tiles",
                     help=f"how dot products are assigned: {', '.join(STRATEGIES)} (default tiles; summa keeps "
                          "the matrices in blocks from file to file)")
    run.add_argument("--grid", metavar="PRxPC", help="force the process grid (default: fewest bytes moved)")
    run.add_argument("--blas-threads", type=positive, metavar="N",
                     help="BLAS threads per rank (default 1 when ranks share a node, else BLAS's default)")
    run.add_argument("--kernel", choices=("numpy", "torch", "auto"), default="numpy",
                     help="local products: numpy (default), torch (CPU, zero copy; numpy for the dtypes torch does "
                          "not do exactly as numpy) or auto (the faster per dtype, as calibrate measured)")
    run.add_argument("--check-panels", action="store_true",
                     help="tiles strategy: every rank checks each result panel it computes (Freivalds) as it "
                          "computes it, so a wrong answer names the rank; --verify still checks C")
    run.add_argument("--tasks-per-message", type=positive, default=1, metavar="K",
                     help="dot strategy: tasks batched per message (default 1)")
    run.add_argument("--keep-blocks", action="store_true",
                     help="dot strategy: workers keep rows/columns they already hold")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="PATH", help="write C as .npy (atomically)")
    out.add_argument("--verify", choices=("none", "freivalds", "exact"), default="freivalds",
                     help="check the product (default freivalds)")
    out.add_argument("--report", metavar="PATH", help="write a JSON report")
    out.add_argument("--trace", metavar="PATH",
                     help="write every rank's phases and panels as a Chrome trace (open in Perfetto or "
                          "chrome://tracing); `python -m mpimat report REPORT --timeline PNG` draws them")
    out.add_argument("--quiet", action="store_true", help="no report or progress on stdout/stderr")
    out.add_argument("--progress", action="store_true",
                     help="show a progress line on rank 0's stderr even when it is not a terminal "
                          "(under mpiexec a rank's stderr is always a pipe)")
    return p


def check_args(args):
    """The job's checks across options, after argparse's own."""
    if (args.a is None) != (args.b is None):
        raise InputError("--a and --b go together")
    if args.a is not None and (args.shape or args.size is not None):
        raise InputError("--a/--b and --shape/--size are exclusive")
    if args.shape and args.size is not None:
        raise InputError("--shape and --size are exclusive")
    if args.strategy not in STRATEGIES:
        raise InputError(f"unknown --strategy {args.strategy!r} (choose from {', '.join(STRATEGIES)})")
    if args.check_panels and args.strategy != "tiles":
        raise InputError("--check-panels checks the tiles strategy's panels: use it with --strategy tiles")
    if args.grid is not None:
        try:
            args.grid = parse_grid(args.grid)
        except ValueError as exc:  # it names grid=: main() speaks of --grid
            raise InputError(str(exc)) from None
    if args.shape:
        args.dims = tuple(args.shape)
    else:
        n = DEFAULT_SIZE if args.size is None else args.size
        args.dims = (n, n, n)
    return args


def check_random_memory(args) -> None:
    """Rank 0 will hold random A, B and C: refuse before generating anything."""
    m, k, n = args.dims
    dtype = np.dtype(args.dtype or np.float64)
    need = (m * k + k * n) * dtype.itemsize + m * n * result_dtype(dtype, dtype).itemsize
    short = memory.shortfall(need, f"rank 0 (A, B and C of {m}x{k} @ {k}x{n} {dtype})")
    if short:
        raise InputError(f"{short}; --strategy summa keeps every matrix in blocks over all ranks")


def load_inputs(args, stats: Stats):
    """Rank 0: read or generate A and B (an InputError on bad files or too little memory)."""
    with stats.phase("load"):
        if args.a is not None:
            A = load_npy(args.a, args.dtype, what=f"--a {args.a}")
            B = load_npy(args.b, args.dtype, what=f"--b {args.b}")
        else:
            check_random_memory(args)
            m, k, n = args.dims
            A, B = generate.random_pair(m, k, n, np.dtype(args.dtype or np.float64), args.seed)
    return A, B


def shared_specs(args) -> list:
    """[(shape, dtype)] of random A and B in the shared window.

    C stays in rank 0's private memory, gathered as panels: written into
    the window (4 KiB tmpfs pages) the multiply measured 0.4-0.5 s slower
    at n = 8192 on 2 ranks, more than the gather and a parallel check save.
    """
    m, k, n = args.dims
    dtype = np.dtype(args.dtype or np.float64)
    return [((m, k), dtype), ((k, n), dtype)]


def shares_inputs(args, comm: MPI.Comm, node_ranks: int) -> bool:
    """Rank 0: whether random inputs go to one shared-memory window that every rank
    reads (nodemem), so the tiles strategy sends no input data.

    Only when all ranks share one node and its /dev/shm holds A and B: a
    smaller /dev/shm (a container's) keeps the ordinary path.
    """
    if args.a is not None or comm.size == 1 or node_ranks != comm.size or args.strategy not in ("tiles", "auto"):
        return False
    return nodemem.layout(shared_specs(args))[1] <= nodemem.room()


def shared_inputs(args, comm: MPI.Comm, stats: Stats) -> nodemem.NodeArrays:
    """Collective: random A and B in one window on rank 0's node, every rank generating
    its share of the tiles (generate.fill_pair) with its share of the node's cores."""
    with stats.phase("load"):
        window = nodemem.NodeArrays(comm, shared_specs(args))
        A, B = window.arrays
        threads = max(1, generate.available_cores() // comm.size)
        generate.fill_pair(A, B, args.seed, threads, part=comm.rank, parts=comm.size)
        comm.Barrier()  # every share is written before any rank reads
    return window


def run(args, comm: MPI.Comm) -> int:
    """The job; returns the exit code (the same on every rank).

    --strategy summa (or auto, when the model picks it for data that can
    stay in blocks) runs the distributed job (summa.py); everything else the
    root-scatter job below.
    """
    if args.strategy in ("summa", "auto"):
        root = 0
        writers, shape = {}, None

        def decide():
            nonlocal writers, shape
            shape = summa.problem(args)
            chosen = None
            if args.strategy == "auto":
                # --verify exact needs everything on rank 0: then only root-scatter strategies.
                chosen = auto.choose(shape["m"], shape["k"], shape["n"], comm.size,
                                     result_dtype(np.dtype(shape["dtype_a"]), np.dtype(shape["dtype_b"])),
                                     distributed=args.verify != "exact")
                if chosen["strategy"] != "summa":
                    return {"summa": False}
            elif args.verify == "exact":
                raise InputError("--verify exact gathers A, B and C on rank 0; with --strategy summa use "
                                 "--verify freivalds")
            grid = summa.choose_grid(args, shape, comm.size, chosen)
            writers = check_outputs(args)
            if "out" in writers:
                writers["out"].check_space(summa.space_needed(shape))
            return {"summa": True, "shape": shape, "grid": grid, "auto": chosen}

        agreed = control.agree(comm, root, decide if comm.rank == root else None)
        if agreed["summa"]:
            return summa.run(args, comm, writers, agreed["shape"], agreed["grid"], agreed["auto"])
    return run_root(args, comm)


def run_root(args, comm: MPI.Comm) -> int:
    """The root-scatter job: rank 0 holds A, B and C (tiles, dot, or auto's pick among them).

    Outputs are written out of sight first and put in place only when
    everything else has succeeded, --out last (fileio.AtomicWriter).
    """
    stats = Stats()
    root = 0
    writers = {}
    A = B = None
    stats.record(memory_budget_bytes=int(min(memory.available()[0], 2 ** 62)), host=MPI.Get_processor_name())
    node_ranks = control.ranks_on_node(comm)

    def decide():
        nonlocal A, B, writers
        writers = check_outputs(args)
        shared = shares_inputs(args, comm, node_ranks)
        if shared:  # every rank generates its share into the window, after this verdict
            check_random_memory(args)
            m, _, n = args.dims
            dtype = np.dtype(args.dtype or np.float64)
            dtype_c = result_dtype(dtype, dtype)
        else:
            A, B = load_inputs(args, stats)
            dtype_c = result_dtype(A.dtype, B.dtype)
            A2, B2 = as_matrices(A, B)
            m, n = A2.shape[0], B2.shape[1]
        if "out" in writers:  # refuse now rather than after the whole computation
            writers["out"].check_space(npy_bytes((m, n), dtype_c))
        # Shapes, dtypes and the grid are matmul's to check (it broadcasts
        # its own verdict); here only what matmul cannot see: files, paths.
        return {"shared": shared}

    comm.Barrier()
    stats.origin = time.perf_counter()  # the timeline's zero, the same moment on every rank
    with stats.phase("load"):
        kernels.preload(args.kernel)  # torch's import (seconds) belongs in a phase, not before them
    window = None  # random inputs in shared memory (one node)
    if control.agree(comm, root, decide if comm.rank == root else None, patient=True)["shared"]:
        window = shared_inputs(args, comm, stats)
        A, B = window.arrays
    # Only the dot strategy takes these flags (auto decides its own).  A job
    # runs the scheme asked for, however small: the library's shortcut for a
    # solver's small calls (alone_flops) would make a demonstration send nothing.
    options = {"tasks_per_message": args.tasks_per_message, "keep_blocks": args.keep_blocks} \
        if args.strategy == "dot" else {"alone_flops": 0, "check_panels": args.check_panels} \
        if args.strategy == "tiles" else {}
    show = comm.rank == root and not args.quiet and (args.progress or sys.stderr.isatty())
    failure = None  # the one line of a late failure (exit 1)
    with Progress(stats, show):
        code = EXIT_OK
        try:
            C = api.matmul(A, B, comm=comm, root=root, grid=args.grid, strategy=args.strategy,
                           blas_threads=args.blas_threads, kernel=args.kernel, shared=window is not None,
                           stats=stats, **options)
        except PanelCheckError as exc:  # raised on every rank: a rank computed a wrong panel
            C, code, verdict = None, EXIT_VERIFY, verify.Verdict("panels", False, str(exc))
        if comm.rank == root:
            # numpy's shape for vectors; checked and reported as matrices.
            A, B = as_matrices(A, B)
        if comm.rank == root and C is not None:
            C = np.asarray(C)
            C2 = C.reshape(A.shape[0], B.shape[1])
            with stats.phase("verify"):
                verdict = verify.verify(args.verify, A, B, C2)
            if not verdict.passed:
                code = EXIT_VERIFY
            elif "out" in writers:
                with stats.phase("write"):
                    try:
                        writers["out"].prepare_npy(C)
                    except OutputError as exc:
                        code, failure = EXIT_FAILURE, str(exc)
        control.idle_barrier(comm)  # the other ranks sleep while rank 0 verifies and writes
    # A rank whose launcher died (its parent changed) is an orphan of a job
    # mpiexec has already given up on: then nothing is committed.
    per_rank, code, failure = gather_ranks(comm, stats, root, code, failure)
    if comm.rank == root:
        dtype_c = result_dtype(A.dtype, B.dtype)
        rep = report.build(
            shape=[A.shape[0], A.shape[1], B.shape[1]], dtype_a=str(A.dtype), dtype_b=str(B.dtype),
            dtype_c=str(dtype_c), inputs="files" if args.a else "random",
            seed=None if args.a else args.seed, ranks=comm.size, strategy=args.strategy,
            phases=stats.phases, recorded=stats.extra, per_rank=per_rank,
            verification=verdict.as_dict(), exit_code=code,
            sizes={"A": int(A.nbytes), "B": int(B.nbytes), "C": A.shape[0] * B.shape[1] * dtype_c.itemsize},
            versions=versions(), out=args.out if code == EXIT_OK and "out" in writers else None)
        code, failure = commit(writers, rep, code, failure)
        announce(rep, code, failure, verdict, args.quiet)
    if window is not None:
        A = B = None  # views of the window, which goes now
        window.free()
    return int(control.bcast_json(comm, code, root))
