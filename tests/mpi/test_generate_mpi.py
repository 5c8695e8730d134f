"""Generation under 1..4 ranks: every rank generates its own block of A and B,
for every grid of the ranks, and the blocks are those of the root's pair.

Run as: mpiexec -n K python -m pytest --with-mpi tests/mpi   (K = 1..4)
"""

import hashlib

import numpy as np
import pytest
from mpi4py import MPI

from mpimat.generate import random_block, random_pair
from mpimat.partition import block, factor_pairs

pytestmark = pytest.mark.mpi

comm = MPI.COMM_WORLD

SHAPES = [(300, 517, 260), (5, 3, 1), (0, 4, 2)]
DTYPES = ["float64", "float32", "complex64", "int16", "bool"]


def digest(X: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_blocks_on_every_grid_match_the_root_pair(shape, dtype):
    m, k, n = shape
    root_pair = random_pair(m, k, n, dtype, seed=21) if comm.rank == 0 else None
    for rows, cols in factor_pairs(comm.size):
        r, c = divmod(comm.rank, cols)
        mine = []
        for name, (p, q) in (("A", (m, k)), ("B", (k, n))):
            rr, cc = block(p, rows, r), block(q, cols, c)
            X = random_block(21, name, (p, q), dtype, rr, cc, order="F" if name == "B" else "C")
            mine.append((name, rr, cc, digest(X)))
        everyone = comm.gather(mine, root=0)
        ok = True
        if comm.rank == 0:
            full = dict(zip("AB", root_pair))
            for blocks in everyone:
                for name, rr, cc, got in blocks:
                    ok &= got == digest(full[name][rr[0]:rr[1], cc[0]:cc[1]])
        assert comm.bcast(ok, root=0), f"grid {rows}x{cols}"


def test_sums_agree_across_ranks():
    """A buffer-based check too: the blocks' sums add up to the pair's sums."""
    m, k = 401, 333
    rr = block(m, comm.size, comm.rank)
    local = random_block(22, "A", (m, k), "float64", rr, (0, k))
    total = np.zeros(1)
    comm.Allreduce(np.array([local.sum(dtype=np.float64)]), total)
    A, _ = random_pair(m, k, 1, "float64", seed=22)
    assert np.isclose(total[0], A.sum(), rtol=1e-12, atol=1e-9)
