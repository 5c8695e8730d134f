"""New arrays for data that is about to arrive: receive buffers, result panels, C.

Two things make a fresh buffer cheap to fill (measured on 2-core VMs, see
scripts/bench.py):
- Its pages are mapped before the data arrives.  A receive into never-
  touched memory runs at a fraction of copy speed (the kernel faults pages
  in one at a time inside the copy); mapping them first is several times
  cheaper (MADV_POPULATE_WRITE where the kernel has it, else touching one
  byte per page).
- Receive buffers and result panels use ordinary 4 KiB pages.  numpy asks
  for transparent huge pages on every large array; on virtual machines
  whose free memory is handed back to the host, a fresh huge page costs
  about twice as much to fault in as the same bytes in small pages, which
  are mostly recycled from memory the guest still holds (n=4096 on 2
  ranks: about 0.1 s of 1.8 s).  BLAS packs its inputs, so small pages do
  not slow it down.  C itself keeps numpy's huge pages (small=False): it is
  the caller's array, BLAS writes it in place (huge pages spare the TLB),
  and a caller multiplying in a loop gets recycled, already-mapped pages.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np

PAGE = mmap.PAGESIZE
_NOHUGEPAGE = getattr(mmap, "MADV_NOHUGEPAGE", None)  # Linux only
_POPULATE_WRITE = 23  # Linux >= 5.14: map every page in one call, ~25% faster than touching them


def _load_madvise():
    if _NOHUGEPAGE is None or not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _load_madvise()


def advise(flat: np.ndarray, advice: int) -> bool:
    """madvise the whole pages inside `flat`; False if refused or unavailable."""
    if _madvise is None or flat.nbytes < 2 * PAGE:
        return False
    address = flat.ctypes.data
    start = -(-address // PAGE) * PAGE
    end = (address + flat.nbytes) // PAGE * PAGE
    return end > start and _madvise(start, end - start, advice) == 0


def map_pages(a: np.ndarray) -> bool:
    """Map the whole pages under the contiguous array `a` in one call before it is written
    (MADV_POPULATE_WRITE); False (nothing done) if `a` is strided or the kernel cannot.

    Also for memory that is not fresh from numpy: arrays about to be filled
    in place, shared-memory windows.  Faulting pages in one at a time inside
    a fill costs several times more system time (2 ranks filling n = 8192 A
    and B in a shared window: 1.9-2.3 s with faults, 1.3-1.45 s mapped
    first; 2 threads filling private arrays: 1.3-2.5 s against 1.2-1.3 s).
    """
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        return False
    return advise(a.reshape(-1, order="A").view(np.uint8), _POPULATE_WRITE)


def fresh(shape, dtype, order: str = "C", small: bool = True) -> np.ndarray:
    """An uninitialised array, every page already mapped, in small pages if `small`.

    Small pages must be asked for before the pages are first touched: the
    advice decides how they are faulted in, it does not split huge pages.
    """
    out = np.empty(shape, dtype=dtype, order=order)
    flat = out.reshape(-1, order="A").view(np.uint8)
    if small:
        advise(flat, _NOHUGEPAGE)  # a refusal only costs speed
    if map_pages(out):
        flat[:1] = flat[-1:] = 0  # the partial pages at either end
    else:
        flat[::PAGE] = 0
    return out


# Receive buffers up to this size are kept between calls (Workspace).
WORKSPACE_BYTES = 64 << 20


class Workspace:
    """A non-root rank's receive buffers, kept between calls on one communicator.

    A solver multiplying small products in a loop would otherwise map fresh
    pages on every call (n=1024 on 2 ranks: 12 MB, several ms of a ~20 ms
    product).  Only calls whose buffers fit in `limit` bytes together are
    served from it, so a large product's memory still goes back when matmul
    returns; what is kept is at most `limit` bytes per communicator.
    """

    def __init__(self, limit: int = WORKSPACE_BYTES):
        self.limit = limit
        self.buffer = np.empty(0, dtype=np.uint8)
        self.used = 0

    def arrays(self, specs):
        """Arrays for [(shape, dtype, order)], from the kept buffer when they fit in it together
        (the arrays of the previous call are dead by then), else fresh."""
        specs = [(shape, np.dtype(dtype), order) for shape, dtype, order in specs]
        sizes = [int(np.prod(shape)) * dtype.itemsize for shape, dtype, _ in specs]
        starts = [sum(-(-s // 64) * 64 for s in sizes[:i]) for i in range(len(sizes))]
        need = starts[-1] + sizes[-1] if specs else 0
        if need > self.limit:
            return [fresh(shape, dtype, order) for shape, dtype, order in specs]
        if need + 64 > self.buffer.nbytes:  # + room to start on a cache line
            self.buffer = fresh((need + 64,), np.uint8)
        base = -self.buffer.ctypes.data % 64
        return [self.buffer[base + start:base + start + size].view(dtype).reshape(shape, order=order)
                for start, size, (shape, dtype, order) in zip(starts, sizes, specs)]
