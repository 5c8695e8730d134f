"""compute.blas_threads: the BLAS thread count inside the block, and the caller's afterwards."""

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

from mpimat import compute


def blas_counts():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_limits_inside_and_restores_after():
    with threadpool_limits(2, user_api="blas"):
        before = blas_counts()
        assert before and all(count == 2 for count in before)
        with compute.blas_threads(1):
            assert all(count == 1 for count in blas_counts())
            A = np.ones((64, 64))
            assert (A @ A == 64).all()
        assert blas_counts() == before
        with pytest.raises(RuntimeError):  # restored when the block raises, too
            with compute.blas_threads(1):
                raise RuntimeError("inside")
        assert blas_counts() == before
        with compute.blas_threads(None):  # no limit: BLAS untouched
            assert blas_counts() == before
        # The caller changes the count between calls: the next block restores the new one.
        with threadpool_limits(3, user_api="blas"):
            with compute.blas_threads(1):
                assert all(count == 1 for count in blas_counts())
            assert all(count == 3 for count in blas_counts())


def test_thread_controls_read_and_set_each_library():
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api != "blas":
            continue
        get, set_ = compute._thread_controls(lib)
        before = get()
        try:
            set_(1)
            assert get() == 1 == lib.get_num_threads()
        finally:
            set_(before)
        assert lib.get_num_threads() == before


class WithoutSymbols:
    """A threadpoolctl controller as releases without _get_symbol show it."""

    def __init__(self, lib):
        self.lib = lib
        self.internal_api, self.threading_layer = lib.internal_api, getattr(lib, "threading_layer", None)
        self.get_num_threads, self.set_num_threads = lib.get_num_threads, lib.set_num_threads


def test_thread_controls_fall_back_to_threadpoolctl_methods():
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas":
            plain = WithoutSymbols(lib)
            assert compute._thread_controls(plain) == (plain.get_num_threads, plain.set_num_threads)
