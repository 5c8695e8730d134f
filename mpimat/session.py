"""What matmul keeps per communicator between calls.

A solver calling matmul thousands of times on the same communicator would
otherwise pay, on every call, for a private duplicate of the communicator,
the node-local split that sets the BLAS thread count, and the row and
column communicators of the grid: collective calls, each several MPI
latencies.  They do not change between calls, so the first call on a
communicator makes them and hangs them on it as an MPI attribute (as PETSc
and mpi4py-fft do); MPI calls our delete function, which frees them, when
the caller frees the communicator.  Every rank of a communicator calls
matmul the same number of times, so every rank makes the cache in the same
call.

It also remembers, per communicator, what derives from an agreed job (the
root's decision for given operands and options, every rank's Job): a
solver repeats the same few shapes, and working them out again costs more
than the product.  Every rank sees the same sequence of agreed jobs, so
`jobs` stays identical across ranks (a collective made while building an
entry is made by every rank in the same call).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Callable, Dict, Hashable, Tuple, TypeVar

import numpy as np
from mpi4py import MPI

from .buffers import Workspace
from .control import SETTLE_BYTES, ranks_on_node
from .movement import GridComm
from .partition import Grid

_KEYVAL = MPI.KEYVAL_INVALID
T = TypeVar("T")


class Session:
    """One communicator's cached state: its private duplicate and what derives from it."""

    def __init__(self, comm: MPI.Comm):
        # A private communicator keeps our messages apart from the caller's.
        self.comm = comm.Dup()
        self.ranks_on_node = ranks_on_node(self.comm)
        self.scratch = np.zeros(SETTLE_BYTES, dtype=np.uint8)  # control.settle's buffer
        self.grids: Dict[Tuple[int, int, int], GridComm] = {}
        # Kept apart: every rank fills `jobs` alike, only the root `decisions`,
        # so the ranks' jobs can never be evicted differently.
        self.jobs, self.decisions = Remembered(), Remembered()
        self.last_plan = (None, b"")  # the root's last settled plan and its JSON (encode)
        self.workspace = Workspace()  # a non-root rank's receive buffers for small products

    def encode(self, verdict: dict) -> bytes:
        """control.settle's JSON of the root's verdict.  A loop settles the same plan (one
        object from `decisions`) every call: its bytes are kept, and held alive with it."""
        plan = verdict.get("plan")
        if plan is not None and plan is self.last_plan[0]:
            return self.last_plan[1]
        data = json.dumps(verdict).encode()
        if verdict["ok"]:
            self.last_plan = (plan, data)
        return data

    def grid_comm(self, root: int, grid: Grid) -> GridComm:
        """The row and column communicators of `grid` with `root` at (0, 0), made once."""
        key = (root, grid.rows, grid.cols)
        gc = self.grids.get(key)
        if gc is None:
            gc = self.grids[key] = GridComm(self.comm, root, grid)
        return gc

    def free(self) -> None:
        for gc in self.grids.values():
            gc.free()
        self.grids.clear()
        self.jobs.clear()
        self.decisions.clear()
        self.last_plan = (None, b"")
        self.workspace = Workspace()
        self.comm.Free()


class Remembered:
    """What make() returned for the most recent `size` keys (a loop's shapes; bounded, so
    ever-changing shapes cannot grow memory).  make() raising stores nothing.  Keys say
    everything the value depends on; values are shared between calls: nobody mutates them."""

    def __init__(self, size: int = 64):
        self.size = size
        self.values: "OrderedDict[Hashable, object]" = OrderedDict()

    def __call__(self, key: Hashable, make: Callable[[], T]) -> T:
        found = self.get(key)
        if found is None:
            found = make()
            self.put(key, found)
        return found

    def get(self, key: Hashable):
        """The value kept for `key` (now the most recent), or None."""
        found = self.values.get(key)
        if found is not None:
            self.values.move_to_end(key)
        return found

    def put(self, key: Hashable, value) -> None:
        self.values[key] = value
        if len(self.values) > self.size:
            self.values.popitem(last=False)

    def clear(self) -> None:
        self.values.clear()


def _delete(comm, keyval, session) -> None:
    session.free()


def session(comm: MPI.Comm) -> Session:
    """The Session of `comm`, made by the first call on it (collective on that call)."""
    global _KEYVAL
    if _KEYVAL == MPI.KEYVAL_INVALID:
        _KEYVAL = MPI.Comm.Create_keyval(delete_fn=_delete)
    found = comm.Get_attr(_KEYVAL)
    if found is None:
        found = Session(comm)
        comm.Set_attr(_KEYVAL, found)
    return found
