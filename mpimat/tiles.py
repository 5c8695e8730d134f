"""The tiles strategy: each rank computes one rectangular tile of C with BLAS.

The tile is computed in panels (one BLAS call each) as the larger input
block streams in (see panels.PanelPlan); each finished panel is shipped
to the root at once, and between panels MPI gets a chance to move data, so
distribution, compute and gather overlap instead of following each other.
The root, which needs no messages and so finishes its own tile first,
then computes the ends of the other ranks' tiles (takeover.py).
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from . import control, verify
from .compute import local_product
from .buffers import fresh
from .errors import PanelCheckError
from .movement import RankExchange, RootExchange, SharedRankExchange
from .panels import PanelPlan
from .partition import Layout, block
from .stats import Stats


# With shared inputs the root starts with this fraction of its rows (or columns) fewer.
ROOT_LIGHTER = 1 / 32


def layout(job) -> Layout:
    """The job's tiling.  With shared inputs (not writing into a shared out=), the root's
    tile starts lighter by ROOT_LIGHTER, on one-column or one-row grids.

    There the other ranks wait for nothing, while the root alone maps C's
    pages (n = 8192 on 2 ranks: 0.1-1.2 s on these VMs, as its memory
    happens to be warm or not) and receives every result panel; and work
    moves only towards the root (takeover.py).  With equal tiles the root
    finished last and the other rank sat idle for up to 1.24 s (0.43 s on
    average over 10 runs); starting the root a thirty-second lighter, the
    take-over settles the rest, and the root waits 0.13-0.23 s for its
    answers instead.  A sixteenth overshot (the root waited 0.2-0.57 s).
    """
    less = 0
    if job.shared and not job.shared_out:  # Layout applies it on one-column or one-row grids only
        lines, parts = (job.m, job.grid.rows) if job.grid.cols == 1 else (job.n, job.grid.cols)
        first = block(lines, parts, 0)
        less = int((first[1] - first[0]) * ROOT_LIGHTER)
    return Layout(job.m, job.k, job.n, job.grid, root_less=less)


def memory_need(job) -> int:
    """Bytes this rank allocates: C on the root (A and B are the caller's); its rows of A,
    columns of B (none when shared) and, at worst, its tile elsewhere (results mostly reuse
    spent input panels)."""
    gridrank = (job.comm.rank - job.root) % job.comm.size
    c_bytes = 0 if job.out_shape is not None else job.m * job.n * job.dtype_c.itemsize  # out= is the caller's
    if gridrank == 0:
        return c_bytes
    tile = layout(job).tile(gridrank)
    rows, cols = tile.shape
    inputs = 0 if job.shared else (rows * job.dtype_a.itemsize + cols * job.dtype_b.itemsize) * job.k
    return inputs + (0 if job.shared_out else rows * cols * job.dtype_c.itemsize)


class PanelChecks:
    """check_panels: Freivalds' check of every result panel this rank computes.

    Each panel is checked right after its product, while its rows of A and
    columns of B are still at hand (the next panels' results reuse spent
    inputs), on the rank that computed it (verify.PanelFreivalds): a wrong
    answer is pinned to the rank and the panel, and the ranks check in
    parallel.  The root's check of the gathered C (the CLI's --verify) is a
    separate matter.
    """

    FIRST = 3  # failures a rank describes (the count says how many more)

    def __init__(self, job, stats: Stats, axis: str = "rows"):
        self.job, self.stats = job, stats
        self.checked, self.seconds, self.failures = 0, 0.0, []
        # The block that stays while the other streams is the one panels share
        # (panels.PanelPlan.axis); threads as the rank's BLAS (None: every core).
        self.freivalds = verify.PanelFreivalds(job.m, job.n, job.dtype_c, shared="b" if axis == "rows" else "a",
                                               threads=job.blas_threads)

    def __call__(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, r0: int, c0: int) -> None:
        started = time.perf_counter()
        verdict = self.freivalds.check(a, b, c, r0, c0)
        ended = time.perf_counter()
        self.stats.event("check", started, ended)
        self.seconds += ended - started
        self.checked += 1
        if not verdict.passed:
            self.failures.append(f"rank {self.job.comm.rank}'s panel C[{r0}:{r0 + c.shape[0]}, "
                                 f"{c0}:{c0 + c.shape[1]}]: {verdict.detail}")

    def settle(self) -> None:
        """Collective: raise PanelCheckError on every rank if any rank's panel failed."""
        self.stats.reassign(self.seconds, "compute", "verify")
        self.stats.record(panels_checked=self.checked)
        comm, root = self.job.comm, self.job.root
        found = control.gather_json(comm, [len(self.failures), self.failures[:self.FIRST]], root)
        message = None
        if comm.rank == root:
            count = sum(n for n, _ in found)
            if count:
                lines = [line for _, first in found for line in first]
                more = f" (and {count - len(lines)} more)" if count > len(lines) else ""
                message = f"{count} result panel(s) failed their check: {'; '.join(lines)}{more}"
        message = control.bcast_json(comm, message, root)
        if message:
            raise PanelCheckError(message)


