"""DistMatrix: a matrix whose blocks live on the ranks, never on one.

Every rank holds `local`, its block (layout.block_of(rank)) of the m x n
matrix, in the matrix's memory order ('C' or 'F', the same on every rank,
native byte order).  Shape, dtype, order and layout are the same on every
rank, so checks on them need no communication and raise the same error
everywhere.  Bridges to the rank-0 world: from_root scatters a root array
into blocks, to_root gathers them back; redistribute moves a matrix to
another grid (one Alltoallw, every block straight into place).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from mpi4py import MPI

from ..control import agree
from ..errors import InputError
from ..operands import check_dtype, native, order_of
from .layout import BlockLayout, as_grid, default_grid, intersect


def raw(a: np.ndarray) -> np.ndarray:
    """The bytes of a contiguous array (either order), as a flat uint8 view."""
    if a.size == 0:
        return np.empty(0, dtype=np.uint8)
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise ValueError("raw() needs a contiguous array")  # a copy would lose received data
    return a.reshape(-1, order="F" if order_of(a) == "F" else "C").view(np.uint8)


def mpi_order(order: str) -> int:
    return MPI.ORDER_FORTRAN if order == "F" else MPI.ORDER_C


class Types:
    """Derived datatypes made for one operation, freed together."""

    def __init__(self, itemsize: int):
        self.items = []
        self.element = self.keep(MPI.BYTE.Create_contiguous(itemsize))

    def keep(self, t: MPI.Datatype) -> MPI.Datatype:
        t.Commit()
        self.items.append(t)
        return t

    def region(self, sizes, rows, cols, starts, order: str) -> MPI.Datatype:
        """The (rows x cols) rectangle at `starts` of a sizes[0] x sizes[1] array."""
        return self.keep(self.element.Create_subarray(list(sizes), [rows, cols], list(starts),
                                                      order=mpi_order(order)))

    def free(self) -> None:
        for t in self.items:
            t.Free()
        self.items = []


class DistMatrix:
    """An m x n matrix in 2-D blocks over the ranks of `comm`."""

    def __init__(self, local: np.ndarray, layout: BlockLayout, comm: MPI.Comm, order: str = "C"):
        mine = layout.block_of(comm.rank)
        if local.shape != mine.shape:
            raise ValueError(f"local block has shape {local.shape}, layout says {mine.shape}")
        if order not in ("C", "F") or not (local.flags.f_contiguous if order == "F" else local.flags.c_contiguous):
            raise ValueError(f"local block must be {order!r}-contiguous (order='C' or 'F')")
        if not local.dtype.isnative:
            raise ValueError(f"local block must be in native byte order, got {local.dtype}")
        if layout.grid.size != comm.size:
            raise ValueError(f"layout grid {layout.grid} does not match {comm.size} ranks")
        self.local = local
        self.layout = layout
        self.comm = comm
        self.order = order

    @property
    def shape(self):
        return self.layout.shape

    @property
    def dtype(self) -> np.dtype:
        return self.local.dtype

    @property
    def grid(self):
        return self.layout.grid

    @property
    def block(self):
        """Where this rank's block sits: rows [row0, row1), columns [col0, col1)."""
        return self.layout.block_of(self.comm.rank)

    @property
    def nbytes(self) -> int:
        m, n = self.shape
        return m * n * self.dtype.itemsize

    def to_root(self, root: int = 0) -> Optional[np.ndarray]:
        return to_root(self, root)

    def __repr__(self) -> str:
        m, n = self.shape
        return f"DistMatrix({m}x{n} {self.dtype} on grid {self.grid}, order {self.order})"


def empty(shape, dtype, comm: MPI.Comm, grid=None, order: str = "C") -> DistMatrix:
    """An uninitialised distributed matrix (every rank allocates its block)."""
    layout = BlockLayout(tuple(int(s) for s in shape),
                         default_grid(comm.size) if grid is None else as_grid(grid, comm.size))
    local = np.empty(layout.block_of(comm.rank).shape, dtype=dtype, order=order)
    return DistMatrix(local, layout, comm, order)


def check_root(comm: MPI.Comm, root) -> None:
    if not isinstance(root, (int, np.integer)) or not 0 <= root < comm.size:
        raise ValueError(f"root must be a rank of the communicator (0..{comm.size - 1}), got {root!r}")


