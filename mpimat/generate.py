"""Seeded random inputs: any block of A or B, on any rank, without the rest.

The matrices are cut into fixed tiles of TILE x TILE entries (edge tiles are
smaller: a tile is clipped to the matrix).  Each tile has its own
counter-based generator, numpy's Philox4x64:

    key     = SeedSequence(seed, spawn_key=(0 for A, 1 for B)).generate_state(2, uint64)
    counter = [0, 0, tile_row, tile_col]

so the values of a tile depend on (seed, matrix, tile) and the matrix shape
only (the shape fixes the edge tiles' sizes), and are filled row-major
within the tile.  The tile's own draws advance the low counter words;
they would need 2^128 draws to reach the words holding the tile index, so
no two tiles ever share a counter.  Consequences:

- any rank can generate any block (`random_block`) touching only the tiles
  that overlap it, and the values do not depend on the block decomposition,
  the number of ranks, the grid or the strategy;
- the root generates a whole pair (`random_pair`, or `fill_pair` into
  buffers it already has) on several threads, one band of tile rows per
  task: numpy's Generator releases the GIL while it fills an array, and
  each tile has its own bit generator (no lock shared between threads).

Tile size: 256 x 256 (512 KiB of float64) keeps a tile in the L2 cache
while it is copied into place, makes the per-tile cost (a Philox and a
Generator, ~10 us) negligible against the ~0.8 ms fill, and bounds the
waste of a block that cuts tiles to one tile's border on each side.
A tile is drawn into a scratch buffer and copied into place: numpy fills
only contiguous arrays, and a tile is a strided piece of its matrix.

Values (per dtype, the same distributions as before): standard normal
floats (float32 and float64 drawn in their own precision, float16 drawn in
float32 and longdouble in float64, then cast), complex numbers standard
normal in both parts (drawn interleaved in the part's precision, complex256
via complex128), integers uniform in [-100, 100]
clipped to the dtype's range (small, so integer products are meaningful
before they wrap), bool True or False with probability 1/2.

Changed with this release: before it, one PCG64 stream (default_rng(seed))
generated A and then B, so the matrices for a given seed differ from the
ones earlier versions gave.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Optional, Tuple

import numpy as np

from .buffers import map_pages

TILE = 256
MATRICES = {"A": 0, "B": 1}


def tile_key(seed: int, matrix: str) -> np.ndarray:
    """The Philox key of matrix `matrix` ("A" or "B") for `seed`."""
    if matrix not in MATRICES:
        raise ValueError(f"matrix= must be 'A' or 'B', got {matrix!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed= must be a non-negative integer, got {seed!r}")
    ss = np.random.SeedSequence(int(seed), spawn_key=(MATRICES[matrix],))
    return ss.generate_state(2, np.uint64)


def tile_generator(key: np.ndarray, tile_row: int, tile_col: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=key, counter=[0, 0, tile_row, tile_col]))


def fill_tile(gen: np.random.Generator, tile: np.ndarray) -> None:
    """Fill the C-contiguous array `tile` (native byte order) with its values."""
    dtype = tile.dtype
    shape = tile.shape
    if dtype.kind == "b":
        tile[...] = gen.integers(0, 1, size=shape, dtype=np.bool_, endpoint=True)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        tile[...] = gen.integers(max(info.min, -100), min(info.max, 100), size=shape, dtype=dtype,
                                 endpoint=True)
    elif dtype.kind == "c":
        part = np.dtype(np.float32) if dtype == np.complex64 else np.dtype(np.float64)
        if dtype in (np.complex64, np.complex128):
            # (re, im) interleaved: the tile itself, viewed as reals.
            gen.standard_normal(dtype=part, out=tile.view(part))
        else:  # clongdouble: draw complex128, cast
            tmp = np.empty(shape, np.complex128)
            gen.standard_normal(out=tmp.view(np.float64))
            tile[...] = tmp
    elif dtype in (np.float32, np.float64):
        gen.standard_normal(dtype=dtype, out=tile)
    else:  # float16 from float32, longdouble from float64
        tile[...] = gen.standard_normal(size=shape, dtype=np.float32 if dtype == np.float16 else np.float64)


def random_block(seed: int, matrix: str, shape: Tuple[int, int], dtype, rows: Tuple[int, int],
                 cols: Tuple[int, int], order: str = "C", out: Optional[np.ndarray] = None) -> np.ndarray:
    """full[rows[0]:rows[1], cols[0]:cols[1]] of matrix `matrix` ("A" or "B") of `shape`.

    Generates only the tiles that overlap the block.  `out`, if given, is
    filled in place (any layout, shape rows x cols, dtype `dtype`) and
    returned; otherwise a new array in `order` ("C" or "F").
    """
    dtype = np.dtype(dtype)
    m, n = (int(s) for s in shape)
    r0, r1 = (int(r) for r in rows)
    c0, c1 = (int(c) for c in cols)
    if not (0 <= r0 <= r1 <= m and 0 <= c0 <= c1 <= n):
        raise ValueError(f"rows={rows} and cols={cols} must lie within shape={shape}")
    if out is None:
        out = np.empty((r1 - r0, c1 - c0), dtype=dtype, order=order)
    elif out.shape != (r1 - r0, c1 - c0) or out.dtype != dtype:
        raise ValueError(f"out= is {out.shape} {out.dtype}, needs {(r1 - r0, c1 - c0)} {dtype}")
    if out.size == 0:
        return out
    key = tile_key(seed, matrix)
    native = dtype.newbyteorder("=")
    scratch = np.empty(TILE * TILE, dtype=native)  # one tile, reused
    for ti in range(r0 // TILE, (r1 - 1) // TILE + 1):
        t_r0, t_r1 = ti * TILE, min(m, (ti + 1) * TILE)
        for tj in range(c0 // TILE, (c1 - 1) // TILE + 1):
            t_c0, t_c1 = tj * TILE, min(n, (tj + 1) * TILE)
            tile = scratch[:(t_r1 - t_r0) * (t_c1 - t_c0)].reshape(t_r1 - t_r0, t_c1 - t_c0)
            fill_tile(tile_generator(key, ti, tj), tile)
            a, b = max(r0, t_r0), min(r1, t_r1)
            c, d = max(c0, t_c0), min(c1, t_c1)
            out[a - r0:b - r0, c - c0:d - c0] = tile[a - t_r0:b - t_r0, c - t_c0:d - t_c0]
    return out


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def fill_band(seed: int, matrix: str, out: np.ndarray, r0: int, r1: int) -> None:
    """Rows r0:r1 of `out` (the whole matrix), its pages mapped first where they are
    contiguous: the band's writer maps them in one call (buffers.map_pages), so the
    processes or threads filling a matrix also share the page faults."""
    band = out[r0:r1]
    map_pages(band)
    random_block(seed, matrix, out.shape, out.dtype, (r0, r1), (0, out.shape[1]), out=band)


def band_tasks(seed: int, matrix: str, out: np.ndarray):
    """Callables filling `out` (the whole matrix) one band of tile rows each."""
    m = out.shape[0]
    return [partial(fill_band, seed, matrix, out, r, min(m, r + TILE)) for r in range(0, m, TILE)]


def random_pair(m: int, k: int, n: int, dtype, seed: Optional[int], threads: Optional[int] = None):
    """A (m x k) and B (k x n), C order, generated on `threads` threads.

    threads=None: every core this process may run on.  The values are those
    of random_block whatever the thread count.  seed=None draws a fresh seed
    (from the OS) for this pair.
    """
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
    dtype = np.dtype(dtype)
    A = np.empty((m, k), dtype=dtype)
    B = np.empty((k, n), dtype=dtype)
    return fill_pair(A, B, seed, threads)


def fill_pair(A: np.ndarray, B: np.ndarray, seed: int, threads: Optional[int] = None, part: int = 0,
              parts: int = 1):
    """Fill existing arrays A and B (any layout) with the pair for `seed`; returns (A, B).

    For callers that own their buffers (already mapped memory, shared
    windows): the values are random_pair's for A's and B's shapes.  With
    parts > 1 only share `part` of the bands is filled (of A's bands then
    B's, every parts-th from the part-th), so `parts` processes sharing the
    memory fill it together, each about as much of A as of B.
    """
    threads = available_cores() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads= must be at least 1, got {threads}")
    if not 0 <= part < parts:
        raise ValueError(f"part= must lie in [0, parts={parts}), got {part}")
    tasks = (band_tasks(seed, "A", A) + band_tasks(seed, "B", B))[part::parts]
    if threads == 1 or len(tasks) <= 1:
        for task in tasks:
            task()
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
            for done in [pool.submit(task) for task in tasks]:
                done.result()
    return A, B
