"""The command line: `python -m mpimat` and its subcommands.

    mpiexec -n 4 python -m mpimat [options]          # the job (job.py)
    python -m mpimat plan --size 4096 --ranks 16      # the cost model (plan.py)
    mpiexec -n 2 python -m mpimat calibrate           # measure this machine (calibrate.py)
    python -m mpimat report run.json --timeline t.png # a picture of a run (timeline.py)

Exit codes: 0 success, 2 usage or input error, 3 verification failed,
1 anything else.  Every rank exits with the same code.  `main(argv, comm)`
takes the communicator, so tests and other programs can call it; the
abort-on-uncaught-exception safety net is installed once, in
`console_main`.  The library never imports this package; its messages name
parameters (grid=), which main() turns into the flags they came from.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tracemalloc
from typing import List, Optional

from mpi4py import MPI

from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, InputError
from ..fileio import printable, remove_temp_files
from ..shm import unlink_segments
from . import calibrate, job, plan, timeline
from .args import parse_or_help
from .launcher import foreign_launcher_message
from .outputs import LAUNCHER

# name -> module with parser() and run(args, comm) -> exit code
SUBCOMMANDS = {"plan": plan, "calibrate": calibrate, "report": timeline}

# The library's parameter names -> the flags that set them.
FLAGS = {"grid": "--grid", "blas_threads": "--blas-threads", "strategy": "--strategy", "kernel": "--kernel"}
_PARAM = re.compile(r"(?<![\w-])(" + "|".join(FLAGS) + r")=")


def in_flags(message: str) -> str:
    """A library message, naming the flags instead of the parameters ("grid=2x2" -> "--grid 2x2")."""
    return _PARAM.sub(lambda m: FLAGS[m.group(1)] + " ", message).replace("  ", " ")


def main(argv: Optional[List[str]] = None, comm: Optional[MPI.Comm] = None) -> int:
    """Run the CLI on `comm` (default COMM_WORLD); returns the exit code."""
    comm = MPI.COMM_WORLD if comm is None else comm
    argv = list(sys.argv[1:] if argv is None else argv)
    tracing_started = False
    try:
        complaint = foreign_launcher_message(comm)
        if complaint:
            raise InputError(complaint)
        command = SUBCOMMANDS.get(argv[0]) if argv else None
        # Every rank parses the same argv, so every rank reaches the same
        # verdict without communicating.
        if command is not None:
            args = parse_or_help(command.parser(), argv[1:], comm)
            return EXIT_OK if args is None else command.run(args, comm)
        args = parse_or_help(job.build_parser(), argv, comm)
        if args is None:
            return EXIT_OK
        args = job.check_args(args)
        if not tracemalloc.is_tracing():
            # numpy reports its array buffers to tracemalloc: the report's
            # peak_traced_bytes is each rank's peak array memory.
            tracemalloc.start()
            tracing_started = True
        return job.run(args, comm)
    except InputError as exc:  # the same on every rank (agreed, or parsed from the same argv)
        if comm.rank == 0:
            print(f"mpimat: error: {printable(in_flags(str(exc)))}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    finally:
        if tracing_started:
            tracemalloc.stop()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def stop(signum, frame) -> None:
    """SIGTERM/SIGINT/SIGHUP (scancel, a time limit, Ctrl-C, a closed terminal): end this rank now.

    Outputs in progress are unnamed files the kernel drops with the process;
    named temp files (file systems without O_TMPFILE) are removed here.  Exit
    128 + the signal's number, as a shell reports a process killed by it,
    without MPI_Finalize (the other ranks may never reach it); the launcher
    then ends the rest of the job.
    """
    remove_temp_files()
    unlink_segments()
    if MPI.COMM_WORLD.rank == 0:
        os.write(2, f"mpimat: error: stopped by {signal.Signals(signum).name}\n".encode())
    os._exit(128 + signum)


def watch_signals() -> None:
    """Handle STOP_SIGNALS at once, even while the main thread is inside BLAS or MPI.

    Python runs signal handlers in the main thread only when it returns to the
    interpreter, which a rank waiting in MPI may never do.  The C-level
    handler also writes the signal's number to a pipe (set_wakeup_fd); this
    thread, blocked on that pipe, wakes at once (BLAS and mpi4py's blocking
    calls release the GIL) and ends the process.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)

    def watch():
        while True:
            data = os.read(read_end, 1)
            if data and data[0] in {int(s) for s in STOP_SIGNALS}:
                stop(data[0], None)

    import threading

    threading.Thread(target=watch, name="mpimat-signals", daemon=True).start()


def console_main(argv: Optional[List[str]] = None) -> None:
    """Entry point: exit with main's code; abort the whole job on a crash.

    An uncaught exception on one rank while the others wait in a collective
    would hang the job, so it prints its traceback and calls Abort, which
    makes the launcher end every rank promptly.
    """
    watch_signals()
    try:
        code = main(argv)
        if os.getppid() != LAUNCHER:
            # An orphan (its launcher died): MPI_Finalize cannot reach the
            # launcher and ends the process before it removes the segments.
            unlink_segments()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the safety net
        import traceback

        rank = MPI.COMM_WORLD.rank
        sys.stderr.write(f"mpimat: rank {rank}: unexpected {type(exc).__name__}: {exc}\n")
        if not isinstance(exc, KeyboardInterrupt):
            traceback.print_exc()
        sys.stderr.flush()
        remove_temp_files()
        unlink_segments()
        MPI.COMM_WORLD.Abort(EXIT_FAILURE)
        code = EXIT_FAILURE
    sys.stdout.flush()
    sys.exit(code)