def alone(A: Optional[np.ndarray], B: Optional[np.ndarray], job, stats: Stats,
          out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """A product below options.alone_flops: the root computes it, the other ranks return at once
    (every rank decides so from the agreed job, with no message; with check_panels, once the
    root's check is done)."""
    stats.record(grid="1x1", alone=True)
    check = PanelChecks(job, stats) if job.options.check_panels else None
    C = None
    if job.comm.rank == job.root:
        with stats.phase("compute"), job.kernel.threads(job.blas_threads):
            C = np.empty((job.m, job.n), dtype=job.dtype_c) if out is None else out
            local_product(A, B, out=C, kernel=job.kernel)
            if check:
                check(A, B, C, 0, 0)
    if check:  # the verdict reaches every rank: then they wait for it
        check.settle()
    if job.shared_out and out is not None:  # every rank returns with the product in out=
        job.comm.Barrier()
    return C


def run(A: Optional[np.ndarray], B: Optional[np.ndarray], job, stats: Stats,
        out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """C = A @ B over job.comm; A, B and the returned C live on job.root only
    (with job.shared every rank reads A and B: views of the root's memory).

    out: the root's (m, n) C-contiguous memory for C (returned); with
    job.shared_out every rank's view of it, and each rank writes its own
    panels there.

    `job` (see api.Job) carries the agreed shapes, dtypes, memory orders,
    grid, BLAS thread count and options (options.TilesOptions), identical
    on every rank.
    """
    opts = job.options
    if 2 * job.m * job.k * job.n < opts.alone_flops:
        return alone(A, B, job, stats, out)
    gc = job.session.grid_comm(job.root, job.grid)  # made once per communicator, root and grid
    plan = job.derived.get("tiles")
    if plan is None:  # kept with the job, which the session keeps between calls
        plan = job.derived["tiles"] = PanelPlan(
            layout(job), job.dtype_a.itemsize, job.dtype_b.itemsize, job.order_a,
            job.order_b, opts.panel_flops, shared=job.comm.size > 1, tail_flops=opts.tail_flops,
            itemsize_c=job.dtype_c.itemsize)
    with stats.phase("distribute"):
        # The root's C receives other ranks' panels: map its pages first.
        # Every rank writes its panels into out= itself (api passes out= to all ranks or none).
        writes_out = job.shared_out and out is not None
        C = out if out is not None and (gc.is_root or writes_out) else \
            fresh((job.m, job.n), job.dtype_c, small=False) if gc.is_root else None
        if gc.is_root:
            ex = RootExchange(gc, plan, A, B, C, stats, send=not job.shared, gather=not writes_out)
        elif job.shared:  # A and B (and with writes_out C) are in memory this rank shares with the root
            ex = SharedRankExchange(gc, plan, A, B, stats, C if writes_out else None)
        else:
            ex = RankExchange(gc, plan, job.dtype_a, job.dtype_b, job.order_a, job.order_b, stats,
                              job.session.workspace)
    kernel = job.kernel  # kernels.py: numpy's matmul, or torch's for the dtypes it does as numpy
    check = PanelChecks(job, stats, plan.axis) if opts.check_panels else None
    with stats.phase("compute"), kernel.threads(job.blas_threads):
        if gc.is_root:
            # Its own panels, then the ends of late ranks' tiles
            # (takeover.py), straight from A and B into C.
            for r0, r1, c0, c1 in ex.root_work():
                started = time.perf_counter()
                local_product(A[r0:r1, :], B[:, c0:c1], out=C[r0:r1, c0:c1], kernel=kernel)
                stats.event("panel", started, time.perf_counter(), (r1 - r0) * (c1 - c0) * C.itemsize)
                ex.progress()
                if check:
                    check(A[r0:r1, :], B[:, c0:c1], C[r0:r1, c0:c1], r0, c0)
            # Waiting for the late ranks' answers is gathering, not compute.
            if ex.asker is not None:
                stats.reassign(ex.asker.idle, "compute", "gather")
            stats.record(panels=len(ex.panels))
        else:
            waited, done = 0.0, 0
            for i in range(len(ex.panels)):
                if not ex.keep(i):  # the root computes the rest of this tile
                    break
                done += 1
                started = time.perf_counter()
                a, b = ex.panel(i)
                ready = time.perf_counter()
                waited += ready - started
                stats.event("wait", started, ready)
                result = local_product(a, b, out=ex.result_buffer(i, job.dtype_c), kernel=kernel)
                stats.event("panel", ready, time.perf_counter(), result.nbytes)
                ex.send_panel(result)
                ex.progress()
                if check:  # while the panel travels: MPI only reads a send buffer
                    r0, _, c0, _ = ex.panels[i]
                    check(a, b, result, r0, c0)
            # Waiting for a panel's inputs is distribution, not compute.
            stats.reassign(waited, "compute", "distribute")
            stats.record(panels=done)
    with stats.phase("gather"):
        ex.finish()
        if writes_out:  # the root returns C once every rank's panels are in it
            ex.finish_shared()
    if check:
        check.settle()
    return C if gc.is_root else None
