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

One of the two blocks travels in panels (panels.PanelPlan): a rank computes panel
i as soon as it holds the other block and panel i, and sends each result
panel at once; the root has posted one receive per panel, described by a
subarray of C, so panels land in place in C (no gather buffer) while the
root computes its own panels, calling `progress()` between them.

The last panel of a non-root tile is cut into pieces, the tail, which the
root may take over (takeover.py); the root receives tail pieces only once
their owner has said it computes them.  A non-root rank computes each
result panel into the memory of an input part it has finished with, when
that fits.

Why it is built this way: with MPICH on one node a contiguous message is
pulled by its receiver (single copy) while the sender computes, but a
strided one is packed by the sender and only moves while the sender is
inside MPI; so the root pushes its strided blocks before computing, streams
only contiguous panels, and receivers advance their receives themselves.

Only buffer-based (capitalised) mpi4py calls move array data; mpi4py picks
the MPI-4 large-count routines when a message exceeds 2^31 elements.
"""

from __future__ import annotations

import time
from typing import List, Optional

import numpy as np
from mpi4py import MPI

from .buffers import Workspace, fresh
from .panels import SHORT_RUN_BYTES, PanelPlan
from .partition import Grid
from .stats import Stats
from .takeover import Ask, Offer, area

TAG_A, TAG_B, TAG_C = 101, 102, 103


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


def short_runs(array: np.ndarray, row0: int, row1: int, col0: int, col1: int) -> bool:
    """True if the block is strided in runs shorter than SHORT_RUN_BYTES."""
    view = array[row0:row1, col0:col1]
    if view.flags.c_contiguous or view.flags.f_contiguous:
        return False
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    run = (row1 - row0) if fortran else (col1 - col0)
    return run * array.itemsize < SHORT_RUN_BYTES


class Exchange:
    """What both sides of one tiles product share: the plan, this rank's panels, requests.

    RootExchange is the root's side, RankExchange every other rank's.  Both
    post their messages when constructed; `progress()` lets MPI advance
    between panels and `finish()` waits for everything.
    """

    def __init__(self, gc: GridComm, plan: PanelPlan, stats: Stats):
        self.gc, self.plan, self.stats = gc, plan, stats
        self.layout = plan.layout
        self.specs = BlockSpecs()
        self.pending: List[MPI.Request] = []   # sends and gather receives, waited at the end
        self.tile = plan.tiles[gc.gridrank]
        self.panels = plan.tile_panels(self.tile, whole_tail=gc.is_root)
        # takeover.py: the root asks early (before its last panel) if it has more than one.
        self.rounds = 2 if len(plan.tile_panels(plan.tiles[0], whole_tail=True)) > 1 else 1
        # Take-over needs a tail cut into pieces; a product too small for them
        # (a solver's small calls) skips the protocol and its messages.
        self.takeover = any(len(plan.tile_panels(t)) > plan.tail_start(t) + 1
                            for t in plan.tiles[1:] if not t.empty)

    def progress(self) -> None:
        if self.pending:
            MPI.Request.Testall(self.pending)

    def finish(self) -> None:
        try:
            self.wait_own()
            MPI.Request.Waitall(self.pending)
        finally:
            self.specs.free()

    def wait_own(self) -> None:
        """What a side must complete before the shared requests (see RankExchange)."""

    def finish_shared(self) -> None:
        """When ranks write C in shared memory: a barrier, after which the root may read
        every rank's panels.  (MPI's memory model would add MPI_Win_sync on the caller's
        window; on x86, whose stores are seen in order, the barrier's own atomics suffice.)"""
        self.gc.comm.Barrier()


