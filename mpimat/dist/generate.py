"""Seeded random matrices generated in place: every rank makes only its block.

The values are mpimat.generate's (tiles keyed by seed, matrix and tile), so
they are the same for every number of ranks and grid, and the same as the
root path's generate.random_pair(m, k, n, dtype, seed) for that seed.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .. import generate
from ..operands import check_dtype
from .layout import BlockLayout, as_grid, default_grid
from .matrix import DistMatrix


def random(shape, dtype, seed: int, comm: MPI.Comm, matrix: str = "A", grid=None,
           order: str = "C") -> DistMatrix:
    """Matrix `matrix` ("A" or "B") of shape `shape` for `seed`, in blocks.

    dist.random((m, k), d, s, comm, "A") and dist.random((k, n), d, s, comm,
    "B") are exactly generate.random_pair(m, k, n, d, s).  No communication.
    """
    dtype = np.dtype(dtype)
    check_dtype(dtype, "dtype=")
    if matrix not in generate.MATRICES:
        raise ValueError(f"matrix= must be 'A' or 'B', got {matrix!r}")
    if order not in ("C", "F"):
        raise ValueError(f"order= must be 'C' or 'F', got {order!r}")
    try:
        m, n = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape= must be (rows, columns), got {shape!r}") from None
    if m < 0 or n < 0:
        raise ValueError(f"shape= must not be negative, got {shape!r}")
    g = default_grid(comm.size) if grid is None else as_grid(grid, comm.size)
    layout = BlockLayout((m, n), g)
    b = layout.block_of(comm.rank)
    local = generate.random_block(seed, matrix, (m, n), dtype.newbyteorder("="), (b.row0, b.row1),
                                  (b.col0, b.col1), order=order)
    return DistMatrix(local, layout, comm, order)
