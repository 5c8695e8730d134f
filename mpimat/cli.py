"""`python -m mpimat`: the command-line job.

    mpiexec -n 4 python -m mpimat                                  # default job
    mpiexec -n 8 python -m mpimat --a A.npy --b B.npy --out C.npy
    mpiexec -n 2 python -m mpimat --shape 8192 8192 8192 --dtype float32 --report run.json

Exit codes: 0 success, 2 usage or input error, 3 verification failed,
1 anything else.  Every rank exits with the same code.  `main(argv, comm)`
takes the communicator, so tests and other programs can call it; the
abort-on-uncaught-exception safety net is installed once, in `console_main`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import tracemalloc
from typing import List, Optional

import numpy as np
from mpi4py import MPI

from . import api, control, generate, verify
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, EXIT_VERIFY, InputError
from .fileio import AtomicWriter, check_dtype, load_npy
from .partition import parse_grid
from .stats import PHASES, Stats

DEFAULT_SIZE = 2048
# MPIMAT_FAULT (testing hook, used by tests/test_cli.py): "corrupt" flips one
# entry of C before verification; "crash:R" raises on rank R mid-job.
SUBCOMMANDS = {
    # name -> module with main(argv, comm) -> exit code (imported on demand)
    "plan": "mpimat.plan",
    "calibrate": "mpimat.calibrate",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage on every rank."""

    def error(self, message):
        raise InputError(message)

    def exit(self, status=0, message=None):
        if message:
            raise InputError(message.strip())
        raise SystemExit(status)


def dtype_arg(text: str) -> np.dtype:
    try:
        dtype = np.dtype(text)
    except TypeError:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}") from None
    try:
        check_dtype(dtype, "--dtype")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return dtype


def nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def positive(text: str) -> int:
    value = nonneg(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


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
                     help=f"how dot products are assigned: {', '.join(sorted(api.STRATEGIES))} (default tiles)")
    run.add_argument("--grid", metavar="PRxPC", help="force the process grid (default: fewest bytes moved)")
    run.add_argument("--blas-threads", type=positive, metavar="N",
                     help="BLAS threads per rank (default 1 when ranks share a node, else BLAS's default)")
    run.add_argument("--tasks-per-message", type=positive, default=1, metavar="K",
                     help="dot strategy: tasks batched per message (default 1)")
    run.add_argument("--keep-blocks", action="store_true",
                     help="dot strategy: workers keep rows/columns they already hold")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="PATH", help="write C as .npy (atomically)")
    out.add_argument("--verify", choices=("none", "freivalds", "exact"), default="freivalds",
                     help="check the product (default freivalds)")
    out.add_argument("--report", metavar="PATH", help="write a JSON report")
    out.add_argument("--quiet", action="store_true", help="no report or progress on stdout/stderr")
    out.add_argument("--progress", action="store_true",
                     help="show a progress line on rank 0's stderr even when it is not a terminal "
                          "(under mpiexec a rank's stderr is always a pipe)")
    return p


def parse_or_help(parser: argparse.ArgumentParser, argv: List[str], comm: MPI.Comm):
    """Parse argv (the same on every rank); for -h/--help print once, on rank 0, and return None.

    argparse would print the help on every rank; the job and its subcommands
    all come through here.
    """
    if any(a in ("-h", "--help") for a in argv):
        if comm.rank == 0:
            parser.print_help()
        return None
    return parser.parse_args(argv)


def check_args(args):
    """The job's checks across options, after argparse's own."""
    if (args.a is None) != (args.b is None):
        raise InputError("--a and --b go together")
    if args.a is not None and (args.shape or args.size is not None):
        raise InputError("--a/--b and --shape/--size are exclusive")
    if args.shape and args.size is not None:
        raise InputError("--shape and --size are exclusive")
    if args.strategy not in api.STRATEGIES:
        raise InputError(f"unknown --strategy {args.strategy!r} (choose from {', '.join(sorted(api.STRATEGIES))})")
    if args.grid is not None:
        try:
            args.grid = parse_grid(args.grid)
        except ValueError as exc:
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
    """Rank 0: read or generate A and B (an InputError on bad files)."""
    with stats.phase("load"):
        if args.a is not None:
            A = load_npy(args.a, args.dtype, what=f"--a {args.a}")
            B = load_npy(args.b, args.dtype, what=f"--b {args.b}")
        else:
            m, k, n = args.dims
            A, B = generate.random_pair(m, k, n, args.dtype or np.float64, args.seed)
    return A, B


def versions() -> dict:
    import mpi4py

    from . import __version__

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


def human_report(rep: dict) -> str:
    m, k, n = rep["shape"]
    lines = [
        f"mpimat: C = A @ B with A {m}x{k}, B {k}x{n}, {rep['dtype']}, "
        f"{rep['ranks']} ranks, grid {rep['grid']}, strategy {rep['strategy']}",
    ]
    for name in PHASES:
        label = "generate" if name == "load" and rep.get("inputs") == "random" else name
        lines.append(f"  {label:<11}{rep['phases'][name]:10.4f} s")
    lines.append(f"  {'GFLOP/s':<11}{rep['gflops']:10.2f}   (distribute + compute + gather: "
                 f"{rep['matmul_seconds']:.4f} s)")
    if rep.get("tasks") is not None:  # --strategy dot
        lines.append(f"  tasks      {rep['tasks']:,} in {rep['messages']:,} messages, "
                     f"{rep['dot_products_per_second']:,.0f} dot products/s")
    v = rep["verification"]
    verdict = "skipped" if v["method"] == "none" else ("PASSED" if v["passed"] else "FAILED")
    lines.append(f"  verify     {v['method']}: {verdict} ({v['detail']})")
    return "\n".join(lines)


