"""Generation: the same matrices whatever the block decomposition or thread count."""

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpimat import generate
from mpimat.generate import TILE, random_block, random_pair

DTYPES = ["float16", "float32", "float64", "complex64", "complex128", "int8", "int16", "int32", "int64",
          "uint8", "uint16", "uint64", "bool", "longdouble", ">f8", "<i4", ">c16"]

# Shapes crossing tile borders (TILE = 256), with clipped edge tiles.
SHAPE_A = (TILE + 37, 2 * TILE + 5)
SHAPE_B = (2 * TILE + 5, 19)


def digest(X: np.ndarray) -> str:
    if X.dtype in (np.longdouble, np.clongdouble):
        # 80-bit long doubles carry padding bytes; their values come from float64 draws.
        X = X.astype(np.complex128 if X.dtype.kind == "c" else np.float64)
    return hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest()


def cuts(size, parts):
    """divmod block split of range(size) into `parts` pieces."""
    q, r = divmod(size, parts)
    edges = [0]
    for p in range(parts):
        edges.append(edges[-1] + q + (1 if p < r else 0))
    return list(zip(edges[:-1], edges[1:]))


def assemble(seed, matrix, shape, dtype, row_parts, col_parts, order="C"):
    full = np.empty(shape, dtype=dtype)
    for rows in cuts(shape[0], row_parts):
        for cols in cuts(shape[1], col_parts):
            full[rows[0]:rows[1], cols[0]:cols[1]] = random_block(seed, matrix, shape, dtype, rows, cols,
                                                                  order=order)
    return full


@pytest.fixture(scope="module")
def pairs():
    return {dtype: random_pair(*SHAPE_A, SHAPE_B[1], dtype, seed=11, threads=1) for dtype in DTYPES}


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocks_assemble_to_the_pair(pairs, dtype):
    A, B = pairs[dtype]
    assert A.dtype == np.dtype(dtype) and B.dtype == np.dtype(dtype)
    assert A.shape == SHAPE_A and B.shape == SHAPE_B
    assert A.flags.c_contiguous and B.flags.c_contiguous
    for grid in [(1, 1), (2, 1), (1, 3), (3, 2), (4, 4), (7, 5)]:
        assert digest(assemble(11, "A", SHAPE_A, dtype, *grid)) == digest(A), grid
        assert digest(assemble(11, "B", SHAPE_B, dtype, *grid, order="F")) == digest(B), grid


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_give_the_same_values(pairs, dtype):
    A, B = pairs[dtype]
    for threads in (2, 3, None):
        A2, B2 = random_pair(*SHAPE_A, SHAPE_B[1], dtype, seed=11, threads=threads)
        assert digest(A2) == digest(A) and digest(B2) == digest(B)


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), r=st.tuples(st.integers(0, SHAPE_A[0]), st.integers(0, SHAPE_A[0])),
       c=st.tuples(st.integers(0, SHAPE_A[1]), st.integers(0, SHAPE_A[1])), order=st.sampled_from("CF"),
       use_out=st.booleans())
def test_any_block_is_the_slice_of_the_full_matrix(pairs, dtype, r, c, order, use_out):
    A, _ = pairs[dtype]
    rows, cols = tuple(sorted(r)), tuple(sorted(c))
    out = None
    if use_out:
        out = np.empty((rows[1] - rows[0], cols[1] - cols[0]), dtype=dtype, order=order)
    got = random_block(11, "A", SHAPE_A, dtype, rows, cols, order=order, out=out)
    if use_out:
        assert got is out
    assert got.dtype == np.dtype(dtype)
    assert got.flags.f_contiguous if order == "F" else got.flags.c_contiguous
    assert np.array_equal(got, A[rows[0]:rows[1], cols[0]:cols[1]])


def test_strided_out_is_filled_in_place(pairs):
    A, _ = pairs["float64"]
    big = np.zeros((SHAPE_A[0], 2 * SHAPE_A[1]))
    view = big[:, ::2]
    random_block(11, "A", SHAPE_A, "float64", (0, SHAPE_A[0]), (0, SHAPE_A[1]), out=view)
    assert np.array_equal(view, A)
    assert not big[:, 1::2].any()


@pytest.mark.parametrize("order", ["C", "F"])
def test_fill_pair_fills_existing_buffers(pairs, order):
    A, B = pairs["float32"]
    A2, B2 = np.zeros(A.shape, np.float32, order=order), np.zeros(B.shape, np.float32, order=order)
    got = generate.fill_pair(A2, B2, 11, threads=2)
    assert got[0] is A2 and got[1] is B2
    assert np.array_equal(A2, A) and np.array_equal(B2, B)


