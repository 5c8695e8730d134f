"""Collective decisions: one rank decides, every rank learns the verdict.

An exception on one rank while the others wait in a collective hangs the
job, so the root validates first and broadcasts its verdict before any data
moves; every rank then raises (or exits with) the same thing.  Verdicts are
small JSON documents sent with buffer-based calls: nothing is unpickled.
"""

from __future__ import annotations

import json
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
        # Whatever goes wrong on the root must reach every rank, or they
        # would wait in the broadcast forever.
        try:
            verdict = {"ok": True, "plan": decide()}
        except InputError as exc:
            verdict = {"ok": False, "kind": exc.kind, "message": str(exc)}
        except (ValueError, TypeError) as exc:  # e.g. a grid string that does not parse
            kind = "TypeError" if isinstance(exc, TypeError) else "ValueError"
            verdict = {"ok": False, "kind": kind, "message": str(exc)}
        except Exception as exc:  # e.g. an operand's __array__ raising RuntimeError
            verdict = {"ok": False, "kind": "ValueError",
                       "message": f"{type(exc).__name__} on the root rank: {exc}"}
    else:
        verdict = None
    verdict = bcast_json(comm, verdict, root)
    if not verdict["ok"]:
        raise_input_error(verdict["message"], verdict["kind"])
    return verdict["plan"]


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
