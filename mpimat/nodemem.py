"""Arrays every rank of one node reads and writes: one MPI shared-memory window.

On one node the tiles strategy need not send A and B at all: if every rank
can read them, a rank computes its tile straight from them (matmul's
shared=True), and a job saves the distribution (n = 8192 float64 on 2
ranks: about 1 s of a 17 s job) and the other ranks' copies of A and B.
NodeArrays allocates such arrays: one window (MPI_Win_allocate_shared) in
the root's memory, which every rank of the communicator maps, each rank
holding numpy views of the same bytes.

The communicator must lie on one node (control.ranks_on_node == size).
MPICH keeps the window's memory in the node's /dev/shm (tmpfs): `room()`
says how much it still holds, so a caller can fall back to ordinary
arrays rather than die of SIGBUS when a small /dev/shm (a container's
64 MiB) runs out.  Allocation and free() are collective; the views must not
be used after free().  Each array starts on a page boundary, so rows of A
and B are as aligned for BLAS as numpy's own large arrays.
"""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import numpy as np
from mpi4py import MPI

PAGE = 4096
SHM_DIR = "/dev/shm"


def room(path: str = SHM_DIR) -> float:
    """Bytes the node's shared-memory filesystem can still take (inf if there is none to ask)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return float("inf")
    return st.f_bavail * st.f_frsize


def layout(specs: Sequence[Tuple[tuple, np.dtype]]) -> Tuple[List[int], int]:
    """(offset of each array, total bytes): arrays one after another, each on a page boundary."""
    offsets, total = [], 0
    for shape, dtype in specs:
        offsets.append(total)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        total += -(-nbytes // PAGE) * PAGE
    return offsets, total


class NodeArrays:
    """Collective: C-ordered arrays of `specs` [(shape, dtype)] in `root`'s shared memory,
    `arrays` on every rank of `comm` (one node) viewing the same bytes."""

    def __init__(self, comm: MPI.Comm, specs: Sequence[Tuple[tuple, object]], root: int = 0):
        specs = [(tuple(int(s) for s in shape), np.dtype(dtype)) for shape, dtype in specs]
        offsets, total = layout(specs)
        self.nbytes = total
        # Only the root contributes memory; the others map the root's segment.
        self.win = MPI.Win.Allocate_shared(max(total, 1) if comm.rank == root else 0, 1, comm=comm)
        memory, _ = self.win.Shared_query(root)
        self.arrays = [np.ndarray(shape, dtype, buffer=memory, offset=offset)
                       for (shape, dtype), offset in zip(specs, offsets)]

    def free(self) -> None:
        """Collective: unmap the window (drop every view first)."""
        self.arrays = []
        if self.win != MPI.WIN_NULL:
            self.win.Free()

    def __enter__(self) -> "NodeArrays":
        return self

    def __exit__(self, *exc) -> None:
        self.free()
