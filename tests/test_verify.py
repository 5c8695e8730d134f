"""Verification: a correct product never fails, a wrong one is caught."""

import numpy as np
import pytest

from mpimat import verify
from mpimat.generate import random_pair

FLOATS = ["float16", "float32", "float64", "complex64", "complex128"]
INTS = ["int8", "int16", "int32", "int64", "uint8", "uint64"]


@pytest.mark.parametrize("dtype", FLOATS + INTS + ["bool"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (40, 30, 20), (3, 1, 5), (200, 2, 1)])
def test_correct_product_passes(dtype, shape):
    A, B = random_pair(*shape, dtype, seed=3)
    C = A @ B
    assert verify.freivalds(A, B, C).passed
    assert verify.exact(A, B, C).passed


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"] + INTS)
def test_wrong_entry_is_caught(dtype):
    A, B = random_pair(60, 50, 40, dtype, seed=4)
    C = A @ B
    C[7, 9] += 5
    assert not verify.freivalds(A, B, C).passed
    assert not verify.exact(A, B, C).passed


def test_integer_wraparound_is_exact():
    rng = np.random.default_rng(0)
    A = rng.integers(-2**62, 2**62, size=(30, 30), dtype=np.int64)
    B = rng.integers(-2**62, 2**62, size=(30, 30), dtype=np.int64)
    C = A @ B  # wraps modulo 2**64
    assert verify.freivalds(A, B, C).passed
    C[0, 0] += 1
    assert not verify.freivalds(A, B, C).passed


def test_nan_and_inf_compared_by_pattern():
    A, B = random_pair(30, 20, 25, "float64", seed=5)
    A[3, 4] = np.nan
    B[2, 7] = np.inf
    A[10, 2] = -np.inf
    C = A @ B
    assert verify.freivalds(A, B, C).passed
    assert verify.exact(A, B, C).passed
    D = C.copy()
    D[3, 0] = 1.0  # numpy has NaN there
    assert not verify.freivalds(A, B, D).passed
    assert not verify.exact(A, B, D).passed


@pytest.mark.filterwarnings("ignore:overflow")
def test_overflow_to_inf_passes():
    A = np.full((4, 5), 300.0, dtype=np.float16)
    B = np.full((5, 3), 300.0, dtype=np.float16)
    C = A @ B  # inf in float16
    assert np.isinf(C).all()
    assert verify.freivalds(A, B, C).passed


def test_zero_sized_and_k_zero():
    A, B = np.ones((0, 4)), np.ones((4, 3))
    assert verify.freivalds(A, B, A @ B).passed
    A, B = np.ones((3, 0)), np.ones((0, 2))
    C = A @ B
    assert verify.freivalds(A, B, C).passed
    C[0, 0] = 1
    assert not verify.freivalds(A, B, C).passed


def test_bool_flip_caught_by_exact_and_sampling():
    A, B = random_pair(30, 20, 30, "bool", seed=6)
    C = A @ B
    C[5, 5] = ~C[5, 5]
    assert not verify.exact(A, B, C).passed
    # 64 sampled rows and columns cover a 30x30 product completely.
    assert not verify.freivalds(A, B, C).passed


def test_mixed_dtypes():
    A, _ = random_pair(20, 10, 1, "float32", seed=1)
    _, B = random_pair(1, 10, 15, "int32", seed=2)
    C = A @ B
    assert C.dtype == np.float64
    assert verify.freivalds(A, B, C).passed


# -- added with the one-pass check (issue 13) --------------------------------

ALL = FLOATS + INTS + ["int32", "uint16", "uint32", "bool", "longdouble"]


@pytest.mark.parametrize("dtype", sorted(set(ALL)))
def test_one_wrong_entry_fails_per_dtype(dtype):
    A, B = random_pair(60, 50, 40, dtype, seed=8)
    C = A @ B
    assert verify.freivalds(A, B, C).passed
    if C.dtype == np.bool_:
        C[7, 9] = ~C[7, 9]
    else:
        # float16's rigorous rounding bound is wide (eps = 1e-3, k = 50): a
        # change of 5 can hide in it; 1000 cannot.
        C[7, 9] += 1000 if C.dtype == np.float16 else 5
    # Fixed seeds: float16's error-to-bound ratio is at most about 12 here
    # (|C| 1 is in the bound), so a random x this small would hide it once
    # in ~2000 runs.
    verdict = verify.freivalds(A, B, C, seed=0)
    assert not verdict.passed, verdict.detail
    assert not verify.verify("freivalds", A, B, C, seed=1, threads=1).passed


