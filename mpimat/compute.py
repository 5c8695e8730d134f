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


_blas_libraries = None


@contextmanager
def blas_threads(threads: Optional[int]):
    """Limit BLAS to `threads` threads inside the block (None: no limit).

    The BLAS libraries are found once per process (threadpoolctl inspects
    every loaded library, about a millisecond); then each library's thread
    count is read and set directly, only where it differs (a few
    microseconds: threadpoolctl's own limit() costs ~50 us per call, more
    than a small product).
    """
    global _blas_libraries
    if threads is None:
        yield
        return
    if _blas_libraries is None:
        from threadpoolctl import ThreadpoolController

        _blas_libraries = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    changed = []
    for lib in _blas_libraries:
        before = lib.get_num_threads()
        if before != threads:
            lib.set_num_threads(threads)
            changed.append((lib, before))
    try:
        yield
    finally:
        for lib, before in changed:
            lib.set_num_threads(before)


def local_product(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None, kernel=None) -> np.ndarray:
    """a @ b, into `out` when given (out has numpy's result dtype); on `kernel` (kernels.py) if given."""
    if kernel is not None:
        return kernel.matmul(a, b, out)
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
