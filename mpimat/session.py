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
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from mpi4py import MPI

from .control import SETTLE_BYTES
from .movement import GridComm
from .partition import Grid

_KEYVAL = MPI.KEYVAL_INVALID


class Session:
    """One communicator's cached state: its private duplicate and what derives from it."""

    def __init__(self, comm: MPI.Comm):
        # A private communicator keeps our messages apart from the caller's.
        self.comm = comm.Dup()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.ranks_on_node = local.size
        local.Free()
        self.scratch = np.zeros(SETTLE_BYTES, dtype=np.uint8)  # control.settle's buffer
        self.grids: Dict[Tuple[int, int, int], GridComm] = {}

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
        self.comm.Free()


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
