"""The tiles strategy: each rank computes one rectangular tile of C with BLAS."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .compute import blas_threads, local_product
from .movement import Gather, GridComm, distribute
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
            a, b = distribute(gc, layout, A, B, job.dtype_a, job.dtype_b, job.order_a, job.order_b, stats)
        C = np.empty((job.m, job.n), dtype=job.dtype_c) if gc.is_root else None
        # The root posts its receives now so other tiles land in C while it computes.
        gather = Gather(gc, layout, C, stats)
        tile = layout.tile(gc.gridrank)
        with stats.phase("compute"), blas_threads(job.blas_threads):
            if gc.is_root:
                # The root's tile is computed straight into its place in C.
                local_product(a, b, out=C[tile.row0:tile.row1, tile.col0:tile.col1])
                result = None
            else:
                result = local_product(a, b) if not tile.empty else None
        with stats.phase("gather"):
            gather.finish(result)
        return C
    finally:
        gc.free()
