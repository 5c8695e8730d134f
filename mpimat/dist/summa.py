"""SUMMA: C = A @ B with A, B and C distributed in 2-D blocks on one grid.

Grid rank (r, c) holds A[rows r, k-cols c], B[k-rows r, cols c] and computes
C[rows r, cols c].  k is cut into panels (layout.panels: never spanning two
owners).  For each panel, the grid column that holds those columns of A
broadcasts them along every grid row, and the grid row that holds those
rows of B broadcasts them along every grid column; every rank then adds
A_panel @ B_panel into its block of C (van de Geijn & Watts, 1997).

- Look-ahead: the broadcasts of panel p+1 are posted (Ibcast) before the
  product of panel p starts, into the other of two buffers per operand;
  the product runs in a few chunks with an MPI test between them, so the
  broadcasts progress while BLAS runs.
- No per-panel allocation: two panel buffers per broadcast operand, made
  once; an owner whose panel is already contiguous broadcasts it in place;
  a grid of one column (or row) broadcasts nothing for A (or B).
- Products accumulate in place in C's dtype (gemm.Accumulator: BLAS with
  beta = 1, or numpy in row chunks), so integers wrap as numpy's do.
- Bytes: a receiver counts each panel it receives; an owner counts a panel
  once per receiver (the payload a flat broadcast sends).
- Timeline: per panel, a "wait" event while the rank blocks on that
  panel's broadcasts (only when it has any) and a "panel" event for the
  step (bytes: the rank's block of C, which every step updates), as tiles
  records them (stats.Stats.event: a tuple append each).
"""

from __future__ import annotations

import time
from typing import List, Optional, Tuple

import numpy as np
from mpi4py import MPI

from .. import compute, control, kernels, model
from ..buffers import fresh
from ..errors import InputError
from ..operands import result_dtype
from ..stats import Stats
from .gemm import Accumulator
from .layout import BlockLayout, Panel, as_grid, choose_summa_grid, panels
from .matrix import DistMatrix, raw, redistribute


class Broadcaster:
    """One operand's panels along one direction of the grid."""

    def __init__(self, local: np.ndarray, comm: MPI.Comm, along_cols: bool, order: str,
                 fixed: int, width: int, dtype: np.dtype, stats: Stats):
        # along_cols: A's panels are column slices of its block (fixed = rows);
        # B's are row slices (fixed = columns).
        self.local, self.comm, self.along_cols, self.order = local, comm, along_cols, order
        self.fixed, self.stats = fixed, stats
        self.buffers: List[np.ndarray] = []
        if comm.size > 1 and fixed > 0:
            self.buffers = [fresh(fixed * width, dtype) for _ in range(2)]

    def start(self, k0: int, k1: int, owner: int, offset: int, slot: int) -> Tuple[np.ndarray, Optional[MPI.Request]]:
        """The panel for [k0, k1) and the request that fills it (None if local)."""
        w = k1 - k0
        shape = (self.fixed, w) if self.along_cols else (w, self.fixed)
        mine = self.comm.rank == owner
        view = None
        if mine:
            lo, hi = k0 - offset, k1 - offset
            view = self.local[:, lo:hi] if self.along_cols else self.local[lo:hi, :]
        if self.comm.size == 1:
            return view, None
        if self.fixed == 0:  # the whole grid row/column has nothing: skip, consistently
            return np.empty(shape, dtype=self.local.dtype), None
        contiguous = view is not None and (view.flags.f_contiguous if self.order == "F" else view.flags.c_contiguous)
        if contiguous:
            panel = view
        else:
            panel = self.buffers[slot][:self.fixed * w].reshape(shape, order=self.order)
            if mine:
                np.copyto(panel, view)
        nbytes = panel.nbytes
        if mine:
            self.stats.sent(nbytes * (self.comm.size - 1), messages=self.comm.size - 1)
        else:
            self.stats.received(nbytes)
        return panel, self.comm.Ibcast([raw(panel), MPI.BYTE], root=owner)


def run(A: DistMatrix, B: DistMatrix, C: DistMatrix, width: int, stats: Stats,
        blas_threads: Optional[int], kernel: kernels.Kernel = kernels.NUMPY) -> List[Panel]:
    """Fill C.local with this rank's block of A @ B (A, B, C on one grid)."""
    grid = C.grid
    comm = C.comm.Dup()
    try:
        cart = comm.Create_cart([grid.rows, grid.cols], periods=[False, False], reorder=False)
        row = cart.Sub([False, True])   # my grid row: ranks (r, 0..pc-1), rank = c
        col = cart.Sub([True, False])   # my grid column: ranks (0..pr-1, c), rank = r
        try:
            return _run(A, B, C, width, stats, blas_threads, row, col, kernel)
        finally:
            row.Free()
            col.Free()
            cart.Free()
    finally:
        comm.Free()


