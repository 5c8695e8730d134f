"""The dot strategy against numpy, on however many ranks pytest-mpi runs us with.

    mpiexec -n k python -m pytest --with-mpi tests/mpi/test_dot.py   (k = 1..4)

Every rank calls matmul; the root compares C with numpy's A @ B: exactly
for ints (wrap-around included) and bool, within rounding for floats.
"""

import numpy as np
import pytest
from mpi4py import MPI

from mpimat import matmul
from mpimat.stats import Stats

comm = MPI.COMM_WORLD


def operands(shape, dtype_a, dtype_b=None, seed=0):
    m, k, n = shape
    rng = np.random.default_rng(seed)

    def make(r, c, dtype):
        dtype = np.dtype(dtype)
        if dtype.kind == "b":
            return rng.random((r, c)) < 0.5
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max, size=(r, c), endpoint=True, dtype=dtype)
        if dtype.kind == "c":
            return (rng.standard_normal((r, c)) + 1j * rng.standard_normal((r, c))).astype(dtype)
        return rng.standard_normal((r, c)).astype(dtype)

    return make(m, k, dtype_a), make(k, n, dtype_b or dtype_a)


def check(C, A, B):
    ref = A @ B
    assert C.shape == ref.shape
    assert C.dtype == ref.dtype
    if ref.dtype.kind in "biu":
        np.testing.assert_array_equal(C, ref)
    else:
        k = A.shape[1]
        eps = np.finfo(ref.dtype).eps
        scale = (np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64)) if k else 0
        assert np.all(np.abs(C.astype(np.complex128) - ref) <= 4 * max(k, 1) * eps * scale + 1e-30)


def run(A, B, **options):
    stats = Stats()
    C = matmul(A if comm.rank == 0 else None, B if comm.rank == 0 else None, comm=comm,
               strategy="dot", stats=stats, **options)
    return C, stats


SHAPES = [(1, 1, 1), (5, 1, 7), (40, 3, 2), (2, 9, 40), (1, 30, 1), (3, 4, 1), (0, 4, 5), (4, 0, 5), (4, 5, 0),
          (23, 17, 19)]


@pytest.mark.mpi
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("keep", [False, True])
def test_shapes_match_numpy(shape, K, keep):
    A, B = operands(shape, np.float64)
    C, stats = run(A, B, tasks_per_message=K, keep_blocks=keep)
    if comm.rank == 0:
        check(C, A, B)
        m, _, n = shape
        assert stats.extra["tasks"] == m * n
        assert stats.extra["tasks_per_message"] == K
    else:
        assert C is None


@pytest.mark.mpi
@pytest.mark.parametrize("dtypes", [
    ("float16", None), ("float32", None), ("float64", None), ("complex64", None), ("complex128", None),
    ("int8", None), ("uint8", None), ("int32", None), ("int64", None), ("bool", None),
    ("int8", "float32"), ("uint16", "int16"), ("bool", "int32"), ("float16", "complex64"),
])
@pytest.mark.parametrize("keep", [False, True])
def test_dtypes_match_numpy(dtypes, keep):
    A, B = operands((11, 13, 9), *dtypes, seed=3)
    C, _ = run(A, B, tasks_per_message=3, keep_blocks=keep)
    if comm.rank == 0:
        check(C, A, B)


@pytest.mark.mpi
def test_integer_wraparound_is_numpys():
    A = np.full((3, 50), 100, dtype=np.int8)
    B = np.full((50, 4), 100, dtype=np.int8)
    C, _ = run(A, B)
    if comm.rank == 0:
        np.testing.assert_array_equal(C, A @ B)  # 50 * 10000 wraps modulo 256
        assert C.dtype == np.int8


@pytest.mark.mpi
def test_more_ranks_than_tasks():
    A, B = operands((1, 5, 2), np.int64)
    C, stats = run(A, B, window=3)
    if comm.rank == 0:
        check(C, A, B)
        assert stats.extra["tasks"] == 2


@pytest.mark.mpi
def test_every_task_accounted_for_and_reported():
    A, B = operands((12, 6, 10), np.float64)
    C, stats = run(A, B, tasks_per_message=7)
    done = comm.gather(stats.extra["tasks_computed"], root=0)
    if comm.rank == 0:
        check(C, A, B)
        assert sum(done) == 120
        e = stats.extra
        batches = -(-120 // 7)
        if comm.size == 1:
            assert done == [120] and e["messages"] == 0
        else:
            # batches out, as many answers back, and one stop per slot.
            assert e["messages"] == 2 * batches + (comm.size - 1) * e["window"]
            assert e["rows_sent"] == e["cols_sent"] == 120  # no keep: every task carries both
            assert stats.bytes_sent > 120 * 6 * 8 * 2
        assert e["dot_products_per_second"] > 0


@pytest.mark.mpi
def test_keep_blocks_reuses_and_evicts():
    A, B = operands((9, 5, 31), np.int16, seed=5)
    # A budget of 3 rows/columns forces the LRU cache to evict constantly.
    C, stats = run(A, B, tasks_per_message=2, keep_blocks=True, keep_budget_bytes=5 * 2 * 3)
    if comm.rank == 0:
        check(C, A, B)
        if comm.size > 1:
            e = stats.extra
            assert e["keep_cache_slots"] == {"rows": 3, "cols": 3}
            assert e["rows_sent"] + e["rows_reused"] == 9 * 31
            assert e["rows_reused"] > 0


@pytest.mark.mpi
def test_fortran_order_and_noncontiguous_inputs():
    A, B = operands((8, 6, 7), np.float32, seed=9)
    A = np.asfortranarray(A)
    C, _ = run(A, B[:, ::-1] if comm.rank == 0 else None)
    if comm.rank == 0:
        check(C, A, B[:, ::-1])


@pytest.mark.mpi
def test_bad_input_raises_everywhere_without_hanging():
    A = np.ones((3, 4))
    B = np.ones((5, 2))
    with pytest.raises(ValueError, match="shape mismatch"):
        run(A, B)
    # The communicator is still usable afterwards.
    C, _ = run(np.ones((2, 2)), np.ones((2, 2)))
    if comm.rank == 0:
        np.testing.assert_array_equal(C, np.full((2, 2), 2.0))


@pytest.mark.mpi
@pytest.mark.parametrize("budget", [None, 8 * 13 * 3])
def test_keep_blocks_stays_in_step_with_the_workers(budget):
    # Regression: answers that arrive out of slot order must not let the
    # root's cache mirror run ahead of a worker (wrong rows were used).
    rng = np.random.default_rng(11)
    options = {"tasks_per_message": 3, "keep_blocks": True}
    if budget:
        options["keep_budget_bytes"] = budget
    for _ in range(25):
        A = rng.integers(-50, 50, (11, 13)).astype(np.int64)
        B = rng.integers(-50, 50, (13, 9)).astype(np.int64)
        C, _ = run(A, B, **options)
        if comm.rank == 0:
            np.testing.assert_array_equal(C, A @ B)