class RootExchange(Exchange):
    """The root's messages: A and B out, result panels of C in (in place), take-over questions.

    `root_work()` yields the root's own panels, then the tail pieces it
    takes over from late ranks.
    """

    def __init__(self, gc: GridComm, plan: PanelPlan, A: np.ndarray, B: np.ndarray, C: np.ndarray, stats: Stats,
                 send: bool = True, gather: bool = True):
        super().__init__(gc, plan, stats)
        self.C = C
        # Not when the other ranks read A and B, or write C, in shared memory (SharedRankExchange).
        self.send, self.gather = send, gather
        if send:
            self.post_sends(A, B)
        if gather:
            self.post_gather()
        self.late = [t for t in plan.tiles[1:] if not t.empty]
        self.asker: Optional[Ask] = None
        if self.takeover:
            self.asker = Ask(gc.comm, [gc.world(t.rank) for t in self.late],
                             [len(self.plan.tile_panels(t)) for t in self.late], self.rounds)
        self.started = time.monotonic_ns()

    def post_sends(self, A: np.ndarray, B: np.ndarray) -> None:
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

    def post_gather(self) -> None:
        """Receive every panel of C the other ranks will surely compute.

        Panels of their tails may be taken over by the root (take_over);
        their receives are posted once the owner has said it keeps them.
        """
        for tile in self.plan.tiles[1:]:
            panels = self.plan.tile_panels(tile)
            self.receive_panels(tile.rank, panels[:self.plan.tail_start(tile)] if self.takeover else panels)

    def receive_panels(self, gridrank: int, panels) -> None:
        C = self.C
        for r0, r1, c0, c1 in panels:
            self.pending.append(self.gc.comm.Irecv(self.specs(C, r0, r1, c0, c1),
                                                   source=self.gc.world(gridrank), tag=TAG_C))
            self.stats.received((r1 - r0) * (c1 - c0) * C.itemsize)

    def root_work(self):
        """The root's panels: its own tile, then what it takes over from late ranks."""
        for i, panel in enumerate(self.panels):
            if self.asker is not None and self.rounds == 2 and i == len(self.panels) - 1:
                # Starting its last panel: ask early, saying when it expects to be free.
                now = time.monotonic_ns()
                done, left = sum(area(p) for p in self.panels[:i]), area(panel)
                self.asker.early(free_ns=now + (now - self.started) * left // max(1, done), left=left)
            yield panel
        yield from self.take_over()

    def take_over(self):
        """The root, after its own tile: yield the panels it computes for late ranks."""
        taken = 0
        for i, keep, before, final in self.asker or ():
            panels, tail = self.plan.tile_panels(self.late[i]), self.plan.tail_start(self.late[i])
            if not tail <= keep <= before:
                raise RuntimeError(f"rank {self.asker.ranks[i]} kept {keep} of {before} panels")
            taken += before - keep
            yield from panels[keep:before]
            if final and self.gather:
                self.receive_panels(self.late[i].rank, panels[tail:keep])
        self.stats.record(panels_taken_over=taken)


class RankExchange(Exchange):
    """A non-root rank's messages: its blocks in (from the root or its leader), result panels out.

    `keep(i)` says whether panel i is still its own (the root may take over
    the tail), `panel(i)` waits for what panel i needs and returns its
    (a, b), `result_buffer(i)` gives memory for its result and `send_panel`
    ships it.
    """

    def __init__(self, gc: GridComm, plan: PanelPlan, dtype_a, dtype_b, order_a: str, order_b: str, stats: Stats,
                 workspace: Workspace):
        super().__init__(gc, plan, stats)
        k = plan.layout.k
        self.a_parts, self.b_parts = self.plan.a_parts(gc.r), self.plan.b_parts(gc.c)
        # Requests that must complete before the A part / B part is used.
        self.a_wait: List[List[MPI.Request]] = [[] for _ in self.a_parts]
        self.b_wait: List[List[MPI.Request]] = [[] for _ in self.b_parts]
        self.a, self.b = self.input_parts(k, dtype_a, dtype_b, order_a, order_b, workspace)
        # Spent streamed parts, reused for results (result_buffer).
        self.spent, self.spare, self.spare_used = 0, None, 0
        self.post_receives()
        self.offer: Optional[Offer] = None
        if self.panels and self.takeover:
            self.offer = Offer(gc.comm, gc.root, self.panels, self.plan.tail_start(self.tile), self.rounds)

    def input_parts(self, k: int, dtype_a, dtype_b, order_a: str, order_b: str, workspace: Workspace):
        """([part of A], [part of B]): memory for this rank's inputs, which post_receives fills."""
        parts = workspace.arrays([((p1 - p0, k), dtype_a, order_a) for p0, p1 in self.a_parts]
                                 + [((k, q1 - q0), dtype_b, order_b) for q0, q1 in self.b_parts])
        return parts[:len(self.a_parts)], parts[len(self.a_parts):]

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

    def streamed(self) -> List[np.ndarray]:
        """The parts of the streamed block, in order."""
        return self.a if self.plan.axis == "rows" else self.b

    def part(self, i: int) -> int:
        """Which streamed part panel i needs (tail pieces share the last one)."""
        return min(i, len(self.streamed()) - 1)

    def panel(self, i: int):
        """(a, b) for result panel i, once they have arrived (not on the root: it has A and B)."""
        r0, r1, c0, c1 = self.panels[i]
        a_i, b_i = (self.part(i), 0) if self.plan.axis == "rows" else (0, self.part(i))
        for wait in (self.a_wait[a_i], self.b_wait[b_i]):
            if wait:
                MPI.Request.Waitall(wait)
                wait.clear()
        a_row0 = self.tile.row0 + self.a_parts[a_i][0]
        b_col0 = self.tile.col0 + self.b_parts[b_i][0]
        return self.a[a_i][r0 - a_row0:r1 - a_row0], self.b[b_i][:, c0 - b_col0:c1 - b_col0]

    def keep(self, i: int) -> bool:
        """Called before panel i: False once the root computes panel i and the rest."""
        return self.offer is None or self.offer.keep(i)

    def result_buffer(self, i: int, dtype) -> np.ndarray:
        """Where a non-root rank computes result panel i.

        The streamed parts before panel i's are spent by now; the newest
        one's memory takes the results while they fit (for a square product
        they all do), which saves faulting in fresh pages and a tile's
        worth of memory.
        """
        r0, r1, c0, c1 = self.panels[i]
        shape, dtype = (r1 - r0, c1 - c0), np.dtype(dtype)
        nbytes = shape[0] * shape[1] * dtype.itemsize
        spent = self.part(i)  # parts before this one are done with
        if spent > self.spent:
            self.spent, self.spare_used = spent, 0
            self.spare = self.streamed()[spent - 1].reshape(-1, order="A").view(np.uint8)
        start = -(-self.spare_used // 64) * 64
        if self.spare is not None and start + nbytes <= self.spare.nbytes:
            self.spare_used = start + nbytes
            return self.spare[start:start + nbytes].view(dtype).reshape(shape)
        return fresh(shape, dtype)

    def send_panel(self, panel: np.ndarray) -> None:
        self.pending.append(self.gc.comm.Isend(as_bytes(panel), dest=self.gc.root, tag=TAG_C))
        self.stats.sent(panel.nbytes)

    def wait_own(self) -> None:
        if self.offer is not None:  # before waiting: the root waits for the answers
            self.offer.close()
        for wait in self.a_wait + self.b_wait:  # parts of an idle rank's empty tile
            MPI.Request.Waitall(wait)


class SharedRankExchange(RankExchange):
    """A non-root rank that reads A and B in memory it shares with the root (one node,
    api's shared=True): its parts are views of them and nothing is received.

    Results go to buffers of their own and are sent, never into spent parts
    (those are A and B); or, given C (shared with the root too), straight
    into C, and nothing is sent.  A result buffer whose panel has reached
    the root takes a later panel: usually two buffers serve every panel,
    instead of fresh pages for each (n = 8192 on 2 ranks: 320 MiB of page
    faults and unmapping down to 144 MiB).
    """

    def __init__(self, gc: GridComm, plan: PanelPlan, A: np.ndarray, B: np.ndarray, stats: Stats,
                 C: Optional[np.ndarray] = None):
        self.A, self.B, self.C = A, B, C
        self.buffers: List[list] = []  # [bytes, send request of the panel in it or None]
        self.filling: Optional[list] = None  # the entry result_buffer gave out last
        # The parts are views (input_parts): no orders or workspace to give.
        super().__init__(gc, plan, A.dtype, B.dtype, None, None, stats, None)

    def input_parts(self, k, dtype_a, dtype_b, order_a, order_b, workspace):
        row0, col0 = self.tile.row0, self.tile.col0
        return ([self.A[row0 + p0:row0 + p1, :] for p0, p1 in self.a_parts],
                [self.B[:, col0 + q0:col0 + q1] for q0, q1 in self.b_parts])

    def post_receives(self) -> None:
        pass

    def result_buffer(self, i: int, dtype) -> np.ndarray:
        r0, r1, c0, c1 = self.panels[i]
        if self.C is not None:
            return self.C[r0:r1, c0:c1]
        shape, dtype = (r1 - r0, c1 - c0), np.dtype(dtype)
        nbytes = shape[0] * shape[1] * dtype.itemsize
        # Test, never wait: the root may be inside a long BLAS call.
        free = [e for e in self.buffers if e[0].nbytes >= nbytes and (e[1] is None or e[1].Test())]
        if free:
            self.filling = free[0]
        elif len(self.buffers) < 2:  # double buffering: as large as the largest panel still to come
            largest = max((b1 - b0) * (d1 - d0) for b0, b1, d0, d1 in self.panels[i:]) * dtype.itemsize
            self.filling = [fresh((largest,), np.uint8), None]
            self.buffers.append(self.filling)
        else:  # both still on their way (the short tail panels outrun the root): a panel of its own
            self.filling = [fresh((nbytes,), np.uint8), None]
        self.filling[1] = None
        return self.filling[0][:nbytes].view(dtype).reshape(shape)

    def send_panel(self, panel: np.ndarray) -> None:
        if self.C is None:
            super().send_panel(panel)
            self.filling[1] = self.pending[-1]