@pytest.mark.parametrize("dtype", ["float64", "complex128", "int64"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_fortran_and_strided_operands(dtype, order):
    A, B = random_pair(70, 45, 33, dtype, seed=9)
    A, B = np.asarray(A, order=order), np.asarray(B, order=order)
    C = np.asarray(A @ B, order=order)
    assert verify.freivalds(A, B, C).passed
    assert verify.freivalds(A[::2], B, C[::2]).passed
    C[3, 4] += 1
    assert not verify.freivalds(A, B, C).passed


def test_tiny_error_in_a_large_entry_is_caught():
    """The bound is per row: an error far above one row's bound fails even
    when other rows have entries a million times larger."""
    A, B = random_pair(50, 40, 30, "float64", seed=10)
    A[0] *= 1e6
    C = A @ B
    assert verify.freivalds(A, B, C).passed
    C[20, 5] += 1e-6 * max(1.0, abs(C[20, 5]))
    assert not verify.freivalds(A, B, C).passed


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "int16", "uint64"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pass_is_independent_of_threads_and_blocks(dtype, threads, monkeypatch):
    A, B = random_pair(300, 257, 130, dtype, seed=12)
    C = A @ B
    X = verify.freivalds_vectors(C.shape[1], 3, C.dtype, seed=1)
    w = None if C.dtype.kind in "iu" else np.ones(C.shape[1])
    monkeypatch.setattr(verify, "PARALLEL_BYTES", 1)  # threads even for small matrices
    monkeypatch.setattr(verify, "PASS_BYTES", 4096)  # many panels
    got_x, got_w = verify.freivalds_pass(C, X, w, threads=threads)
    ref_x, ref_w = verify.freivalds_pass(C, X, w, threads=1)
    assert np.array_equal(got_x, ref_x)
    if w is not None:
        assert np.array_equal(got_w, ref_w)
        assert np.allclose(got_w, np.abs(C).astype(np.float64).sum(axis=1))
        assert np.allclose(got_x, C.astype(X.dtype) @ X)
    else:
        assert np.array_equal(got_x, C @ X)  # wraps as numpy does
    # Column blocks add up (the distributed check's reduction).
    parts = [verify.freivalds_pass(np.asfortranarray(C[:, a:b]), X[a:b], None if w is None else w[a:b],
                                   threads=threads) for a, b in [(0, 50), (50, 51), (51, 130)]]
    summed = sum(p[0] for p in parts)
    if w is None:
        assert np.array_equal(summed, got_x)
    else:
        assert np.allclose(summed, got_x)
        assert np.allclose(sum(p[1] for p in parts), got_w)


@pytest.mark.parametrize("dtype", ["float64", "complex64", "int32"])
def test_blockwise_pieces_give_the_verdict(dtype):
    """A distributed check: X from one seed, products per 2 x 2 block summed,
    judged per row block; the verdicts combine to the whole one."""
    A, B = random_pair(64, 48, 40, dtype, seed=13)
    C = A @ B
    m, k = A.shape
    n = C.shape[1]
    X = verify.freivalds_vectors(n, verify.default_rounds(C.dtype), C.dtype, seed=5)
    assert np.array_equal(X, verify.freivalds_vectors(n, X.shape[1], C.dtype, seed=5))
    floats = C.dtype.kind in "fc"
    ones = np.ones(n) if floats else None

    def check(C):
        BX = np.zeros((k, X.shape[1]), X.dtype)
        bB = np.zeros(k) if floats else None
        for cols in [(0, 17), (17, n)]:
            px, pw = verify.freivalds_pass(B[:, cols[0]:cols[1]], X[cols[0]:cols[1]],
                                           None if ones is None else ones[cols[0]:cols[1]])
            BX += px
            if floats:
                bB += pw
        verdicts = []
        for rows in [(0, 30), (30, m)]:
            CX = sum(verify.freivalds_pass(C[rows[0]:rows[1], a:b], X[a:b],
                                           None if ones is None else ones[a:b])[0] for a, b in [(0, 9), (9, n)])
            cb = sum(verify.freivalds_pass(C[rows[0]:rows[1], a:b], X[a:b], ones[a:b])[1]
                     for a, b in [(0, 9), (9, n)]) if floats else None
            ABX, bound = verify.freivalds_pass(A[rows[0]:rows[1]], BX, bB)
            verdicts.append(verify.freivalds_judge(CX, ABX, bound, cb, k, n, C.dtype))
        return verify.combine_verdicts(verdicts)

    good = check(C)
    assert good.passed and good.extra["rounds"] == X.shape[1]
    C[40, 3] += 5
    bad = check(C)
    assert not bad.passed


def test_judge_defers_non_finite_to_the_careful_path():
    A, B = random_pair(20, 10, 15, "float64", seed=14)
    A[2, 3] = np.inf
    B[4, 0] = 0.0
    with np.errstate(all="ignore"):
        C = A @ B
    X = verify.freivalds_vectors(15, 3, C.dtype, seed=0)
    ones = np.ones(15)
    BX, bB = verify.freivalds_pass(B, X, ones)
    CX, cb = verify.freivalds_pass(C, X, ones)
    ABX, bound = verify.freivalds_pass(A, BX, bB)
    assert verify.freivalds_judge(CX, ABX, bound, cb, 10, 15, C.dtype) is None
    verdict = verify.freivalds(A, B, C)
    assert verdict.passed and verdict.extra["recomputed_rows"] >= 1


def test_inf_times_zero_column_still_seen():
    """An inf in A facing an all-zero row of B gives NaN in C: still caught."""
    A, B = random_pair(10, 6, 8, "float64", seed=15)
    A[1, 2] = np.inf
    B[2] = 0.0
    with np.errstate(all="ignore"):
        C = A @ B
    assert np.isnan(C[1]).all()
    assert verify.freivalds(A, B, C).passed
    D = C.copy()
    D[1, 0] = 0.0
    assert not verify.freivalds(A, B, D).passed


def test_freivalds_vectors_bounds():
    X = verify.freivalds_vectors(1000, 3, "complex64", seed=2)
    assert X.dtype == np.complex128 and X.shape == (1000, 3)
    assert np.all(np.abs(X) <= 1)
    X = verify.freivalds_vectors(1000, 8, "uint8", seed=2)
    assert X.dtype == np.uint8 and X.min() == 0 and X.max() == 255
    with pytest.raises(ValueError, match="dtype="):
        verify.freivalds_vectors(3, 3, "bool")


@pytest.mark.parametrize("dtype", ["float64", "complex64"])
def test_threaded_pass_on_a_matrix_above_the_threshold(dtype):
    n = 1200  # C is 11.5 MB: above PARALLEL_BYTES, so the pass runs on threads
    A, B = random_pair(n, 300, n, dtype, seed=16)
    C = A @ B
    assert C.nbytes > verify.PARALLEL_BYTES
    assert verify.freivalds(A, B, C, threads=2).passed
    C[n - 1, 0] += 1e4  # far beyond complex64's rigorous bound here (about 10)
    assert not verify.freivalds(A, B, C, seed=0, threads=2).passed
    assert not verify.freivalds(np.asfortranarray(A), np.asfortranarray(B), np.asfortranarray(C),
                                seed=0, threads=2).passed


# -- PanelFreivalds: panels checked where they are computed (tiles' check_panels) ----------------

def tile_panels(m, n, shared):
    """Panels cut as tiles cuts them: the streamed operand in parts, the last part cut across."""
    if shared == "b":  # A streams in row parts; the last one's columns in pieces
        rows = [(0, m // 3), (m // 3, 2 * m // 3)]
        return [(r0, r1, 0, n) for r0, r1 in rows] + [(2 * m // 3, m, c0, c1) for c0, c1 in
                                                      [(0, n // 2), (n // 2, 3 * n // 4), (3 * n // 4, n)]]
    cols = [(0, n // 3), (n // 3, 2 * n // 3)]
    return [(0, m, c0, c1) for c0, c1 in cols] + [(r0, r1, 2 * n // 3, n) for r0, r1 in
                                                  [(0, m // 2), (m // 2, 3 * m // 4), (3 * m // 4, m)]]


def check_panels(A, B, C, shared, seed=0, views=False):
    """Each panel's verdict, from the panel's own rows of A and columns of B (copies: the
    rest is gone by then on a rank), or from views into A, B and C (the root's panels)."""
    checker = verify.PanelFreivalds(C.shape[0], C.shape[1], C.dtype, shared=shared, seed=seed)
    out = []
    for r0, r1, c0, c1 in tile_panels(*C.shape, shared):
        a, b, c = A[r0:r1, :], B[:, c0:c1], C[r0:r1, c0:c1]
        if not views:
            a, b, c = a.copy(), b.copy(), c.copy()
        out.append(checker.check(a, b, c, r0, c0))
    return out, checker


@pytest.mark.parametrize("shared", ["a", "b"])
@pytest.mark.parametrize("dtype", FLOATS + INTS + ["bool"])
def test_panels_of_a_correct_product_pass(dtype, shared):
    A, B = random_pair(61, 47, 53, dtype, seed=12)
    verdicts, checker = check_panels(A, B, A @ B, shared)
    assert all(v.passed for v in verdicts), [v.detail for v in verdicts]
    if dtype != "bool":
        # One pass per distinct shared range: the two regular panels share one, the tail's
        # three pieces have one each.
        assert len(checker.passes) == 4


@pytest.mark.parametrize("shared", ["a", "b"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex128", "int8", "uint64", "bool"])
def test_the_wrong_panel_and_only_it_fails(dtype, shared):
    A, B = random_pair(61, 47, 53, dtype, seed=13)
    C = A @ B
    panels = tile_panels(*C.shape, shared)
    r0, _, c0, _ = panels[3]  # a piece of the tail
    if C.dtype == np.bool_:
        C[r0 + 1, c0 + 2] = ~C[r0 + 1, c0 + 2]
    else:
        C[r0 + 1, c0 + 2] += 1000 if C.dtype == np.float16 else 5
    verdicts, _ = check_panels(A, B, C, shared, seed=1)
    assert [v.passed for v in verdicts] == [True, True, True, False, True]


@pytest.mark.parametrize("shared", ["a", "b"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_panels_as_views_of_the_roots_arrays(shared, order):
    A, B = random_pair(70, 45, 66, "float64", seed=14)
    A, B = np.asarray(A, order=order), np.asarray(B, order=order)
    C = np.asarray(A @ B, order=order)
    verdicts, _ = check_panels(A, B, C, shared, views=True)
    assert all(v.passed for v in verdicts)
    C[69, 65] *= 1 + 1e-9
    verdicts, _ = check_panels(A, B, C, shared, views=True)
    assert not verdicts[-1].passed and all(v.passed for v in verdicts[:-1])


@pytest.mark.parametrize("shared", ["a", "b"])
def test_panels_with_nan_and_inf_take_the_careful_path(shared):
    A, B = random_pair(40, 30, 36, "float64", seed=15)
    A[35, 4], B[2, 30] = np.nan, np.inf
    with np.errstate(invalid="ignore"):
        C = A @ B
    verdicts, _ = check_panels(A, B, C, shared)
    assert all(v.passed for v in verdicts), [v.detail for v in verdicts]
    C[35, 0] = 1.0  # numpy has NaN there
    verdicts, _ = check_panels(A, B, C, shared)
    assert [v.passed for v in verdicts].count(False) == 1


def test_panels_of_empty_and_k_zero_products():
    for m, k, n in [(0, 5, 7), (6, 0, 7)]:
        A, B = np.ones((m, k)), np.ones((k, n))
        checker = verify.PanelFreivalds(m, n, np.float64)
        assert checker.check(A, B, A @ B, 0, 0).passed
    C = np.zeros((6, 7))
    C[1, 1] = 1
    assert not verify.PanelFreivalds(6, 7, np.float64).check(np.ones((6, 0)), np.ones((0, 7)), C, 0, 0).passed
    with pytest.raises(ValueError, match="shared="):
        verify.PanelFreivalds(6, 7, np.float64, shared="c")