def test_stable_values_within_the_run():
    first = [digest(X) for X in random_pair(70, 300, 40, "float64", seed=5)]
    again = [digest(X) for X in random_pair(70, 300, 40, "float64", seed=5)]
    assert first == again


def test_seeds_and_matrices_differ():
    A0, B0 = random_pair(TILE, TILE, TILE, "float64", seed=0)
    A1, B1 = random_pair(TILE, TILE, TILE, "float64", seed=1)
    assert not np.array_equal(A0, B0)
    assert not np.array_equal(A0, A1) and not np.array_equal(B0, B1)
    # Distinct tiles of one matrix are distinct streams.
    A, _ = random_pair(2 * TILE, 2 * TILE, 1, "float64", seed=0)
    tiles = [A[i:i + TILE, j:j + TILE] for i in (0, TILE) for j in (0, TILE)]
    assert len({digest(t) for t in tiles}) == 4


def test_large_seed_is_accepted():
    A, B = random_pair(3, 4, 5, "float64", seed=2**100 + 7)
    assert np.array_equal(A, random_block(2**100 + 7, "A", (3, 4), "float64", (0, 3), (0, 4)))


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex64"])
def test_values_look_standard_normal(dtype):
    A, _ = random_pair(512, 512, 1, dtype, seed=2)
    parts = [A.real, A.imag] if A.dtype.kind == "c" else [A]
    for part in parts:
        assert abs(float(part.mean())) < 0.01
        assert abs(float(part.std()) - 1) < 0.01


@pytest.mark.parametrize("dtype,lo,hi", [("int8", -100, 100), ("uint8", 0, 100), ("int64", -100, 100),
                                         ("uint16", 0, 100)])
def test_integer_range(dtype, lo, hi):
    A, B = random_pair(300, 300, 300, dtype, seed=3)
    for X in (A, B):
        assert X.min() == lo and X.max() == hi


def test_bool_is_balanced():
    A, _ = random_pair(512, 512, 1, "bool", seed=4)
    assert abs(float(A.mean()) - 0.5) < 0.01


@pytest.mark.parametrize("shape", [(0, 0, 0), (0, 5, 3), (4, 0, 3), (4, 5, 0), (1, 1, 1)])
def test_zero_sized_shapes(shape):
    m, k, n = shape
    A, B = random_pair(m, k, n, "float64", seed=0)
    assert A.shape == (m, k) and B.shape == (k, n)
    blk = random_block(0, "A", (m, k), "float64", (0, m), (0, k))
    assert blk.shape == (m, k) and np.array_equal(blk, A)
    assert random_block(0, "B", (k, n), "float64", (0, 0), (0, n)).shape == (0, n)


def test_parts_fill_the_pair_together(pairs):
    # Ranks sharing a window each fill a share; together, the same pair.
    A, B = pairs["float64"]
    A2, B2 = np.zeros_like(A), np.zeros_like(B)
    for part in range(3):
        generate.fill_pair(A2, B2, 11, threads=1, part=part, parts=3)
        if part == 0:  # one share alone leaves the rest untouched
            assert 0 < np.count_nonzero(A2) < A.size  # A has two bands of tile rows
    assert np.array_equal(A2, A) and np.array_equal(B2, B)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="matrix="):
        random_block(0, "C", (3, 3), "float64", (0, 3), (0, 3))
    with pytest.raises(ValueError, match="rows="):
        random_block(0, "A", (3, 3), "float64", (0, 4), (0, 3))
    with pytest.raises(ValueError, match="out="):
        random_block(0, "A", (3, 3), "float64", (0, 3), (0, 3), out=np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="threads="):
        random_pair(3, 3, 3, "float64", 0, threads=0)
    with pytest.raises(ValueError, match="part="):
        generate.fill_pair(np.empty((3, 3)), np.empty((3, 3)), 0, part=2, parts=2)
    for seed in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match="seed="):
            random_block(seed, "A", (3, 3), "float64", (0, 3), (0, 3))


def test_seed_none_is_fresh_but_consistent():
    A1, B1 = random_pair(4, 5, 6, "float64", seed=None)
    A2, _ = random_pair(4, 5, 6, "float64", seed=None)
    assert not np.array_equal(A1, A2)
    assert A1.shape == (4, 5) and B1.shape == (5, 6)


def test_tile_generators_run_in_parallel():
    """Each tile has its own bit generator, so threads never share a lock."""
    key = generate.tile_key(0, "A")
    g1, g2 = generate.tile_generator(key, 0, 0), generate.tile_generator(key, 0, 1)
    assert g1.bit_generator.lock is not g2.bit_generator.lock
