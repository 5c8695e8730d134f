"""The job's outputs: checked at validation, committed at the very end, --out last.

Shared by the root-scatter job (job.py) and the distributed one (summa.py).
"""

from __future__ import annotations

import json
import os
import platform
import sys

import numpy as np
from mpi4py import MPI

from .. import control, report
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_VERIFY, InputError
from ..fileio import AtomicWriter, OutputError, printable, same_file

OUTPUTS = ("out", "report", "trace")  # committed in this order, --out last
LAUNCHER = os.getppid()  # the process that started this rank (mpiexec's proxy, slurmstepd, a shell)


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


def commit(writers: dict, rep: dict, code: int, failure, out=None):
    """Rank 0: write the report and trace, then put --out in place, only if all went well.

    out: what puts --out in place (default: its AtomicWriter's prepared
    content; summa: the collective write's temp file).  Returns (code, failure).
    """
    try:
        if "report" in writers:
            writers["report"].write_text(json.dumps(rep, indent=2) + "\n")
        if "trace" in writers:
            writers["trace"].write_text(json.dumps(report.chrome_trace(rep)) + "\n")
        if "out" in writers and code == EXIT_OK:
            (out or writers["out"].commit)()
    except OutputError as exc:
        code, failure = EXIT_FAILURE, str(exc)
    except InputError as exc:  # the collective write's rename (dist.npyio names path=)
        code, failure = EXIT_FAILURE, str(exc).replace("path=", "--out ", 1)
    finally:
        if "out" in writers:
            writers["out"].discard()  # nothing, once committed
    return code, failure


def gather_ranks(comm: MPI.Comm, stats, root: int, code: int, failure):
    """Every rank's stats on the root, and whether every rank's launcher is still its parent.

    A rank whose launcher died (its parent changed) is an orphan of a job
    mpiexec has already given up on: then nothing is committed.  Returns
    (per_rank, code, failure) on the root, (None, code, failure) elsewhere.
    """
    gathered = control.gather_json(comm, {"stats": stats.as_dict(), "whole": os.getppid() == LAUNCHER}, root)
    if comm.rank != root:
        return None, code, failure
    if code == EXIT_OK and not all(g["whole"] for g in gathered):
        lost = [r for r, g in enumerate(gathered) if not g["whole"]]
        code, failure = EXIT_FAILURE, f"the launcher of rank(s) {lost} is gone: nothing written"
    return [g["stats"] for g in gathered], code, failure


def announce(rep: dict, code: int, failure, verdict, quiet: bool) -> None:
    """Rank 0: the text report on stdout, and the one error line on stderr."""
    if not quiet:
        print(report.human(rep), flush=True)
    if code == EXIT_VERIFY:
        print(f"mpimat: error: verification failed: {verdict.detail}", file=sys.stderr, flush=True)
    elif failure:
        print(f"mpimat: error: {printable(failure)}", file=sys.stderr, flush=True)
