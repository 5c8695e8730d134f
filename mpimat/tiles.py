"""The tiles strategy: each rank computes one rectangular tile of C with BLAS.

The tile is computed in row panels (one BLAS call each): each finished
panel is shipped to the root at once, and between panels MPI gets a chance
to move data, so the gather overlaps the compute instead of following it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .compute import blas_threads, local_product
from .movement import Exchange, GridComm, panels, touched
from .partition import Layout
from .stats import Stats


def run(A: Optional[np.ndarray], B: Optional[np.ndarray], job, stats: Stats) -> Optional[np.ndarray]:
    """C = A @ B over job.comm; A, B and the returned C live on job.root only.

    `job` (see api.Job) carries the agreed shapes, dtypes, memory orders,
    grid and BLAS thread count, identical on every rank.
    """
    layout = Layout(job.m, job.k, job.n, job.grid)
    gc = GridComm(job.comm, job.root, job.grid)
    try:
        with stats.phase("distribute"):
            # The root's C receives other ranks' panels: map its pages first.
            C = touched((job.m, job.n), job.dtype_c) if gc.is_root else None
            ex = Exchange(gc, layout, A, B, C, job.dtype_a, job.dtype_b, job.order_a, job.order_b, stats)
            a, b = ex.inputs()
        tile = ex.tile
        with stats.phase("compute"), blas_threads(job.blas_threads):
            # The root writes its tile straight into C; the others into a
            # tile buffer whose panels are sent as they are finished.
            out = C[tile.row0:tile.row1, tile.col0:tile.col1] if gc.is_root else \
                np.empty(tile.shape, dtype=job.dtype_c)
            for p0, p1 in panels(tile, layout.k):
                local_product(a[p0:p1], b, out=out[p0:p1])
                if not gc.is_root:
                    ex.send_panel(out, p0, p1)
                ex.progress()
        with stats.phase("gather"):
            ex.finish()
        return C
    finally:
        gc.free()