def run_job(args, comm: MPI.Comm) -> int:
    """The job itself; returns the exit code (the same on every rank)."""
    stats = Stats()
    root = 0
    writers = {}
    A = B = None

    def decide():
        nonlocal A, B
        for flag in ("out", "report"):
            if getattr(args, flag):
                writers[flag] = AtomicWriter(getattr(args, flag), f"--{flag}")
        A, B = load_inputs(args, stats)
        # Shapes, dtypes and the grid are matmul's to check (it broadcasts
        # its own verdict); here only what matmul cannot see: files, paths.
        return {}

    control.agree(comm, root, decide if comm.rank == root else None)
    fault = os.environ.get("MPIMAT_FAULT", "")
    if fault == f"crash:{comm.rank}":
        raise RuntimeError("injected fault (MPIMAT_FAULT)")
    options = {"tasks_per_message": args.tasks_per_message, "keep_blocks": args.keep_blocks}
    show = comm.rank == root and not args.quiet and (args.progress or sys.stderr.isatty())
    with Progress(stats, show):
        C = api.matmul(A, B, comm=comm, root=root, grid=args.grid, strategy=args.strategy,
                       blas_threads=args.blas_threads, stats=stats, **options)
        code = EXIT_OK
        rep = None
        if comm.rank == root:
            if fault == "corrupt" and C.size:
                C.flat[0] = C.flat[0] + 1 if C.dtype.kind != "b" else not C.flat[0]
            with stats.phase("verify"):
                verdict = verify.verify(args.verify, A, B, C)
            if not verdict.passed:
                code = EXIT_VERIFY
            elif "out" in writers:
                with stats.phase("write"):
                    writers["out"].write_npy(C)
    per_rank = control.gather_json(comm, stats.as_dict(), root)
    if comm.rank == root:
        rep = build_report(args, comm, A, B, C, stats, per_rank, verdict, code)
        if "report" in writers:
            writers["report"].write_text(json.dumps(rep, indent=2) + "\n")
        if not args.quiet:
            print(human_report(rep), flush=True)
        if code == EXIT_VERIFY:
            print(f"mpimat: error: verification failed: {verdict.detail}", file=sys.stderr, flush=True)
    return int(control.bcast_json(comm, code, root))


def build_report(args, comm, A, B, C, stats: Stats, per_rank, verdict, code) -> dict:
    m, k = A.shape
    n = B.shape[1]
    matmul_seconds = sum(stats.phases.get(p, 0.0) for p in ("distribute", "compute", "gather"))
    flops = 2 * m * n * k
    rep = {
        "shape": [m, k, n],
        "dtype": str(C.dtype),
        "dtype_a": str(A.dtype), "dtype_b": str(B.dtype),
        "inputs": "files" if args.a else "random",
        "seed": None if args.a else args.seed,
        "ranks": comm.size,
        "grid": stats.extra.get("grid"),
        "strategy": args.strategy,
        "blas_threads": stats.extra.get("blas_threads"),
        "phases": {p: round(stats.phases.get(p, 0.0), 6) for p in PHASES},
        "matmul_seconds": round(matmul_seconds, 6),
        "flops": flops,
        "gflops": round(flops / matmul_seconds / 1e9, 3) if matmul_seconds > 0 else 0.0,
        "verification": verdict.as_dict(),
        "exit_code": code,
        "bytes": {
            "A": int(A.nbytes), "B": int(B.nbytes), "C": int(C.nbytes),
            "sent_total": sum(r["bytes_sent"] for r in per_rank),
        },
        "per_rank": per_rank,
        "versions": versions(),
        "out": args.out if code == EXIT_OK else None,
    }
    # Strategy-specific figures (e.g. tasks, messages for --strategy dot).
    for key, value in stats.extra.items():
        rep.setdefault(key, value)
    return rep


def main(argv: Optional[List[str]] = None, comm: Optional[MPI.Comm] = None) -> int:
    """Run the CLI on `comm` (default COMM_WORLD); returns the exit code."""
    comm = MPI.COMM_WORLD if comm is None else comm
    argv = list(sys.argv[1:] if argv is None else argv)
    tracing_started = False
    try:
        complaint = control.foreign_launcher_message(comm)
        if complaint:
            raise InputError(complaint)
        if argv and argv[0] in SUBCOMMANDS:
            import importlib

            return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:], comm)
        # Every rank parses the same argv, so every rank reaches the same
        # verdict without communicating.
        args = parse_or_help(build_parser(), argv, comm)
        if args is None:
            return EXIT_OK
        args = check_args(args)
        if not tracemalloc.is_tracing():
            # numpy reports its array buffers to tracemalloc: the report's
            # peak_traced_bytes is each rank's peak array memory.
            tracemalloc.start()
            tracing_started = True
        return run_job(args, comm)
    except InputError as exc:
        if comm.rank == 0:
            print(f"mpimat: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    finally:
        if tracing_started:
            tracemalloc.stop()


def console_main(argv: Optional[List[str]] = None) -> None:
    """Entry point: exit with main's code; abort the whole job on a crash.

    An uncaught exception on one rank while the others wait in a collective
    would hang the job, so it prints its traceback and calls Abort, which
    makes the launcher end every rank promptly.
    """
    try:
        code = main(argv)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the safety net
        import traceback

        rank = MPI.COMM_WORLD.rank
        sys.stderr.write(f"mpimat: rank {rank}: unexpected {type(exc).__name__}: {exc}\n")
        if not isinstance(exc, KeyboardInterrupt):
            traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(EXIT_FAILURE)
        code = EXIT_FAILURE
    sys.stdout.flush()
    sys.exit(code)
