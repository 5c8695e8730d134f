"""Local compute: one tile of C with one BLAS call.

numpy's matmul hands float and complex tiles to BLAS (integer, bool and
float16 tiles go through numpy's own exact loops, with the same wrap-around
as `A @ B`).  The BLAS thread count is set here, at run time, because ranks
sharing a node would otherwise each start one thread per core and fight.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np


def default_blas_threads(ranks_on_node: int) -> Optional[int]:
    """One BLAS thread per rank when ranks share a node; else BLAS's own default.

    None means "leave BLAS alone" (a rank alone on its node uses every core).
    """
    return None if ranks_on_node <= 1 else 1


_blas_libraries = None  # [(get, set)] per BLAS library, found by the first blas_threads


def _thread_controls(lib) -> tuple:
    """(get, set) of one BLAS library's thread count (lib: a threadpoolctl controller).

    A pthreads OpenBLAS is driven through its own C functions: a ctypes call
    costs ~0.3 us, threadpoolctl's methods 1-2 us (symbol lookup and a lock),
    and a loop of small products sets and restores the count every call.
    Other libraries (and threadpoolctl releases without _get_symbol) keep
    threadpoolctl's methods.
    """
    symbol = getattr(lib, "_get_symbol", None)
    if lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) == "pthreads" and symbol:
        get, set_ = symbol("openblas_get_num_threads"), symbol("openblas_set_num_threads")
        if get is not None and set_ is not None:
            return get, set_
    return lib.get_num_threads, lib.set_num_threads


class blas_threads:
    """`with blas_threads(threads):` limits BLAS to `threads` threads inside the block (None: no limit).

    The BLAS libraries are found once per process (threadpoolctl inspects
    every loaded library, about a millisecond); then each library's thread
    count is read and set directly, only where it differs (a few
    microseconds: threadpoolctl's own limit() costs ~50 us per call, more
    than a small product).  A class rather than a generator: a loop of small
    products enters it every call.
    """

    __slots__ = ("threads", "changed")

    def __init__(self, threads: Optional[int]):
        self.threads, self.changed = threads, ()

    def __enter__(self) -> None:
        global _blas_libraries
        if self.threads is None:
            return
        if _blas_libraries is None:
            from threadpoolctl import ThreadpoolController

            _blas_libraries = [_thread_controls(lib) for lib in ThreadpoolController().lib_controllers
                               if lib.user_api == "blas"]
        changed = []
        for get, set_ in _blas_libraries:
            before = get()
            if before != self.threads:
                set_(self.threads)
                changed.append((set_, before))
        self.changed = changed

    def __exit__(self, *exc) -> None:
        for set_, before in self.changed:
            set_(before)
        self.changed = ()


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
