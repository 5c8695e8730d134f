"""buffers: Workspace (a non-root rank's receive buffers kept between calls) and map_pages."""

import mmap
import os

import numpy as np
import pytest

from mpimat.buffers import Workspace, map_pages


def test_small_calls_reuse_one_buffer_with_the_asked_shapes_dtypes_and_orders():
    ws = Workspace(limit=1 << 20)
    specs = [((7, 5), "float64", "C"), ((5, 3), "complex64", "F"), ((2, 2), "int8", "C")]
    first = ws.arrays(specs)
    for a, (shape, dtype, order) in zip(first, specs):
        assert a.shape == shape and a.dtype == np.dtype(dtype)
        assert a.flags.c_contiguous if order == "C" else a.flags.f_contiguous
        assert a.ctypes.data % 64 == 0  # each starts on a cache line
    for a, b in zip(first, first[1:]):  # no overlap within one call
        assert not np.shares_memory(a, b)
    again = ws.arrays(specs)
    assert all(np.shares_memory(a, b) for a, b in zip(first, again))  # the next call: same memory
    for a in again:
        a[...] = 1
    assert all((a == 1).all() for a in again)


def test_large_calls_get_fresh_memory_and_nothing_is_kept_for_them():
    ws = Workspace(limit=1000)
    big = ws.arrays([((20, 10), "float64", "C")])  # 1600 bytes > limit
    assert ws.buffer.nbytes == 0
    assert not np.shares_memory(big[0], ws.arrays([((20, 10), "float64", "C")])[0])
    assert ws.arrays([]) == []


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_map_pages_maps_a_contiguous_array_in_one_call_and_leaves_strided_ones_alone():
    size = 32 << 20
    memory = mmap.mmap(-1, size)  # never touched: no page mapped yet
    a = np.frombuffer(memory, dtype=np.float64).reshape(-1, 1024)
    before = resident_bytes()
    assert map_pages(a[:, ::2]) is False  # strided: nothing done
    assert resident_bytes() - before < size // 4
    if not map_pages(a):
        pytest.skip("the kernel has no MADV_POPULATE_WRITE (Linux < 5.14)")
    assert resident_bytes() - before >= size * 9 // 10
    assert not a.any()  # mapped pages read as zeros, and stay writable
    a[-1, -1] = 2.0
    assert a.sum() == 2.0
    del a
    memory.close()