def from_root(A, comm: MPI.Comm, root: int = 0, grid=None) -> DistMatrix:
    """Scatter the root's 2-D array into blocks (A is only read on the root).

    The blocks keep the root array's memory order.  Bad input raises the same
    InputError on every rank.
    """
    check_root(comm, root)
    X = None

    def decide():
        nonlocal X
        if A is None:
            raise InputError("A is missing on the root rank")
        X = np.asarray(A)
        check_dtype(X.dtype, "A")
        if X.ndim != 2:
            raise InputError(f"A must be a 2-D matrix, got {X.ndim}-D shape {X.shape}")
        X = native(X)
        g = default_grid(comm.size) if grid is None else as_grid(grid, comm.size)
        return {"shape": list(X.shape), "dtype": X.dtype.str, "order": order_of(X), "grid": [g.rows, g.cols]}

    plan = agree(comm, root, decide if comm.rank == root else None)
    out = empty(plan["shape"], np.dtype(plan["dtype"]), comm, plan["grid"], plan["order"])
    work = comm.Dup()
    types = Types(out.dtype.itemsize)
    try:
        if work.rank == root:
            requests = []
            data = raw(X)
            for b in out.layout.blocks():
                if b.empty:
                    continue
                if b.rank == root:
                    np.copyto(out.local, X[b.row0:b.row1, b.col0:b.col1])
                    continue
                t = types.region(X.shape, *b.shape, (b.row0, b.col0), out.order)
                requests.append(work.Isend([data, 1, t], dest=b.rank, tag=11))
            MPI.Request.Waitall(requests)
        elif out.local.size:
            work.Recv([raw(out.local), MPI.BYTE], source=root, tag=11)
    finally:
        types.free()
        work.Free()
    return out


def to_root(X: DistMatrix, root: int = 0) -> Optional[np.ndarray]:
    """Gather the blocks into one array on the root (None elsewhere), in X's order."""
    check_root(X.comm, root)
    work = X.comm.Dup()
    types = Types(X.dtype.itemsize)
    try:
        if work.rank == root:
            out = np.empty(X.shape, dtype=X.dtype, order=X.order)
            data = raw(out)
            requests = []
            for b in X.layout.blocks():
                if b.empty:
                    continue
                if b.rank == root:
                    out[b.row0:b.row1, b.col0:b.col1] = X.local
                    continue
                t = types.region(X.shape, *b.shape, (b.row0, b.col0), X.order)
                requests.append(work.Irecv([data, 1, t], source=b.rank, tag=12))
            MPI.Request.Waitall(requests)
            return out
        if X.local.size:
            work.Send([raw(X.local), MPI.BYTE], dest=root, tag=12)
        return None
    finally:
        types.free()
        work.Free()


def redistribute(X: DistMatrix, grid, stats=None) -> DistMatrix:
    """X on another grid (same values, same order); X itself if already there.

    stats: a mpimat.stats.Stats that counts the bytes this rank sends to and
    receives from other ranks.
    """
    grid = as_grid(grid, X.comm.size)
    if grid == X.grid:
        return X
    out = empty(X.shape, X.dtype, X.comm, grid, X.order)
    old, new = X.layout, out.layout
    me_old, me_new = old.block_of(X.comm.rank), new.block_of(X.comm.rank)
    P = X.comm.size
    types = Types(X.dtype.itemsize)
    work = X.comm.Dup()
    try:
        scount, stypes, rcount, rtypes = [0] * P, [MPI.BYTE] * P, [0] * P, [MPI.BYTE] * P

        def region(frame, rows, cols):
            """The overlap [rows) x [cols) as a datatype inside block `frame`, and its bytes (None if empty)."""
            if rows[1] <= rows[0] or cols[1] <= cols[0]:
                return None, 0
            shape = (rows[1] - rows[0], cols[1] - cols[0])
            return (types.region(frame.shape, *shape, (rows[0] - frame.row0, cols[0] - frame.col0), X.order),
                    shape[0] * shape[1] * X.dtype.itemsize)

        for q in range(P):
            r_new, c_new = new.grid.coords(q)
            r_old, c_old = old.grid.coords(q)
            # What I send q: my old block ∩ q's new block, inside my old block.
            send, nbytes = region(me_old, intersect((me_old.row0, me_old.row1), new.row_block(r_new)),
                                  intersect((me_old.col0, me_old.col1), new.col_block(c_new)))
            if send is not None:
                scount[q], stypes[q] = 1, send
                if stats is not None and q != X.comm.rank:
                    stats.sent(nbytes)
            # What q sends me: q's old block ∩ my new block, inside my new block.
            recv, nbytes = region(me_new, intersect(old.row_block(r_old), (me_new.row0, me_new.row1)),
                                  intersect(old.col_block(c_old), (me_new.col0, me_new.col1)))
            if recv is not None:
                rcount[q], rtypes[q] = 1, recv
                if stats is not None and q != X.comm.rank:
                    stats.received(nbytes)
        zeros = [0] * P
        work.Alltoallw([raw(X.local), (scount, zeros), stypes], [raw(out.local), (rcount, zeros), rtypes])
    finally:
        types.free()
        work.Free()
    return out
