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
