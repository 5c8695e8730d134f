"""The job: `python -m mpimat [options]` multiplies two matrices and reports.

    mpiexec -n 4 python -m mpimat                                  # default job
    mpiexec -n 8 python -m mpimat --a A.npy --b B.npy --out C.npy
    mpiexec -n 2 python -m mpimat --shape 8192 8192 8192 --dtype float32 --report run.json

`run(args, comm)` returns the exit code, the same on every rank.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time

import numpy as np
from mpi4py import MPI

from .. import api, control, generate, memory, report, verify
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_VERIFY, InputError
from ..fileio import AtomicWriter, OutputError, load_npy, npy_bytes, printable, same_file
from ..operands import as_matrices, result_dtype
from ..partition import parse_grid
from ..stats import Stats
from .args import ArgumentParser, dtype_arg, nonneg, positive

DEFAULT_SIZE = 2048
OUTPUTS = ("out", "report", "trace")  # committed in this order, --out last
LAUNCHER = os.getppid()  # the process that started this rank (mpiexec's proxy, slurmstepd, a shell)


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
                     help=f"how dot products are assigned: {', '.join(api.strategy_names())} (default tiles)")
    run.add_argument("--grid", metavar="PRxPC", help="force the process grid (default: fewest bytes moved)")
    run.add_argument("--blas-threads", type=positive, metavar="N",
                     help="BLAS threads per rank (default 1 when ranks share a node, else BLAS's default)")
    run.add_argument("--kernel", choices=("numpy", "torch", "auto"), default="numpy",
                     help="local products: numpy (default), torch (CPU, zero copy; numpy for the dtypes torch does "
                          "not do exactly as numpy) or auto (the faster per dtype, as calibrate measured)")
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
    if args.strategy not in api.strategy_names():
        raise InputError(f"unknown --strategy {args.strategy!r} (choose from {', '.join(api.strategy_names())})")
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


class Progress:
    """A one-line phase display on rank 0's terminal for runs over half a second."""

    def __init__(self, stats: Stats, enabled: bool):
        self.stats, self.enabled = stats, enabled
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True) if enabled else None
        self.shown = False

    def __enter__(self):
        if self.thread:
            self.thread.start()
        return self

    def loop(self):
        start = time.perf_counter()
        while not self.done.wait(0.25):
            phase = self.stats.current
            if phase and time.perf_counter() - start > 0.5:
                spent = time.perf_counter() - self.stats.phase_started
                sys.stderr.write(f"\rmpimat: {phase:<10} {spent:7.1f} s   ")
                sys.stderr.flush()
                self.shown = True

    def __exit__(self, *exc):
        if self.thread:
            self.done.set()
            self.thread.join()
            if self.shown:
                sys.stderr.write("\r" + " " * 40 + "\r")
                sys.stderr.flush()


def load_inputs(args, stats: Stats):
    """Rank 0: read or generate A and B (an InputError on bad files or too little memory)."""
    with stats.phase("load"):
        if args.a is not None:
            A = load_npy(args.a, args.dtype, what=f"--a {args.a}")
            B = load_npy(args.b, args.dtype, what=f"--b {args.b}")
        else:
            m, k, n = args.dims
            dtype = np.dtype(args.dtype or np.float64)
            # Rank 0 will hold A, B and C: refuse before generating anything.
            need = (m * k + k * n) * dtype.itemsize + m * n * result_dtype(dtype, dtype).itemsize
            short = memory.shortfall(need, f"rank 0 (A, B and C of {m}x{k} @ {k}x{n} {dtype})")
            if short:
                raise InputError(f"{short}; use smaller matrices or run where rank 0 has more memory")
            A, B = generate.random_pair(m, k, n, dtype, args.seed)
    return A, B


def check_outputs(args) -> dict:
    """Rank 0: the AtomicWriters of --out and --report, after refusing paths that clash."""
    writers = {}
    for flag in OUTPUTS:
        path = getattr(args, flag)
        if path is not None:
            writers[flag] = AtomicWriter(path, f"--{flag}")
    for i, one in enumerate(writers):
        for other in list(writers)[i + 1:]:
            if same_file(getattr(args, one), getattr(args, other)):
                raise InputError(f"--{one} {getattr(args, one)} and --{other} {getattr(args, other)} are the same file")
    # --out may replace an input (inputs are read first); a report or trace would destroy one.
    for flag in ("report", "trace"):
        for source in ("a", "b"):
            if flag in writers and getattr(args, source) and same_file(getattr(args, flag), getattr(args, source)):
                raise InputError(f"--{flag} {getattr(args, flag)} is the input --{source}: refusing to overwrite it")
    return writers


