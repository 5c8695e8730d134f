"""Local compute: one tile of C with one BLAS call.

numpy's matmul hands float and complex tiles to BLAS (integer, bool and
float16 tiles go through numpy's own exact loops, with the same wrap-around
as `A @ B`).  The BLAS thread count is set here, at run time, because ranks
sharing a node would otherwise each start one thread per core and fight.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Optional

import numpy as np


def default_blas_threads(ranks_on_node: int) -> Optional[int]:
    """One BLAS thread per rank when ranks share a node; else BLAS's own default.

    None means "leave BLAS alone" (a rank alone on its node uses every core).
    """
    return None if ranks_on_node <= 1 else 1


_controller = None


@contextmanager
def blas_threads(threads: Optional[int]):
    """Limit BLAS to `threads` threads inside the block (None: no limit).

    One ThreadpoolController is kept for the process: building one inspects
    every loaded library (about a millisecond), too slow to do per call.
    """
    global _controller
    if threads is None:
        yield
        return
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    with _controller.limit(limits=threads, user_api="blas"):
        yield


def local_product(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """a @ b, into `out` when given (out has numpy's result dtype)."""
    if out is None:
        return np.matmul(a, b)
    if out.size:
        np.matmul(a, b, out=out)
    return out


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
