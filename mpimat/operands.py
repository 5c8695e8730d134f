"""What `matmul` accepts: the dtype policy, memory order and result dtype.

Pure: numpy only, no MPI.  The root applies these rules before any data
moves (api.py broadcasts its verdict); the file readers apply the same
dtype policy to `.npy` headers before reading any data.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .errors import InputError

# dtype kinds numpy's matmul cannot take, or that we refuse outright.
REFUSED_KINDS = {
    "O": "object (pickled) arrays",
    "U": "string arrays",
    "S": "byte-string arrays",
    "V": "structured or void arrays",
    "M": "datetime arrays",
    "m": "timedelta arrays",
}


def check_dtype(dtype: np.dtype, what: str) -> None:
    """Raise InputError for dtypes that are not numbers or bools."""
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind in REFUSED_KINDS:
        label = REFUSED_KINDS.get(dtype.kind, "object (pickled) arrays")
        raise InputError(f"{what}: {label} are not supported (dtype {dtype})", kind="TypeError")


def native(a: np.ndarray) -> np.ndarray:
    """`a` in native byte order, C or Fortran contiguous (copy only if needed).

    MPI moves raw bytes and BLAS wants native order, so every operand is
    brought to this form once, on the root.
    """
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = np.ascontiguousarray(a)
    return a


def order_of(X: np.ndarray) -> str:
    """'F' for a Fortran-only contiguous array, else 'C'."""
    return "F" if X.flags.f_contiguous and not X.flags.c_contiguous else "C"


def result_dtype(dtype_a: np.dtype, dtype_b: np.dtype) -> np.dtype:
    """The dtype numpy's `A @ B` gives (matmul's own type resolution)."""
    try:
        return np.matmul(np.empty((0, 0), dtype_a), np.empty((0, 0), dtype_b)).dtype
    except TypeError as exc:
        raise InputError(f"numpy cannot multiply {dtype_a} by {dtype_b}: {exc}", kind="TypeError") from None


def as_matrices(A: np.ndarray, B: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """numpy's 1-D rules for `A @ B`: a 1-D A is a row (1, k), a 1-D B a column (k, 1) (views)."""
    return (A.reshape(1, -1) if A.ndim == 1 else A), (B.reshape(-1, 1) if B.ndim == 1 else B)


def as_numpy_result(C: np.ndarray, ndim_a: int, ndim_b: int):
    """The (m, n) product in the shape numpy's `A @ B` gives for operands of these ranks.

    A 1-D operand's dimension is dropped from the result; two 1-D operands
    give a scalar, as numpy does.
    """
    if ndim_a == 1 and ndim_b == 1:
        return C[0, 0]
    if ndim_a == 1:
        return C[0]
    if ndim_b == 1:
        return C[:, 0]
    return C


def check_operands(A, B) -> Tuple[np.ndarray, np.ndarray]:
    """Root-side validation; returns native-order, contiguous arrays of 1 or 2 dimensions.

    Vectors follow numpy's rules (as_matrices); stacks of matrices (3-D and
    more) and scalars are refused.
    """
    out = []
    for name, X in (("A", A), ("B", B)):
        if X is None:
            raise InputError(f"{name} is missing on the root rank")
        X = np.asarray(X)
        check_dtype(X.dtype, name)
        if X.ndim not in (1, 2):
            raise InputError(f"{name} must be a 1-D vector or a 2-D matrix, got {X.ndim}-D shape {X.shape}")
        out.append(native(X))
    A, B = out
    A2, B2 = as_matrices(A, B)
    if A2.shape[1] != B2.shape[0]:
        raise InputError(
            f"shape mismatch: A is {shape_text(A)} and B is {shape_text(B)}: "
            f"A's columns ({A2.shape[1]}) must equal B's rows ({B2.shape[0]})"
        )
    return A, B


def shared_mismatch(A, B, m: int, k: int, n: int, dtype_a, dtype_b, order_a: str, order_b: str) -> Optional[str]:
    """Why a non-root rank's own A and B are not views like the root's (matmul's
    shared=True: same shapes, dtypes and memory order), or None."""
    for name, X, shape, dtype, order in (("A", A, (m, k), dtype_a, order_a), ("B", B, (k, n), dtype_b, order_b)):
        if not isinstance(X, np.ndarray):
            return f"{name} is {type(X).__name__}, not an array like the root's"
        if X.ndim == 1:
            X = X.reshape(1, -1) if name == "A" else X.reshape(-1, 1)
        if X.shape != shape or X.dtype != dtype or not (X.flags.c_contiguous or X.flags.f_contiguous) \
                or order_of(X) != order:
            layout = f"{order_of(X)} order" if X.flags.c_contiguous or X.flags.f_contiguous else "strided"
            return (f"{name} is {'x'.join(map(str, X.shape))} {X.dtype.str} ({layout}) but the root's is "
                    f"{shape[0]}x{shape[1]} {np.dtype(dtype).str} ({order} order)")
    return None


def result_shape(m: int, n: int, ndim_a: int, ndim_b: int) -> tuple:
    """The shape of numpy's `A @ B` for an (m, n) product of operands of these ranks."""
    if ndim_a == 1:
        return (n,) if ndim_b == 2 else ()
    return (m,) if ndim_b == 1 else (m, n)


def out_mismatch(out, shape: tuple, dtype) -> Optional[str]:
    """Why `out` cannot take the product (matmul's out=: numpy's result shape and dtype,
    C-contiguous, writeable), or None."""
    dtype = np.dtype(dtype)
    if not isinstance(out, np.ndarray):
        return f"out= is {type(out).__name__}, not an array"
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
        how = "C-contiguous" if out.flags.c_contiguous else "not C-contiguous"
        how += "" if out.flags.writeable else ", read-only"
        return (f"out= is {'x'.join(map(str, out.shape)) or 'a scalar'} {out.dtype.str} ({how}); the product needs "
                f"a writeable C-contiguous {'x'.join(map(str, shape)) or 'scalar'} {dtype.str}")
    return None


def shape_text(X: np.ndarray) -> str:
    return "x".join(map(str, X.shape)) if X.ndim == 2 else f"a vector of {X.shape[0]}"
