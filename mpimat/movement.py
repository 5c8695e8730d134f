"""Data movement for the tiles strategy: rows of A and columns of B out, tiles of C back.

Ranks sit on a pr x pc grid with the root at (0, 0).  Grid rank (r, c) needs
row block r of A and column block c of B.  Each block leaves the root once:

1. the root sends row block r of A to the row leader (r, 0) and column
   block c of B to the column leader (0, c), straight out of A and B
   (a subarray datatype describes the block, so nothing is packed);
2. each leader broadcasts its block along its grid row / grid column
   (MPICH's large-message Bcast is scatter + allgather, so the leader's link
   carries about one copy of the block whatever the row length).

The result tiles travel straight into place in C on the root: the root
posts one receive per tile, described by a subarray of C, before it starts
its own compute, so the gather overlaps its work.

Only buffer-based (capitalised) mpi4py calls move array data; mpi4py picks
the MPI-4 large-count routines when a message exceeds 2^31 elements.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
from mpi4py import MPI

from .partition import Grid, Layout
from .stats import Stats

TAG_A, TAG_B, TAG_C = 101, 102, 103


class GridComm:
    """`comm`'s ranks on `grid`, numbered from the root (grid rank 0 = root).

    Ranks beyond the grid (never, since grid.size == comm.size) would idle.
    `row` holds the ranks of this grid row, ordered by grid column (so the
    row leader is row.rank 0); `col` the ranks of this grid column.
    """

    def __init__(self, comm: MPI.Comm, root: int, grid: Grid):
        if grid.size != comm.size:
            raise ValueError(f"grid {grid} needs {grid.size} ranks, communicator has {comm.size}")
        self.comm, self.root, self.grid = comm, root, grid
        self.gridrank = (comm.rank - root) % comm.size
        self.r, self.c = grid.coords(self.gridrank)
        self.row = comm.Split(self.r, self.c)
        self.col = comm.Split(self.c, self.r)

    @property
    def is_root(self) -> bool:
        return self.gridrank == 0

    def world(self, gridrank: int) -> int:
        """Rank in `comm` of a grid rank."""
        return (gridrank + self.root) % self.comm.size

    def free(self) -> None:
        self.row.Free()
        self.col.Free()


class BlockSpecs:
    """MPI buffer specs for rectangular blocks of a C- or F-contiguous array.

    A contiguous block is passed as a plain view; any other block as the
    whole array plus a subarray datatype, so MPI reads or writes it in place
    (no packing copy, no extra memory).  Datatypes are freed with `free()`.
    """

    def __init__(self):
        self.types: List[MPI.Datatype] = []

    def __call__(self, array: np.ndarray, row0: int, row1: int, col0: int, col1: int):
        view = array[row0:row1, col0:col1]
        if view.flags.c_contiguous or view.flags.f_contiguous:
            return view
        # Elements travel as opaque runs of itemsize bytes, so every dtype
        # (bool, float16, complex) moves the same way and signatures match
        # the receiver's plain byte buffer.
        element = MPI.BYTE.Create_contiguous(array.dtype.itemsize).Commit()
        self.types.append(element)
        fortran = array.flags.f_contiguous and not array.flags.c_contiguous
        sub = element.Create_subarray(
            list(array.shape), [row1 - row0, col1 - col0], [row0, col0],
            order=MPI.ORDER_FORTRAN if fortran else MPI.ORDER_C,
        ).Commit()
        self.types.append(sub)
        return [array, 1, sub]

    def free(self) -> None:
        for t in reversed(self.types):
            t.Free()
        self.types.clear()


def as_bytes(block: np.ndarray):
    """A contiguous array as an MPI byte buffer (any dtype, incl. bool/float16)."""
    return [block.reshape(-1, order="A").view(np.uint8), MPI.BYTE]


def spec_buffer(spec):
    """Turn a BlockSpecs result into something mpi4py accepts for any dtype."""
    if isinstance(spec, np.ndarray):
        return as_bytes(spec)
    return spec


def distribute(gc: GridComm, layout: Layout, A: Optional[np.ndarray], B: Optional[np.ndarray],
               dtype_a: np.dtype, dtype_b: np.dtype, order_a: str, order_b: str,
               stats: Stats) -> Tuple[np.ndarray, np.ndarray]:
    """Give every rank its row block of A and column block of B.

    On the root the blocks are views of A and B (no copy); elsewhere they are
    freshly allocated, in the memory order of the root's array, so the bytes
    that arrive are the block in that order.
    """
    comm, grid, k = gc.comm, gc.grid, layout.k
    row0, row1 = layout.row_block(gc.r)
    col0, col1 = layout.col_block(gc.c)
    specs = BlockSpecs()
    requests = []
    try:
        if gc.is_root:
            a_blk, b_blk = A[row0:row1, :], B[:, col0:col1]
            for r in range(1, grid.rows):
                r0, r1 = layout.row_block(r)
                if r1 > r0 and k:
                    requests.append(comm.Isend(spec_buffer(specs(A, r0, r1, 0, k)),
                                               dest=gc.world(grid.rank(r, 0)), tag=TAG_A))
                    stats.sent((r1 - r0) * k * A.itemsize)
            for c in range(1, grid.cols):
                c0, c1 = layout.col_block(c)
                if c1 > c0 and k:
                    requests.append(comm.Isend(spec_buffer(specs(B, 0, k, c0, c1)),
                                               dest=gc.world(grid.rank(0, c)), tag=TAG_B))
                    stats.sent(k * (c1 - c0) * B.itemsize)
            a_spec = spec_buffer(specs(A, row0, row1, 0, k)) if a_blk.size else None
            b_spec = spec_buffer(specs(B, 0, k, col0, col1)) if b_blk.size else None
        else:
            a_blk = np.empty((row1 - row0, k), dtype=dtype_a, order=order_a)
            b_blk = np.empty((k, col1 - col0), dtype=dtype_b, order=order_b)
            a_spec = as_bytes(a_blk) if a_blk.size else None
            b_spec = as_bytes(b_blk) if b_blk.size else None
            if gc.c == 0 and a_blk.size:
                comm.Recv(a_spec, source=gc.root, tag=TAG_A)
                stats.received(a_blk.nbytes)
            if gc.r == 0 and b_blk.size:
                comm.Recv(b_spec, source=gc.root, tag=TAG_B)
                stats.received(b_blk.nbytes)
        # Stage 2: leaders broadcast along their grid row / column.  Every
        # rank of a row (column) knows the block is empty or not, so all of
        # them skip or join the same Bcast.
        if a_spec is not None and gc.row.size > 1:
            gc.row.Bcast(a_spec, root=0)
            account_bcast(gc.row, a_blk.nbytes, stats)
        if b_spec is not None and gc.col.size > 1:
            gc.col.Bcast(b_spec, root=0)
            account_bcast(gc.col, b_blk.nbytes, stats)
        MPI.Request.Waitall(requests)
    finally:
        specs.free()
    return a_blk, b_blk


def account_bcast(comm: MPI.Comm, nbytes: int, stats: Stats) -> None:
    """Payload accounting for a Bcast: the root 'sends' one copy per member."""
    if comm.rank == 0:
        stats.sent(nbytes * (comm.size - 1), messages=comm.size - 1)
    else:
        stats.received(nbytes)


class Gather:
    """Collect the tiles of C on the root, straight into C.

    Construct on every rank before computing (the root posts its receives
    then), call `finish(tile)` after: the root waits for the others, the
    others send their tile.
    """

    def __init__(self, gc: GridComm, layout: Layout, C: Optional[np.ndarray], stats: Stats):
        self.gc, self.layout, self.stats = gc, layout, stats
        self.specs = BlockSpecs()
        self.requests = []
        if gc.is_root:
            for tile in layout.tiles()[1:]:
                if not tile.empty:
                    spec = spec_buffer(self.specs(C, tile.row0, tile.row1, tile.col0, tile.col1))
                    self.requests.append(gc.comm.Irecv(spec, source=gc.world(tile.rank), tag=TAG_C))
                    stats.received(tile.shape[0] * tile.shape[1] * C.itemsize)

    def finish(self, tile: Optional[np.ndarray]) -> None:
        try:
            if self.gc.is_root:
                MPI.Request.Waitall(self.requests)
            elif tile is not None and tile.size:
                self.gc.comm.Send(as_bytes(np.ascontiguousarray(tile)), dest=self.gc.root, tag=TAG_C)
                self.stats.sent(tile.nbytes)
        finally:
            self.specs.free()

    def cancel(self) -> None:
        for req in self.requests:
            req.Cancel()
        self.specs.free()
