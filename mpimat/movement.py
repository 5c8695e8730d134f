"""Data movement for the tiles strategy: rows of A and columns of B out, tiles of C back.

Ranks sit on a pr x pc grid with the root at (0, 0).  Grid rank (r, c) needs
row block r of A and column block c of B.

Distribution, in two stages:
1. the root sends, straight out of A and B, row block r of A to the row
   leader (r, 0) and column block c of B to the column leader (0, c); and,
   since it joins no broadcast, their blocks to the ranks of its own grid
   row (A_0) and grid column (B_0).  A strided block is described by a
   subarray datatype (no copy), or packed into one buffer when its runs are
   tiny (see short_runs);
2. each other leader broadcasts its block along its grid row (A_r) or grid
   column (B_c) with Ibcast (MPICH's large-message broadcast is scatter +
   allgather, so a leader's link carries about one copy).
The root's link thus carries about size(A) + size(B) for a square grid
(at most twice that), whatever the number of ranks.

One of the two blocks travels in panels (PanelPlan): a rank computes panel
i as soon as it holds the other block and panel i, and sends each result
panel at once; the root has posted one receive per panel, described by a
subarray of C, so panels land in place in C (no gather buffer) while the
root computes its own panels, calling `progress()` between them.

Why it is built this way: with MPICH on one node a contiguous message is
pulled by its receiver (single copy) while the sender computes, but a
strided one is packed by the sender and only moves while the sender is
inside MPI; so the root pushes its strided blocks before computing, streams
only contiguous panels, and receivers advance their receives themselves.

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
PANEL_FLOPS = 1 << 32  # about 4 GFLOP a panel: ~0.1 s of one core
MAX_PANELS = 4  # each BLAS call repacks its B block: 16 panels cost ~4% at n=4096, 8 ~2%


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


class PanelPlan:
    """How a tiles product is cut into panels, the same on every rank.

    One input block is streamed in panels (row panels of A's row block, or
    column panels of B's column block): a rank starts computing once it
    holds the other block and the first panel, instead of after everything
    has arrived, and each result panel goes back as soon as it is computed.
    We stream the larger block if its panels are contiguous in the root's
    array, else the other one: a contiguous message is pulled by the
    receiver while the root computes, a strided one (a datatype) needs the
    root to pack it.  The decision and the panel count are global (from the
    largest tile), so every member of a grid row or column cuts a shared
    block identically.
    """

    def __init__(self, layout: Layout, itemsize_a: int, itemsize_b: int, order_a: str = "C",
                 order_b: str = "C", panel_flops: int = PANEL_FLOPS):
        grid, k = layout.grid, layout.k
        rows, cols = -(-layout.m // grid.rows), -(-layout.n // grid.cols)
        rows_contiguous = order_a == "C"   # A[r0:r1, :] of a C-order A
        cols_contiguous = order_b == "F"   # B[:, c0:c1] of a Fortran-order B
        b_larger = cols * itemsize_b > rows * itemsize_a   # B's block k x cols vs A's rows x k
        if b_larger:
            self.axis = "cols" if cols_contiguous or not rows_contiguous else "rows"
        else:
            self.axis = "rows" if rows_contiguous or not cols_contiguous else "cols"
        self.count = max(1, min(MAX_PANELS, (2 * rows * cols * max(k, 1)) // max(1, panel_flops)))
        self.layout = layout

    def parts(self, extent: int) -> List[Tuple[int, int]]:
        return blocks(extent, max(1, min(self.count, extent)))

    def a_parts(self, r: int) -> List[Tuple[int, int]]:
        """Row ranges (within row block r) in which A's block travels."""
        row0, row1 = self.layout.row_block(r)
        return self.parts(row1 - row0) if self.axis == "rows" else [(0, row1 - row0)]

    def b_parts(self, c: int) -> List[Tuple[int, int]]:
        """Column ranges (within column block c) in which B's block travels."""
        col0, col1 = self.layout.col_block(c)
        return self.parts(col1 - col0) if self.axis == "cols" else [(0, col1 - col0)]

    def tile_panels(self, tile: Tile) -> List[Tuple[int, int, int, int]]:
        """The result panels of a tile, as [row0, row1) x [col0, col1) of C."""
        if tile.empty:
            return []
        if self.axis == "rows":
            return [(tile.row0 + p0, tile.row0 + p1, tile.col0, tile.col1) for p0, p1 in self.a_parts(tile.r)]
        return [(tile.row0, tile.row1, tile.col0 + q0, tile.col0 + q1) for q0, q1 in self.b_parts(tile.c)]


class Exchange:
    """All the messages of one tiles product, for one rank.

    Constructed on every rank: the root posts its sends and the receives of
    every result panel; leaders receive their blocks and start their
    broadcasts; the others post their receives.  Then `panel(i)` waits for
    what panel i needs and returns its (a, b, C-region), `send_panel` ships
    a finished panel, `progress()` lets MPI advance between panels, and
    `finish()` waits for everything.
    """

    def __init__(self, gc: GridComm, layout: Layout, A: Optional[np.ndarray], B: Optional[np.ndarray],
                 C: Optional[np.ndarray], dtype_a, dtype_b, order_a: str, order_b: str, stats: Stats,
                 panel_flops: int = PANEL_FLOPS):
        self.gc, self.layout, self.stats = gc, layout, stats
        self.plan = PanelPlan(layout, np.dtype(dtype_a).itemsize, np.dtype(dtype_b).itemsize,
                              order_a, order_b, panel_flops)
        self.specs = BlockSpecs()
        self.pending: List[MPI.Request] = []   # sends and gather receives, waited at the end
        self.tile = layout.tile(gc.gridrank)
        self.panels = self.plan.tile_panels(self.tile)
        k = layout.k
        row0, row1 = layout.row_block(gc.r)
        col0, col1 = layout.col_block(gc.c)
        a_parts, b_parts = self.plan.a_parts(gc.r), self.plan.b_parts(gc.c)
        # Requests that must complete before the A part / B part is used.
        self.a_wait: List[List[MPI.Request]] = [[] for _ in a_parts]
        self.b_wait: List[List[MPI.Request]] = [[] for _ in b_parts]
        if gc.is_root:
            self.a = [A[row0 + p0:row0 + p1, :] for p0, p1 in a_parts]
            self.b = [B[:, col0 + q0:col0 + q1] for q0, q1 in b_parts]
            self.post_root_sends(A, B)
            self.post_gather(C)
        else:
            self.a = [touched((p1 - p0, k), dtype_a, order_a) for p0, p1 in a_parts]
            self.b = [touched((k, q1 - q0), dtype_b, order_b) for q0, q1 in b_parts]
            self.post_receives()

    # -- root ---------------------------------------------------------------
    def post_root_sends(self, A: np.ndarray, B: np.ndarray) -> None:
        gc, layout, grid, plan, k = self.gc, self.layout, self.gc.grid, self.plan, self.layout.k
        targets = []  # (dest grid rank, array, row0, row1, col0, col1, tag)

        def a_block(dest, r):
            r0 = layout.row_block(r)[0]
            targets.extend((dest, A, r0 + p0, r0 + p1, 0, k, TAG_A) for p0, p1 in plan.a_parts(r))

        def b_block(dest, c):
            c0 = layout.col_block(c)[0]
            targets.extend((dest, B, 0, k, c0 + q0, c0 + q1, TAG_B) for q0, q1 in plan.b_parts(c))

        # Per destination, the whole block first, then the streamed panels:
        # a rank can start once it has the block and the first panel.  The
        # receivers post their receives in this same order (see
        # post_receives), which keeps the leaders' blocking receives and
        # the root's waits free of cycles.
        streams_a = plan.axis == "rows"
        for dest, r, c in [(grid.rank(r, 0), r, 0) for r in range(1, grid.rows)] + \
                          [(grid.rank(0, c), 0, c) for c in range(1, grid.cols)]:
            if streams_a:
                b_block(dest, c)
                a_block(dest, r)
            else:
                a_block(dest, r)
                b_block(dest, c)
        packed = None
        pushed = []  # sends the root itself must drive (packing copies, datatypes)
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
                pushed.append(packed)
            else:
                spec = self.specs(X, r0, r1, c0, c1)
                request = gc.comm.Isend(spec, dest=gc.world(dest), tag=tag)
                strided = len(spec) == 3  # [array, 1, subarray datatype]
                (pushed if strided else self.pending).append(request)
            self.stats.sent((r1 - r0) * (c1 - c0) * X.itemsize)
        # A contiguous message is pulled by its receiver (single copy) while
        # the root computes; a strided one is packed by the root, and only
        # while the root is inside MPI.  Drive those now, before computing,
        # or the receivers would get one chunk per root panel.
        MPI.Request.Waitall(pushed)

    def post_gather(self, C: np.ndarray) -> None:
        gc = self.gc
        for tile in self.layout.tiles()[1:]:
            for r0, r1, c0, c1 in self.plan.tile_panels(tile):
                self.pending.append(gc.comm.Irecv(self.specs(C, r0, r1, c0, c1),
                                                  source=gc.world(tile.rank), tag=TAG_C))
                self.stats.received((r1 - r0) * (c1 - c0) * C.itemsize)

    # -- everyone else --------------------------------------------------------
    def post_receives(self) -> None:
        gc = self.gc
        # A: straight from the root in grid row 0 and column 0, then (rows
        # r > 0) broadcast along the row by its leader (r, 0).  B likewise
        # along columns c > 0 from (0, c).
        a_leader = gc.c == 0 and gc.r > 0 and gc.row.size > 1
        b_leader = gc.r == 0 and gc.c > 0 and gc.col.size > 1
        operands = [
            (self.a, self.a_wait, TAG_A, gc.r == 0 or gc.c == 0, gc.r > 0, a_leader, gc.row),
            (self.b, self.b_wait, TAG_B, gc.r == 0 or gc.c == 0, gc.c > 0, b_leader, gc.col),
        ]
        if self.plan.axis == "rows":  # the same order as the root's sends
            operands.reverse()
        for parts, waits, tag, from_root, shared, leader, comm in operands:
            for part, wait in zip(parts, waits):
                if not part.size:
                    continue
                buf = as_bytes(part)
                if from_root:
                    if leader:
                        # A leader must hold the part before broadcasting it.
                        gc.comm.Recv(buf, source=gc.root, tag=tag)
                    else:
                        wait.append(gc.comm.Irecv(buf, source=gc.root, tag=tag))
                    self.stats.received(part.nbytes)
                if shared and comm.size > 1:
                    wait.append(comm.Ibcast(buf, root=0))
                    if comm.rank == 0:
                        self.stats.sent(part.nbytes * (comm.size - 1), messages=comm.size - 1)
                    elif not from_root:
                        self.stats.received(part.nbytes)

    # -- during and after compute ---------------------------------------------
    def panel(self, i: int):
        """(a, b) for result panel i, once they have arrived."""
        if self.plan.axis == "rows":
            a_i, b_i = i, 0
        else:
            a_i, b_i = 0, i
        for wait in (self.a_wait[a_i], self.b_wait[b_i]):
            if wait:
                MPI.Request.Waitall(wait)
                wait.clear()
        return self.a[a_i], self.b[b_i]

    def send_panel(self, panel: np.ndarray) -> None:
        self.pending.append(self.gc.comm.Isend(as_bytes(panel), dest=self.gc.root, tag=TAG_C))
        self.stats.sent(panel.nbytes)

    def progress(self) -> None:
        if self.pending:
            MPI.Request.Testall(self.pending)

    def finish(self) -> None:
        try:
            for wait in self.a_wait + self.b_wait:  # parts of an idle rank's empty tile
                MPI.Request.Waitall(wait)
            MPI.Request.Waitall(self.pending)
        finally:
            self.specs.free()