def versions() -> dict:
    import mpi4py

    from .. import __version__

    out = {
        "mpimat": __version__, "numpy": np.__version__, "mpi4py": mpi4py.__version__,
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
        "python": platform.python_version(),
    }
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info()
                       if i.get("user_api") == "blas"]
    except Exception:  # informational only
        pass
    return out


def run(args, comm: MPI.Comm) -> int:
    """The job itself; returns the exit code (the same on every rank).

    Outputs are written out of sight first and put in place only when
    everything else has succeeded, --out last (fileio.AtomicWriter).
    """
    stats = Stats()
    root = 0
    writers = {}
    A = B = None
    stats.record(memory_budget_bytes=int(min(memory.available()[0], 2 ** 62)), host=MPI.Get_processor_name())

    def decide():
        nonlocal A, B, writers
        writers = check_outputs(args)
        A, B = load_inputs(args, stats)
        if "out" in writers:  # refuse now rather than after the whole computation
            dtype_c = result_dtype(A.dtype, B.dtype)
            A2, B2 = as_matrices(A, B)
            writers["out"].check_space(npy_bytes((A2.shape[0], B2.shape[1]), dtype_c))
        # Shapes, dtypes and the grid are matmul's to check (it broadcasts
        # its own verdict); here only what matmul cannot see: files, paths.
        return {}

    comm.Barrier()
    stats.origin = time.perf_counter()  # the timeline's zero, the same moment on every rank
    control.agree(comm, root, decide if comm.rank == root else None)
    # Only the dot strategy takes these flags (auto decides its own).
    options = {"tasks_per_message": args.tasks_per_message, "keep_blocks": args.keep_blocks} \
        if args.strategy == "dot" else {}
    show = comm.rank == root and not args.quiet and (args.progress or sys.stderr.isatty())
    failure = None  # the one line of a late failure (exit 1)
    with Progress(stats, show):
        C = api.matmul(A, B, comm=comm, root=root, grid=args.grid, strategy=args.strategy,
                       blas_threads=args.blas_threads, kernel=args.kernel, stats=stats, **options)
        code = EXIT_OK
        if comm.rank == root:
            # numpy's shape for vectors; checked and reported as matrices.
            C = np.asarray(C)
            A, B = as_matrices(A, B)
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
    # A rank whose launcher died (its parent changed) is an orphan of a job
    # mpiexec has already given up on: then nothing is committed.
    gathered = control.gather_json(comm, {"stats": stats.as_dict(), "whole": os.getppid() == LAUNCHER},
                                   root)
    if comm.rank == root:
        per_rank = [g["stats"] for g in gathered]
        if code == EXIT_OK and not all(g["whole"] for g in gathered):
            lost = [r for r, g in enumerate(gathered) if not g["whole"]]
            code, failure = EXIT_FAILURE, f"the launcher of rank(s) {lost} is gone: nothing written"
        rep = report.build(
            shape=[A.shape[0], A.shape[1], B.shape[1]], dtype_a=str(A.dtype), dtype_b=str(B.dtype),
            dtype_c=str(C.dtype), inputs="files" if args.a else "random",
            seed=None if args.a else args.seed, ranks=comm.size, strategy=args.strategy,
            phases=stats.phases, recorded=stats.extra, per_rank=per_rank,
            verification=verdict.as_dict(), exit_code=code,
            sizes={"A": int(A.nbytes), "B": int(B.nbytes), "C": int(C.nbytes)},
            versions=versions(), out=args.out if code == EXIT_OK and "out" in writers else None)
        code, failure = commit(writers, rep, code, failure)
        if not args.quiet:
            print(report.human(rep), flush=True)
        if code == EXIT_VERIFY:
            print(f"mpimat: error: verification failed: {verdict.detail}", file=sys.stderr, flush=True)
        elif failure:
            print(f"mpimat: error: {printable(failure)}", file=sys.stderr, flush=True)
    return int(control.bcast_json(comm, code, root))


def commit(writers: dict, rep: dict, code: int, failure):
    """Rank 0: write the report, then put --out in place, only if all went well; (code, failure)."""
    try:
        if "report" in writers:
            writers["report"].write_text(json.dumps(rep, indent=2) + "\n")
        if "trace" in writers:
            writers["trace"].write_text(json.dumps(report.chrome_trace(rep)) + "\n")
        if "out" in writers and code == EXIT_OK:
            writers["out"].commit()
    except OutputError as exc:
        code, failure = EXIT_FAILURE, str(exc)
    finally:
        if "out" in writers:
            writers["out"].discard()  # nothing, once committed
    return code, failure
