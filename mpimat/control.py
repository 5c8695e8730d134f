"""Collective decisions: one rank decides, every rank learns the verdict.

An exception on one rank while the others wait in a collective hangs the
job, so the root validates first and broadcasts its verdict before any data
moves; every rank then raises (or exits with) the same thing.  Verdicts are
small JSON documents sent with buffer-based calls: nothing is unpickled.
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any, Callable, Optional

import numpy as np
from mpi4py import MPI

from . import kernels
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


def verdict_of(decide: Callable[[], Any]) -> dict:
    """Run `decide` (on the root) and turn its outcome into a JSON-able verdict.

    Whatever goes wrong on the root must reach every rank, or they would
    wait in the broadcast forever.
    """
    try:
        return {"ok": True, "plan": decide()}
    except InputError as exc:
        return {"ok": False, "kind": exc.kind, "message": str(exc)}
    except (ValueError, TypeError) as exc:  # e.g. a grid string that does not parse
        kind = "TypeError" if isinstance(exc, TypeError) else "ValueError"
        return {"ok": False, "kind": kind, "message": str(exc)}
    except Exception as exc:  # e.g. an operand's __array__ raising RuntimeError
        return {"ok": False, "kind": "ValueError", "message": f"{type(exc).__name__} on the root rank: {exc}"}


def outcome(verdict: dict) -> Any:
    """The verdict's plan, or its exception raised."""
    if not verdict["ok"]:
        raise_input_error(verdict["message"], verdict["kind"])
    return verdict["plan"]


def agree(comm: MPI.Comm, root: int, decide: Optional[Callable[[], Any]], patient: bool = False) -> Any:
    """Run `decide` on the root, broadcast its result or its InputError.

    Every rank returns the same JSON-able value or raises the same exception
    (`decide` is only called, and only needed, on the root).  patient: the
    other ranks wait for a long decision (reading or generating the inputs)
    asleep (idle_barrier) instead of busy-polling a core the root could use.
    """
    verdict = verdict_of(decide) if comm.rank == root else None
    if patient:
        idle_barrier(comm)
    return outcome(bcast_json(comm, verdict, root))


def idle_barrier(comm: MPI.Comm, poll: float = 0.001) -> None:
    """A barrier that sleeps while it waits: MPICH's blocking calls spin, taking a core from
    whoever is working meanwhile (on a node with as many ranks as cores, the root's threads)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll)


def refuse_if_any(comm: MPI.Comm, root: int, complaint: Optional[str], advice: str = "") -> None:
    """Collective: if any rank has a complaint (one line), every rank raises the first as InputError."""
    complaints = gather_json(comm, complaint, root)

    def decide():
        for line in complaints:
            if line:
                raise InputError(f"{line}{advice}")
        return {}

    agree(comm, root, decide if comm.rank == root else None)


def ranks_on_node(comm: MPI.Comm) -> int:
    """Collective: how many ranks of `comm` share this rank's node."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.size
    finally:
        node.Free()


def agree_kernel(comm: MPI.Comm, name: str, dtype_a, dtype_b) -> kernels.Kernel:
    """Collective: every rank's kernel for kernel=`name` and these dtypes, the same on all.

    Each rank resolves the name itself (kernels.resolve; "auto" from its own
    calibration), then one small allreduce tells all of them whether some
    rank lacks the kernel (InputError on every rank) or they chose
    differently (numpy everywhere: their calibration files differ).
    """
    if name == "numpy":  # every rank has it: nothing to agree on
        return kernels.NUMPY
    try:
        kernel, why = kernels.resolve(name, dtype_a, dtype_b), ""
    except kernels.KernelUnavailable as exc:
        kernel, why = None, str(exc)
    index = -1 if kernel is None else kernels.KERNELS.index(kernel.name)
    # MAX of (missing, index, -index): any rank missing, and the largest and smallest choice.
    flags = np.array([kernel is None, index, -index], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, [flags, MPI.INT64_T], op=MPI.MAX)
    if flags[0]:
        raise InputError(why or f"kernel {name!r} is missing on some rank: install it everywhere")
    return kernel if flags[1] == -flags[2] else kernels.NUMPY


SETTLE_BYTES = 1024  # one message: root check (16 bytes), length (8), a typical job (~400)


def settle(comm: MPI.Comm, root, decide: Optional[Callable[[], Any]], scratch: np.ndarray,
           parse: Callable[[bytes], dict] = json.loads,
           encode: Callable[[dict], bytes] = lambda verdict: json.dumps(verdict).encode()) -> Any:
    """agree() and a check that every rank names the same root, in one small allreduce.

    Each rank writes the root it names, and its bytes' complement; the root
    also writes its verdict (length, then JSON), every other rank zeros.  An
    element-wise MAX then gives the root's verdict, and each rank sees its own
    root bytes and complement come back unchanged only if every rank named
    the same root (a byte that differs makes MAX differ from the smaller one's
    byte or from the larger one's complement).  `scratch`: SETTLE_BYTES
    uint8, reused between calls.  Raises ValueError on every rank when the
    roots differ or do not exist; verdicts longer than the buffer follow in
    a broadcast.  parse and encode: the verdict from its bytes and back (e.g.
    JSON behind a cache: a loop settles the same verdict every call).
    """
    valid = isinstance(root, (int, np.integer)) and not isinstance(root, bool) and 0 <= root < comm.size
    named = int(root) if valid else -1
    mine = struct.pack(">qq", named, ~named)  # ~x's bytes are x's complemented
    payload = b""
    if valid and comm.rank == root:
        payload = encode(verdict_of(decide))
    first = min(len(payload), SETTLE_BYTES - 24)
    # Through a memoryview and bytes: numpy's slice assignments cost several times
    # more, and a solver's loop settles every call.
    memoryview(scratch)[:] = (mine + struct.pack(">q", len(payload)) + payload[:first]).ljust(SETTLE_BYTES, b"\0")
    comm.Allreduce(MPI.IN_PLACE, [scratch, MPI.UINT8_T], op=MPI.MAX)
    if not valid:
        raise ValueError(f"root must be a rank of the communicator (0..{comm.size - 1}), got {root!r}")
    got = scratch.tobytes()
    if got[:16] != mine:
        raise ValueError("root= differs between ranks (or is not a rank on some): every rank must pass the same root")
    length = int.from_bytes(got[16:24], "big", signed=True)
    data = got[24:24 + min(length, SETTLE_BYTES - 24)]
    if length > SETTLE_BYTES - 24:
        rest = np.frombuffer(bytearray(payload[SETTLE_BYTES - 24:]), dtype=np.uint8) if comm.rank == root else \
            np.empty(length - (SETTLE_BYTES - 24), dtype=np.uint8)
        comm.Bcast([rest, MPI.BYTE], root=root)
        data += rest.tobytes()
    return outcome(parse(data))


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
