"""C += A @ B without a temporary: BLAS gemm with beta = 1.

SUMMA adds one panel product per step into the local block of C.  numpy's
matmul has no beta, so `C += a @ b` would allocate a C-sized temporary per
panel (and read and write C once more).  numpy links a 64-bit-integer
OpenBLAS (scipy-openblas) that exports the CBLAS gemm routines; we call them
through ctypes (the GIL is released during the call, and threadpoolctl's
limits apply because it is the same library).  Where that library cannot be
found, or for dtypes BLAS does not handle (integers, bool, float16, mixed
dtypes), the product goes through numpy in row chunks into a small reused
buffer and is added in place: integer sums wrap exactly as numpy's do.
"""

from __future__ import annotations

import ctypes
from typing import Callable, Optional

import numpy as np

ROW_MAJOR, COL_MAJOR = 101, 102
NO_TRANS, TRANS = 111, 112
CHUNK_BYTES = 8 << 20  # the numpy path's temporary

_BLAS_TYPES = {np.dtype(np.float32): "s", np.dtype(np.float64): "d",
               np.dtype(np.complex64): "c", np.dtype(np.complex128): "z"}
_routines = None


def _find_routines():
    """{dtype: cblas_?gemm with 64-bit integers} from numpy's own BLAS, or {}."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    out = {}
    for info in threadpool_info():
        if info.get("user_api") != "blas" or info.get("internal_api") != "openblas":
            continue
        try:
            lib = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        for dtype, t in _BLAS_TYPES.items():
            # Only the ILP64 names: their integer width is certain.
            for name in (f"scipy_cblas_{t}gemm64_", f"cblas_{t}gemm64_"):
                fn = getattr(lib, name, None)
                if fn is not None:
                    # Declared once, so a call converts plain ints and floats in C
                    # (building ctypes objects in Python cost most of a small call).
                    scalar = {"s": ctypes.c_float, "d": ctypes.c_double}.get(t, ctypes.c_void_p)
                    i64, ptr = ctypes.c_int64, ctypes.c_void_p
                    fn.argtypes = [ctypes.c_int] * 3 + [i64] * 3 + [scalar, ptr, i64, ptr, i64, scalar, ptr, i64]
                    fn.restype = None
                    out[dtype] = fn
                    break
        if out:
            return out
    return out


def routines():
    global _routines
    if _routines is None:
        _routines = _find_routines()
    return _routines


def _operand(X: np.ndarray, row_major: bool):
    """(trans, ld) describing X for a BLAS call in this major order, or None."""
    rows, cols = X.shape
    item = X.itemsize
    s0, s1 = X.strides
    if not row_major:  # column-major: the same question about X's transpose
        rows, cols, s0, s1 = cols, rows, s1, s0
    # Natural: unit stride along the fast (column) axis.
    if cols == 1 or s1 == item:
        ld = s0 // item if rows > 1 else max(1, cols)
        if s0 % item == 0 and ld >= max(1, cols):
            return NO_TRANS, ld
    if rows == 1 or s0 == item:
        ld = s1 // item if cols > 1 else max(1, rows)
        if s1 % item == 0 and ld >= max(1, rows):
            return TRANS, ld
    return None


def _blas_call(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float) -> bool:
    """c = a @ b + beta * c with BLAS; False if BLAS cannot take these arrays."""
    dtype = c.dtype
    fn = routines().get(dtype)
    if fn is None or a.dtype != dtype or b.dtype != dtype or not c.flags.writeable:
        return False
    if c.flags.c_contiguous:
        row_major = True
    elif c.flags.f_contiguous:
        row_major = False
    else:
        return False
    oa, ob = _operand(a, row_major), _operand(b, row_major)
    if oa is None or ob is None:
        return False
    m, k = a.shape
    n = b.shape[1]
    ldc = max(1, n) if row_major else max(1, m)
    if dtype.kind == "c":  # complex alpha and beta go by address
        scalars = np.array([1.0, beta], dtype=dtype)
        alpha, beta = scalars.ctypes.data, scalars.ctypes.data + dtype.itemsize
    else:
        alpha = 1.0
    fn(ROW_MAJOR if row_major else COL_MAJOR, oa[0], ob[0], m, n, k, alpha, a.ctypes.data, oa[1],
       b.ctypes.data, ob[1], beta, c.ctypes.data, ldc)
    return True


class Accumulator:
    """c (+)= a @ b for one SUMMA run: BLAS where it can, else numpy in row chunks.

    `poke` is called between chunks so non-blocking broadcasts keep moving
    while the rank computes (MPI progresses only inside MPI calls).
    `kernel` (mpimat.kernels, already chosen for the dtypes): a kernel whose
    add_product does the step (torch) does it; numpy's leaves it to BLAS here.
    """

    def __init__(self, c: np.ndarray, pieces: int = 4, kernel=None):
        self.c = c
        self.pieces = max(1, pieces)
        self.kernel = kernel
        self.tmp: Optional[np.ndarray] = None

    def chunks(self, rows: int, pieces: int):
        pieces = max(1, min(pieces, rows))
        q, r = divmod(rows, pieces)
        start = 0
        for i in range(pieces):
            stop = start + q + (1 if i < r else 0)
            yield start, stop
            start = stop

    def add(self, a: np.ndarray, b: np.ndarray, first: bool, poke: Optional[Callable[[], None]] = None) -> None:
        c = self.c
        if c.size == 0:
            if poke is not None:
                poke()
            return
        if a.shape[1] == 0:  # an empty panel adds nothing (a first one sets zeros)
            if first:
                c[...] = 0
            return
        # Chunks along C's contiguous direction: rows of a C-order block,
        # columns of a Fortran-order one.
        by_rows = c.flags.c_contiguous or not c.flags.f_contiguous
        extent = c.shape[0] if by_rows else c.shape[1]
        pieces = self.pieces if poke is not None else 1
        for lo, hi in self.chunks(extent, pieces):
            if by_rows:
                self._add(a[lo:hi], b, c[lo:hi], first)
            else:
                self._add(a, b[:, lo:hi], c[:, lo:hi], first)
            if poke is not None:
                poke()

    def _add(self, a, b, c, first: bool) -> None:
        beta = 0.0 if first else 1.0
        if self.kernel is not None and self.kernel.add_product(a, b, c, beta):
            return
        if _blas_call(a, b, c, beta):
            return
        if first:
            np.matmul(a, b, out=c)
            return
        self._numpy_add(a, b, c)

    def _numpy_add(self, a, b, c) -> None:
        # A reused temporary of at most CHUNK_BYTES, in row chunks of c.
        per_row = max(1, c.shape[1] * c.itemsize)
        rows = max(1, min(c.shape[0], CHUNK_BYTES // per_row))
        if self.tmp is None or self.tmp.size < rows * c.shape[1]:
            self.tmp = np.empty(rows * c.shape[1], dtype=c.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            for lo in range(0, c.shape[0], rows):
                hi = min(c.shape[0], lo + rows)
                tmp = self.tmp[:(hi - lo) * c.shape[1]].reshape(hi - lo, c.shape[1])
                np.matmul(a[lo:hi], b, out=tmp)
                np.add(c[lo:hi], tmp, out=c[lo:hi])
