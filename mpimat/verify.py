"""Checking C = A @ B on the root.

freivalds: Freivalds' randomized check.  For random vectors x, compare
    C x  with  A (B x)
which costs O(mk + kn + mn) per round instead of the O(mnk) product.
- floats/complex: the difference must stay within a rounding-error bound
  built from |A| (|B| |x|) and |C| |x| (the standard gamma_k bound for a
  dot product of length k), computed in double precision;
- integers: numpy's integer matmul wraps modulo 2^bits, and reduction mod
  2^bits is a ring homomorphism, so C x == A (B x) holds *exactly* in the
  wrapping dtype for the correct product: compared exactly;
- bool: the boolean semiring has no such trick (no subtraction), so 64
  random rows and 64 random columns of C are recomputed exactly: a spot
  check, not a proof; use --verify exact for certainty;
- NaN/inf: rows of A and columns of B holding non-finite values, and rows
  of C whose entries overflowed, are recomputed with numpy and compared by
  pattern (NaN where numpy has NaN, the same infinities), the rest goes
  through the randomized check.
Work is done in row panels, so the extra memory is one panel, not a copy
of A, B or C.

exact: recompute A @ B with numpy on the root and compare (small problems).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

PANEL_BYTES = 32 << 20


@dataclass
class Verdict:
    method: str
    passed: bool
    detail: str = ""
    extra: Dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, object]:
        out = {"method": self.method, "passed": self.passed, "detail": self.detail}
        out.update(self.extra)
        return out


def work_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.complex128) if dtype.kind == "c" else np.dtype(np.float64)


def eps_of(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).eps) if dtype.kind in "fc" else 0.0


def panels(nrows: int, ncols: int, itemsize: int):
    step = max(1, PANEL_BYTES // max(1, ncols * itemsize))
    for start in range(0, nrows, step):
        yield start, min(nrows, start + step)


def matvec(M: np.ndarray, x: np.ndarray, dtype: np.dtype, absolute: bool = False,
           rows: Optional[np.ndarray] = None, cols: Optional[np.ndarray] = None) -> np.ndarray:
    """(M or |M|)[rows][:, cols] @ x in `dtype`, one row panel at a time."""
    rows = np.arange(M.shape[0]) if rows is None else rows
    out = np.empty(rows.size, dtype=dtype)
    for a, b in panels(rows.size, M.shape[1], 16):
        panel = M[rows[a:b]] if rows.size != M.shape[0] else M[a:b]
        if cols is not None:
            panel = panel[:, cols]
        if absolute:
            panel = np.abs(panel)
        out[a:b] = panel.astype(dtype, copy=False) @ x
    return out


def nonfinite_rows(M: np.ndarray) -> np.ndarray:
    bad = np.zeros(M.shape[0], dtype=bool)
    for a, b in panels(M.shape[0], M.shape[1], M.itemsize):
        bad[a:b] = ~np.isfinite(M[a:b]).all(axis=1)
    return np.flatnonzero(bad)


def nonfinite_cols(M: np.ndarray) -> np.ndarray:
    bad = np.zeros(M.shape[1], dtype=bool)
    for a, b in panels(M.shape[0], M.shape[1], M.itemsize):
        bad |= ~np.isfinite(M[a:b]).all(axis=0)
    return np.flatnonzero(bad)


def same_values(got: np.ndarray, want: np.ndarray, A_abs_B: Optional[np.ndarray], k: int,
                dtype: np.dtype) -> bool:
    """Entry-wise comparison with NaN/inf compared by pattern."""
    if dtype.kind not in "fc":
        return bool(np.array_equal(got, want))
    got_w, want_w = got.astype(work_dtype(dtype)), want.astype(work_dtype(dtype))
    nan_g, nan_w = np.isnan(got_w), np.isnan(want_w)
    if not np.array_equal(nan_g, nan_w):
        return False
    inf_w = np.isinf(want_w)
    if not np.array_equal(np.isinf(got_w), inf_w) or not np.array_equal(got_w[inf_w], want_w[inf_w]):
        return False
    finite = np.isfinite(want_w)
    diff = np.abs(got_w[finite] - want_w[finite])
    if A_abs_B is None:
        scale = np.abs(want_w[finite])
    else:
        scale = A_abs_B[finite]
    tol = 4 * (k + 2) * eps_of(dtype) * scale + np.finfo(np.float64).tiny
    return bool(np.all(diff <= tol))


def recompute_check(A, B, C, rows=None, cols=None) -> bool:
    """Recompute whole rows and/or columns of C with numpy; compare."""
    with np.errstate(all="ignore"):  # overflow and inf - inf are expected here
        return _recompute_check(A, B, C, rows, cols)


def _recompute_check(A, B, C, rows, cols) -> bool:
    k = A.shape[1]
    if rows is not None and rows.size:
        want = A[rows] @ B
        bound = np.abs(A[rows]).astype(work_dtype(C.dtype)) @ np.abs(B).astype(work_dtype(C.dtype)) \
            if C.dtype.kind in "fc" else None
        if not same_values(C[rows], want, bound, k, C.dtype):
            return False
    if cols is not None and cols.size:
        want = A @ B[:, cols]
        bound = np.abs(A).astype(work_dtype(C.dtype)) @ np.abs(B[:, cols]).astype(work_dtype(C.dtype)) \
            if C.dtype.kind in "fc" else None
        if not same_values(C[:, cols], want, bound, k, C.dtype):
            return False
    return True


def freivalds(A: np.ndarray, B: np.ndarray, C: np.ndarray, rounds: Optional[int] = None,
              seed: Optional[int] = None) -> Verdict:
    rng = np.random.default_rng(seed)
    if C.size == 0:
        return Verdict("freivalds", True, "empty product")
    if A.shape[1] == 0:
        return Verdict("freivalds", bool(not np.any(C)), "k = 0: C must be all zeros")
    kind = C.dtype.kind
    if kind == "b":
        return bool_check(A, B, C, rng)
    if kind in "iu":
        return int_freivalds(A, B, C, rng, rounds or 8)
    return float_freivalds(A, B, C, rng, rounds or 3)


def int_freivalds(A, B, C, rng, rounds) -> Verdict:
    dt = C.dtype
    info = np.iinfo(dt)
    for _ in range(rounds):
        x = rng.integers(info.min, info.max, size=C.shape[1], dtype=dt, endpoint=True)
        with np.errstate(over="ignore"):
            left = matvec(C, x, dt)
            right = matvec(A, matvec(B, x, dt), dt)
        if not np.array_equal(left, right):
            bad = int(np.count_nonzero(left != right))
            return Verdict("freivalds", False, f"{bad} rows of C x != A (B x) (exact, modulo 2^{dt.itemsize * 8})",
                           {"rounds": rounds})
    return Verdict("freivalds", True, f"exact modular check, {rounds} rounds", {"rounds": rounds})


def bool_check(A, B, C, rng, samples: int = 64) -> Verdict:
    rows = np.sort(rng.choice(C.shape[0], size=min(samples, C.shape[0]), replace=False))
    cols = np.sort(rng.choice(C.shape[1], size=min(samples, C.shape[1]), replace=False))
    ok = recompute_check(A, B, C, rows, cols)
    return Verdict("freivalds", ok, f"bool: {rows.size} rows and {cols.size} columns recomputed exactly",
                   {"rows_checked": int(rows.size), "cols_checked": int(cols.size)})


def float_freivalds(A, B, C, rng, rounds) -> Verdict:
    wd = work_dtype(C.dtype)
    k = A.shape[1]
    bad_rows = nonfinite_rows(A)
    bad_cols = nonfinite_cols(B)
    # Overflow: finite inputs can still give inf in C (float16/float32).
    good_r = np.setdiff1d(np.arange(C.shape[0]), bad_rows)
    good_c = np.setdiff1d(np.arange(C.shape[1]), bad_cols)
    sub_rows = None if good_r.size == C.shape[0] else good_r
    sub_cols = None if good_c.size == C.shape[1] else good_c
    overflow = np.zeros(C.shape[0], dtype=bool)
    for a, b in panels(good_r.size, C.shape[1], C.itemsize):
        panel = C[good_r[a:b]] if sub_rows is not None else C[a:b]
        if sub_cols is not None:
            panel = panel[:, good_c]
        overflow[good_r[a:b]] = ~np.isfinite(panel).all(axis=1)
    bad_rows = np.union1d(bad_rows, np.flatnonzero(overflow))
    if not recompute_check(A, B, C, bad_rows, bad_cols):
        return Verdict("freivalds", False, "non-finite entries differ from numpy's pattern")
    rows = np.setdiff1d(np.arange(C.shape[0]), bad_rows)
    rows_sel = None if rows.size == C.shape[0] else rows
    eps = eps_of(C.dtype)
    # |x| <= 1 entry-wise, so bounds computed once with x = 1 hold for every
    # round: |A| (|B| 1) >= |A||B||x| and |C| 1 >= |C||x|.
    ones = np.ones(good_c.size)
    bound = matvec(A, matvec(B, ones, np.float64, True, cols=sub_cols), np.float64, True, rows=rows_sel)
    cbound = matvec(C, ones, np.float64, True, rows=rows_sel, cols=sub_cols)
    # gamma_k |A||B||x| bounds the error of the product itself; the check's
    # own matvecs (in double precision) add about (k + n) eps64 of the same.
    tol = 2 * eps * ((k + 2) * bound + (good_c.size + 2) * cbound) + 4 * np.finfo(np.float64).eps * (
        (k + good_c.size) * (bound + cbound)) + np.finfo(np.float64).tiny
    worst = 0.0
    for _ in range(rounds):
        x = rng.uniform(-1.0, 1.0, size=good_c.size)
        if wd.kind == "c":
            x = (x + 1j * rng.uniform(-1.0, 1.0, size=good_c.size)) / np.sqrt(2)
        x = x.astype(wd)
        cx = matvec(C, x, wd, rows=rows_sel, cols=sub_cols)
        abx = matvec(A, matvec(B, x, wd, cols=sub_cols), wd, rows=rows_sel)
        err = np.abs(cx - abx)
        ratio = float(np.max(err / tol)) if err.size else 0.0
        worst = max(worst, ratio)
        if not np.all(err <= tol):
            return Verdict("freivalds", False,
                           f"|C x - A (B x)| exceeds the rounding bound by {ratio:.3g}x",
                           {"rounds": rounds, "worst_error_ratio": worst})
    return Verdict("freivalds", True, f"{rounds} rounds, worst error {worst:.3g} of the rounding bound",
                   {"rounds": rounds, "worst_error_ratio": worst,
                    "recomputed_rows": int(bad_rows.size), "recomputed_cols": int(bad_cols.size)})


def exact(A: np.ndarray, B: np.ndarray, C: np.ndarray) -> Verdict:
    with np.errstate(all="ignore"):
        return _exact(A, B, C)


def _exact(A: np.ndarray, B: np.ndarray, C: np.ndarray) -> Verdict:
    want = A @ B
    if want.dtype != C.dtype or want.shape != C.shape:
        return Verdict("exact", False, f"numpy gives {want.shape} {want.dtype}, got {C.shape} {C.dtype}")
    if C.dtype.kind in "fc":
        wd = work_dtype(C.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            bound = np.abs(A).astype(wd) @ np.abs(B).astype(wd)
        ok = same_values(C, want, np.abs(bound), A.shape[1], C.dtype)
    else:
        ok = bool(np.array_equal(C, want))
    return Verdict("exact", ok, "compared with numpy's A @ B" + ("" if ok else ": values differ"))


def verify(method: str, A, B, C, seed: Optional[int] = None) -> Verdict:
    if method == "none":
        return Verdict("none", True, "not verified")
    if method == "exact":
        return exact(A, B, C)
    return freivalds(A, B, C, seed=seed)
