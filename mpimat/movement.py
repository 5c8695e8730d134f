"""Data movement for the tiles strategy: rows of A and columns of B out, tiles of C back.

Ranks sit on a pr x pc grid with the root at (0, 0).  Grid rank (r, c) needs
row block r of A and column block c of B.

Distribution (two stages, the root never blocks):
1. the root sends, straight out of A and B (a subarray datatype describes a
   block, so nothing is packed): row block r of A to the row leader (r, 0)
   and column block c of B to the column leader (0, c); and, since it does
   not join any broadcast, their blocks to the ranks of its own grid row
   (A_0) and grid column (B_0);
2. each other leader broadcasts its block along its grid row (A_r) or grid
   column (B_c) with a nonblocking Ibcast (MPICH's large-message broadcast is
   scatter + allgather, so a leader's link carries about one copy).
The root's link thus carries about size(A) + size(B) for a square grid
(at most twice that), whatever the number of ranks.

Gather: each rank computes its tile in row panels and sends every panel as
soon as it is done; the root has posted one receive per panel, described by
a subarray of C, so panels land in place in C (no gather buffer) while the
root computes its own panels, calling `progress()` between them.

Why nonblocking everywhere: with MPICH on one node, large messages are
pulled by the receiver (single copy), so a root that keeps computing does
not stall the others, but a receive only advances inside an MPI call.

Only buffer-based (capitalised) mpi4py calls move array data; mpi4py picks
the MPI-4 large-count routines when a message exceeds 2^31 elements.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
from mpi4py import MPI

from .partition import Grid, Layout, Tile, blocks
from .stats import Stats

TAG_A, TAG_B, TAG_C = 101, 102, 103
PANEL_FLOPS = 1 << 30  # aim for panels of about a gigaflop (tens of ms)
MAX_PANELS = 16


class GridComm:
    """`comm`'s ranks on `grid`, numbered from the root (grid rank 0 = root).

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

    A contiguous block is passed as plain bytes; any other block as the whole
    array plus a subarray datatype, so MPI reads or writes it in place (no
    packing copy, no extra memory).  Elements travel as opaque runs of
    itemsize bytes, so every dtype (bool, float16, complex) moves the same
    way and matches the receiver's plain byte buffer.
    """

    def __init__(self):
        self.types: List[MPI.Datatype] = []
        self.elements = {}

    def __call__(self, array: np.ndarray, row0: int, row1: int, col0: int, col1: int):
        view = array[row0:row1, col0:col1]
        if view.flags.c_contiguous or view.flags.f_contiguous:
            return as_bytes(view)
        element = self.elements.get(array.itemsize)
        if element is None:
            element = self.elements[array.itemsize] = MPI.BYTE.Create_contiguous(array.itemsize).Commit()
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
        self.elements.clear()


def as_bytes(block: np.ndarray):
    """A contiguous array as an MPI byte buffer."""
    return [block.reshape(-1, order="A").view(np.uint8), MPI.BYTE]


SHORT_RUN_BYTES = 256


def short_runs(array: np.ndarray, row0: int, row1: int, col0: int, col1: int) -> bool:
    """True if the block is strided in runs shorter than SHORT_RUN_BYTES."""
    view = array[row0:row1, col0:col1]
    if view.flags.c_contiguous or view.flags.f_contiguous:
        return False
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    run = (row1 - row0) if fortran else (col1 - col0)
    return run * array.itemsize < SHORT_RUN_BYTES


def touched(shape, dtype, order="C") -> np.ndarray:
    """A new array whose pages are already mapped.

    A receive into never-touched memory runs at a fraction of the copy
    speed (the kernel faults pages in one by one inside the copy); touching
    them first, here, is several times cheaper.
    """
    out = np.empty(shape, dtype=dtype, order=order)
    out.reshape(-1, order="A").view(np.uint8)[::4096] = 0
    return out


def panels(tile: Tile, k: int) -> List[Tuple[int, int]]:
    """Row panels [p0, p1) of a tile (relative rows), the same on every rank."""
    rows, cols = tile.shape
    if rows == 0 or cols == 0:
        return []
    count = min(MAX_PANELS, rows, max(1, (2 * rows * cols * max(k, 1)) // PANEL_FLOPS))
    return blocks(rows, count)


class Exchange:
    """All the messages of one tiles product, for one rank.

    Constructed on every rank: the root posts its sends and the receives
    of every result panel; leaders receive their blocks and start their
    broadcasts.  Then `inputs()` waits for this rank's blocks, `send_panel`
    ships a finished panel, `progress()` lets MPI advance between panels,
    and `finish()` waits for everything.
    """

    def __init__(self, gc: GridComm, layout: Layout, A: Optional[np.ndarray], B: Optional[np.ndarray],
                 C: Optional[np.ndarray], dtype_a, dtype_b, order_a: str, order_b: str, stats: Stats):
        self.gc, self.layout, self.stats = gc, layout, stats
        self.specs = BlockSpecs()
        self.pending: List[MPI.Request] = []   # this rank's sends and gather receives
        self.inbound: List[MPI.Request] = []   # receives of this rank's input blocks
        self.tile = layout.tile(gc.gridrank)
        k = layout.k
        row0, row1 = layout.row_block(gc.r)
        col0, col1 = layout.col_block(gc.c)
        if gc.is_root:
            self.a, self.b = A[row0:row1, :], B[:, col0:col1]
            self.post_root_sends(A, B)
            self.post_gather(C)
        else:
            self.a = touched((row1 - row0, k), dtype_a, order_a)
            self.b = touched((k, col1 - col0), dtype_b, order_b)
            self.post_receives()

    # -- root ---------------------------------------------------------------
    def post_root_sends(self, A: np.ndarray, B: np.ndarray) -> None:
        gc, layout, grid, k = self.gc, self.layout, self.gc.grid, self.layout.k
        targets = []  # (dest grid rank, array, row0, row1, col0, col1, tag)
        # Per destination, A before B: the order in which leaders receive.
        for r in range(1, grid.rows):          # row leaders get A_r and B_0
            r0, r1 = layout.row_block(r)
            c0, c1 = layout.col_block(0)
            targets.append((grid.rank(r, 0), A, r0, r1, 0, k, TAG_A))
            targets.append((grid.rank(r, 0), B, 0, k, c0, c1, TAG_B))
        for c in range(1, grid.cols):          # column leaders get A_0 and B_c
            c0, c1 = layout.col_block(c)
            r0, r1 = layout.row_block(0)
            targets.append((grid.rank(0, c), A, r0, r1, 0, k, TAG_A))
            targets.append((grid.rank(0, c), B, 0, k, c0, c1, TAG_B))
        packed = None
        for dest, X, r0, r1, c0, c1, tag in targets:
            if r1 <= r0 or c1 <= c0:
                continue
            if short_runs(X, r0, r1, c0, c1):
                # A datatype of tiny strided runs (a few rows of a Fortran-
                # order matrix) moves element by element, ~10x slower than
                # one packing copy.  Pack instead, keeping at most one packed
                # block alive so rank 0's memory grows by one block at most.
                if packed is not None:
                    packed.Wait()
                block = X[r0:r1, c0:c1]
                block = np.asfortranarray(block) if X.flags.f_contiguous and not X.flags.c_contiguous \
                    else np.ascontiguousarray(block)
                packed = gc.comm.Isend(as_bytes(block), dest=gc.world(dest), tag=tag)
                self.pending.append(packed)
            else:
                self.pending.append(gc.comm.Isend(self.specs(X, r0, r1, c0, c1), dest=gc.world(dest), tag=tag))
            self.stats.sent((r1 - r0) * (c1 - c0) * X.itemsize)

    def post_gather(self, C: np.ndarray) -> None:
        gc, k = self.gc, self.layout.k
        for tile in self.layout.tiles()[1:]:
            for p0, p1 in panels(tile, k):
                r0, r1 = tile.row0 + p0, tile.row0 + p1
                spec = self.specs(C, r0, r1, tile.col0, tile.col1)
                self.pending.append(gc.comm.Irecv(spec, source=gc.world(tile.rank), tag=TAG_C))
                self.stats.received((r1 - r0) * tile.shape[1] * C.itemsize)

    # -- everyone else --------------------------------------------------------
    def post_receives(self) -> None:
        gc = self.gc
        a_bytes, b_bytes = as_bytes(self.a), as_bytes(self.b)
        # A: straight from the root in grid row 0 and column 0, else from the row leader.
        if self.a.size:
            if gc.r == 0 or gc.c == 0:
                self.receive(a_bytes, TAG_A, self.a.nbytes)
            if gc.r > 0 and gc.row.size > 1:
                self.bcast(gc.row, a_bytes, self.a.nbytes)
        if self.b.size:
            if gc.r == 0 or gc.c == 0:
                self.receive(b_bytes, TAG_B, self.b.nbytes)
            if gc.c > 0 and gc.col.size > 1:
                self.bcast(gc.col, b_bytes, self.b.nbytes)

    def receive(self, buf, tag: int, nbytes: int) -> None:
        if self.is_bcast_root():
            # A leader must hold the block before it can broadcast it.
            self.gc.comm.Recv(buf, source=self.gc.root, tag=tag)
        else:
            self.inbound.append(self.gc.comm.Irecv(buf, source=self.gc.root, tag=tag))
        self.stats.received(nbytes)

    def is_bcast_root(self) -> bool:
        gc = self.gc
        return (gc.c == 0 and gc.r > 0 and gc.row.size > 1) or (gc.r == 0 and gc.c > 0 and gc.col.size > 1)

    def bcast(self, comm: MPI.Comm, buf, nbytes: int) -> None:
        self.inbound.append(comm.Ibcast(buf, root=0))
        if comm.rank == 0:
            self.stats.sent(nbytes * (comm.size - 1), messages=comm.size - 1)
        else:
            self.stats.received(nbytes)

    # -- during and after compute ---------------------------------------------
    def inputs(self) -> Tuple[np.ndarray, np.ndarray]:
        MPI.Request.Waitall(self.inbound)
        return self.a, self.b

    def send_panel(self, tile_array: np.ndarray, p0: int, p1: int) -> None:
        panel = tile_array[p0:p1]
        self.pending.append(self.gc.comm.Isend(as_bytes(panel), dest=self.gc.root, tag=TAG_C))
        self.stats.sent(panel.nbytes)

    def progress(self) -> None:
        if self.pending:
            MPI.Request.Testall(self.pending)

    def finish(self) -> None:
        try:
            MPI.Request.Waitall(self.pending)
        finally:
            self.specs.free()