def _run(A, B, C, width, stats, blas_threads, row, col, kernel) -> List[Panel]:
    k = A.shape[1]
    a_blk, b_blk = A.block, B.block
    rows_a, cols_b = a_blk.shape[0], b_blk.shape[1]
    plist = panels(k, C.grid, width)
    stats.record(panels=len(plist), panel_width=max((p.width for p in plist), default=0))
    if not plist:  # k == 0: the product is zeros
        C.local[...] = 0
        return plist
    if C.shape[0] == 0 or C.shape[1] == 0:  # nothing to compute anywhere: move nothing
        return plist
    w_max = max(p.width for p in plist)
    a_side = Broadcaster(A.local, row, True, A.order, rows_a, w_max, A.dtype, stats)
    b_side = Broadcaster(B.local, col, False, B.order, cols_b, w_max, B.dtype, stats)
    acc = Accumulator(C.local, kernel=kernel)

    def start(i):
        p = plist[i]
        a, ra = a_side.start(p.k0, p.k1, p.a_col, a_blk.col0, i % 2)
        b, rb = b_side.start(p.k0, p.k1, p.b_row, b_blk.row0, i % 2)
        return a, b, [r for r in (ra, rb) if r is not None]

    waited = 0.0  # time blocked on broadcasts (communication not overlapped)
    c_bytes = C.local.nbytes  # what each panel's step updates: this rank's block of C
    clock, event = time.perf_counter, stats.event
    with compute.blas_threads(blas_threads), kernel.threads(blas_threads):
        current = start(0)
        for i in range(len(plist)):
            a, b, requests = current
            ready = clock()
            if requests:
                MPI.Request.Waitall(requests)
                t0, ready = ready, clock()
                waited += ready - t0
                event("wait", t0, ready)
            current = start(i + 1) if i + 1 < len(plist) else None
            ahead = current[2] if current else []
            poke = (lambda: MPI.Request.Testall(ahead)) if ahead else None
            acc.add(a, b, first=(i == 0), poke=poke)
            # The step (the next panel's broadcasts posted, this one's product added), as tiles' "panel".
            event("panel", ready, clock(), c_bytes)
    stats.record(wait_seconds=round(waited, 6))
    return plist


def matmul(A: DistMatrix, B: DistMatrix, grid=None, panel: Optional[int] = None,
           stats: Optional[Stats] = None, blas_threads: Optional[int] = None,
           kernel: str = "numpy", machine: Optional[model.Machine] = None) -> DistMatrix:
    """C = A @ B by SUMMA; C stays distributed (C order, on the grid used).

    grid: None keeps the operands' common grid (or, if they differ, takes
    the grid that moves the fewest bytes); a Grid, 'PRxPC' or (pr, pc)
    forces one.  Operands on another grid are redistributed first.
    panel: the widest panel (columns of A / rows of B) per step; default:
    the cost model's choice (model.summa_panel_width: the least predicted
    time, at most layout.PANEL_BYTES per panel) for `machine`, a
    model.Machine (e.g. mpimat.calibration.load(); default: the model's
    defaults; should ranks pass different ones, the narrowest width wins).
    stats: a mpimat.stats.Stats to
    fill (bytes sent/received, including any redistribution; phases
    'distribute' (redistribution) and 'compute' (SUMMA); the kernel that
    ran; a "panel" and "wait" event per panel, as tiles records them).
    blas_threads: BLAS threads per rank (default: 1 when ranks share a node).
    kernel: who computes each panel's product (mpimat.kernels): "numpy"
    (numpy's BLAS, default), "torch" (torch's CPU gemm, in place with
    addmm_) or "auto" (calibration's choice per dtype); numpy for the dtypes
    the kernel does not multiply exactly as numpy.
    The result has numpy's dtype; integers wrap as numpy's do.
    """
    for name, X in (("A", A), ("B", B)):
        if not isinstance(X, DistMatrix):
            raise TypeError(f"{name} must be a DistMatrix (see dist.from_root, dist.load_npy), "
                            f"got {type(X).__name__}")
    if MPI.Comm.Compare(A.comm, B.comm) not in (MPI.IDENT, MPI.CONGRUENT):
        raise ValueError("A and B must live on the same communicator")
    (m, k), (k2, n) = A.shape, B.shape
    if k != k2:
        raise InputError(f"shape mismatch: A is {m}x{k} and B is {k2}x{n}: "
                         f"A's columns ({k}) must equal B's rows ({k2})")
    dtype_c = result_dtype(A.dtype, B.dtype)
    if panel is not None and (not isinstance(panel, (int, np.integer)) or panel < 1):
        raise ValueError(f"panel= must be a positive number of columns, got {panel!r}")
    if blas_threads is not None and blas_threads < 1:
        raise ValueError(f"blas_threads= must be at least 1, got {blas_threads}")
    if machine is not None and not isinstance(machine, model.Machine):
        raise TypeError(f"machine= must be a mpimat.model.Machine (e.g. mpimat.calibration.load()), "
                        f"got {type(machine).__name__}")
    comm = A.comm
    local_kernel = control.agree_kernel(comm, kernel, A.dtype, B.dtype)
    if grid is not None:
        grid = as_grid(grid, comm.size)
    elif A.grid == B.grid:
        grid = A.grid
    else:
        grid = choose_summa_grid(m, k, n, comm.size, A.dtype.itemsize, B.dtype.itemsize)
    if panel is None:
        # A pure function of the shapes, dtypes, grid and machine: the same on every rank
        # when they pass the same machine (the default is); if not, they agree on the narrowest.
        panel = model.summa_panel_width(m, k, n, grid, machine, A.dtype, B.dtype)
        if machine is not None:
            panel = comm.allreduce(panel, op=MPI.MIN)
    stats = Stats() if stats is None else stats
    stats.record(grid=str(grid))
    with stats.phase("distribute"):  # only when an operand is on another grid
        A2, B2 = redistribute(A, grid, stats), redistribute(B, grid, stats)
    if blas_threads is None:
        blas_threads = compute.default_blas_threads(control.ranks_on_node(comm))
    stats.record(blas_threads=blas_threads, kernel=local_kernel.name)
    layout = BlockLayout((m, n), grid)
    C = DistMatrix(fresh(layout.block_of(comm.rank).shape, dtype_c, small=False), layout, comm, "C")
    with stats.phase("compute"):
        run(A2, B2, C, panel, stats, blas_threads, local_kernel)
    return C
