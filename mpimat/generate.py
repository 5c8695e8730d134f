"""Seeded random inputs, identical whatever the number of ranks.

Only the root generates: A first, then B, from one numpy Generator, in row
panels (so a float16 or complex matrix never needs a float64 copy of itself).
"""

from __future__ import annotations

import numpy as np

PANEL_ELEMENTS = 1 << 22


def random_matrix(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    out = np.empty(shape, dtype=dtype)
    rows, cols = shape
    step = max(1, PANEL_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        out[start:stop] = random_panel(rng, (stop - start, cols), dtype)
    return out


def random_panel(rng: np.random.Generator, shape, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        # Small values, so integer products are meaningful before they wrap.
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), size=shape, endpoint=True).astype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype in (np.float32, np.float64):
        return rng.standard_normal(shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def random_pair(m: int, k: int, n: int, dtype, seed: int):
    rng = np.random.default_rng(seed)
    A = random_matrix(rng, (m, k), dtype)
    B = random_matrix(rng, (k, n), dtype)
    return A, B
