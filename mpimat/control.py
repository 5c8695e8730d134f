"""Collective decisions: one rank decides, every rank learns the verdict.

An exception on one rank while the others wait in a collective hangs the
job, so the root validates first and broadcasts its verdict before any data
moves; every rank then raises (or exits with) the same thing.  Verdicts are
small JSON documents sent with buffer-based calls: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Optional

import numpy as np
from mpi4py import MPI

from .errors import InputError, raise_input_error


def bcast_json(comm: MPI.Comm, obj: Any, root: int = 0) -> Any:
    """Broadcast a JSON-able object from root (obj is ignored elsewhere)."""
    if comm.rank == root:
        payload = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
        length = np.array([payload.size], dtype=np.int64)
    else:
        length = np.zeros(1, dtype=np.int64)
    comm.Bcast([length, MPI.INT64_T], root=root)
    if comm.rank != root:
        payload = np.empty(int(length[0]), dtype=np.uint8)
    comm.Bcast([payload, MPI.BYTE], root=root)
    return obj if comm.rank == root else json.loads(payload.tobytes().decode())


def agree(comm: MPI.Comm, root: int, decide: Optional[Callable[[], Any]]) -> Any:
    """Run `decide` on the root, broadcast its result or its InputError.

    Every rank returns the same JSON-able value or raises the same exception
    (`decide` is only called, and only needed, on the root).
    """
    if comm.rank == root:
        try:
            verdict = {"ok": True, "plan": decide()}
        except InputError as exc:
            verdict = {"ok": False, "kind": exc.kind, "message": str(exc)}
        except ValueError as exc:  # e.g. a grid string that does not parse
            verdict = {"ok": False, "kind": "ValueError", "message": str(exc)}
    else:
        verdict = None
    verdict = bcast_json(comm, verdict, root)
    if not verdict["ok"]:
        raise_input_error(verdict["message"], verdict["kind"])
    return verdict["plan"]


def launched_size() -> int:
    """How many processes the launcher says it started (0 if it says nothing).

    Hydra/PMI (MPICH), Open MPI's mpirun and srun each export their own
    variable; a process that sees one of these > 1 but a COMM_WORLD of size 1
    was started by a launcher whose MPI is not the one mpi4py loaded.
    """
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS_WORLD"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    if "SLURM_PROCID" in os.environ:
        value = os.environ.get("SLURM_STEP_NUM_TASKS", "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 0


def foreign_launcher_message(comm: MPI.Comm) -> str:
    """A one-line complaint if this job is N singletons, else ''."""
    claimed = launched_size()
    if comm.size == 1 and claimed > 1:
        # Open MPI puts a NUL byte in its version string.
        library = MPI.Get_library_version().replace("\0", "").splitlines()[0].strip()
        plugin = "pmix" if "Open MPI" in library else "pmi2"
        return (
            f"the launcher started {claimed} processes but MPI sees a world of 1: "
            f"mpiexec/srun belongs to a different MPI than mpi4py's ({library}); use the launcher "
            f"of the same MPI ({os.path.join(os.path.dirname(sys.executable), 'mpiexec')}, "
            f"or srun --mpi={plugin})"
        )
    return ""


def gather_json(comm: MPI.Comm, obj: Any, root: int = 0):
    """Gather one JSON-able object per rank on root (list in rank order)."""
    payload = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    lengths = np.zeros(comm.size, dtype=np.int64) if comm.rank == root else None
    comm.Gather([np.array([payload.size], dtype=np.int64), MPI.INT64_T],
                [lengths, MPI.INT64_T] if comm.rank == root else None, root=root)
    if comm.rank != root:
        comm.Gatherv([payload, MPI.BYTE], None, root=root)
        return None
    buf = np.empty(int(lengths.sum()), dtype=np.uint8)
    comm.Gatherv([payload, MPI.BYTE], [buf, (lengths, None), MPI.BYTE], root=root)
    out, offset = [], 0
    for length in lengths:
        out.append(json.loads(buf[offset:offset + length].tobytes().decode()))
        offset += int(length)
    return out
