"""Local product kernels: who computes a tile of C, given numpy tiles of A and B.

A kernel takes numpy arrays in host memory and writes numpy's result
(numpy's dtype, numpy's values up to the kernel's rounding) into a numpy
`out`; what happens inside (which library, which device, copies to and
from a device) is the kernel's business.  So movement and partitioning only
ever see numpy buffers, and a device kernel (cupy or torch on CUDA) fits
later as one more class here: copy in, multiply, copy out, with `supports`
saying which dtypes it does exactly as numpy would.  No GPU code ships
untested: there is no GPU on the machines this was written on.

- "numpy": numpy's matmul (BLAS for float and complex, numpy's own exact
  loops for integers, bool and float16); every dtype numpy multiplies.
- "torch": torch's CPU matmul (MKL / oneDNN), zero copy through
  torch.from_numpy.  Only equal float32, float64, complex64 or complex128
  operands in native byte order: for float16, bool, integers (torch's
  integer matmul is no faster and its overflow is undefined behaviour in
  C++, not numpy's defined wrap-around) and mixed kinds the caller uses
  numpy (`for_dtypes` makes that choice).  torch is an optional extra
  (`pip install 'mpimat[torch]'`): install a CPU build of torch (PyTorch's
  CPU wheel index; PyPI's default Linux wheel pulls CUDA libraries).
- "auto": per dtype, the kernel a measurement found faster on this machine
  (a table from calibration, `AutoKernel(table)`); numpy where none.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Optional

import numpy as np

from .compute import blas_threads

KERNELS = ("numpy", "torch", "auto")


class KernelUnavailable(RuntimeError):
    """The kernel's library is not installed."""


class Kernel:
    """The interface; subclasses say which dtype pairs they do exactly as numpy."""

    name = "kernel"

    def supports(self, dtype_a, dtype_b) -> bool:
        raise NotImplementedError

    def matmul(self, a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """a @ b with numpy's result dtype, into `out` when given (returned)."""
        raise NotImplementedError

    @contextmanager
    def threads(self, count: Optional[int]):
        """The kernel uses `count` threads inside the block (None: its default)."""
        yield

    def for_dtypes(self, dtype_a, dtype_b) -> "Kernel":
        """This kernel if it supports the pair, else numpy's (which does every pair)."""
        return self if self.supports(dtype_a, dtype_b) else NUMPY

    def add_product(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float) -> bool:
        """c = a @ b + beta * c in place, without a temporary of c's size (SUMMA's panel step).

        beta is 0 (c's old contents ignored, NaN included) or 1.  False when
        this kernel does not do it for these arrays: the caller then does
        (dist.gemm.Accumulator: numpy's BLAS, else numpy in row chunks).
        """
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class NumpyKernel(Kernel):
    name = "numpy"

    def supports(self, dtype_a, dtype_b) -> bool:
        try:
            np.result_type(np.dtype(dtype_a), np.dtype(dtype_b))
        except TypeError:
            return False
        return True

    def matmul(self, a, b, out=None):
        if out is None:
            return np.matmul(a, b)
        if out.size:
            np.matmul(a, b, out=out)
        return out

    def threads(self, count):
        return blas_threads(count)


class TorchKernel(Kernel):
    name = "torch"
    DTYPES = ("float32", "float64", "complex64", "complex128")

    def __init__(self):
        try:
            import torch
        except ImportError:
            raise KernelUnavailable("kernel 'torch' needs torch (a CPU build: pip install 'mpimat[torch]' "
                                    "from PyTorch's CPU wheel index)") from None
        self.torch = torch

    def supports(self, dtype_a, dtype_b) -> bool:
        da, db = np.dtype(dtype_a), np.dtype(dtype_b)
        return da == db and da.isnative and da.name in self.DTYPES

    def tensor(self, x: np.ndarray):
        # from_numpy shares memory; it refuses negative strides.
        if any(s < 0 for s in x.strides):
            x = np.ascontiguousarray(x)
        return self.torch.from_numpy(x)

    def matmul(self, a, b, out=None):
        if not self.supports(a.dtype, b.dtype):
            raise TypeError(f"kernel 'torch' does not multiply {a.dtype} by {b.dtype} as numpy does; "
                            f"use for_dtypes() to fall back to numpy")
        shape = (a.shape[0], b.shape[1])
        if out is None:
            out = np.empty(shape, dtype=a.dtype)
        elif out.shape != shape or out.dtype != a.dtype:
            raise ValueError(f"out= is {out.shape} {out.dtype}, needs {shape} {a.dtype}")
        if out.size == 0:
            return out
        if a.shape[1] == 0:  # numpy gives zeros; so does torch, but say it plainly
            out[...] = 0
            return out
        target = out if all(s >= 0 for s in out.strides) else np.empty(shape, dtype=out.dtype)
        self.torch.matmul(self.tensor(a), self.tensor(b), out=self.torch.from_numpy(target))
        if target is not out:
            out[...] = target
        return out

    def add_product(self, a, b, c, beta):
        # addmm_ is gemm with beta: no temporary when c is contiguous either
        # way (a row chunk of a C-order block is), nor for a and b with one
        # unit stride; beta = 0 ignores c's contents, as BLAS does.
        if not (self.supports(a.dtype, b.dtype) and c.dtype == a.dtype and c.flags.writeable
                and (c.flags.c_contiguous or c.flags.f_contiguous)):
            return False
        if c.size == 0 or a.shape[1] == 0:
            return False
        ct = self.torch.from_numpy(c)
        ct.addmm_(self.tensor(a), self.tensor(b), beta=beta, alpha=1)
        return True

    @contextmanager
    def threads(self, count):
        if count is None:
            yield
            return
        before = self.torch.get_num_threads()
        self.torch.set_num_threads(int(count))
        try:
            yield
        finally:
            self.torch.set_num_threads(before)


class AutoKernel(Kernel):
    """Per result dtype, the kernel named in `table` (numpy where absent or unsupported)."""

    name = "auto"

    def __init__(self, table: Optional[Dict[str, str]] = None):
        self.table = dict(table or {})

    def pick(self, dtype_a, dtype_b) -> Kernel:
        choice = self.table.get(np.dtype(dtype_a).name if np.dtype(dtype_a) == np.dtype(dtype_b) else "", "numpy")
        if choice == "numpy":
            return NUMPY
        try:
            kernel = get_kernel(choice)
        except KernelUnavailable:
            return NUMPY
        return kernel.for_dtypes(dtype_a, dtype_b)

    def supports(self, dtype_a, dtype_b) -> bool:
        return NUMPY.supports(dtype_a, dtype_b)

    def for_dtypes(self, dtype_a, dtype_b) -> Kernel:
        return self.pick(dtype_a, dtype_b)

    def matmul(self, a, b, out=None):
        return self.pick(a.dtype, b.dtype).matmul(a, b, out)


NUMPY = NumpyKernel()
_torch: Optional[TorchKernel] = None


def get_kernel(name: str, table: Optional[Dict[str, str]] = None) -> Kernel:
    """The kernel called `name` ("numpy", "torch" or "auto").

    KernelUnavailable when torch is asked for and missing; ValueError for
    an unknown name (the message names kernel=).  `table` is auto's choice
    per dtype, e.g. {"float64": "torch"} from calibration.
    """
    global _torch
    if name == "numpy":
        return NUMPY
    if name == "torch":
        if _torch is None:
            _torch = TorchKernel()
        return _torch
    if name == "auto":
        return AutoKernel(table)
    raise ValueError(f"kernel= must be one of {', '.join(KERNELS)}, got {name!r}")


def resolve(name: str, dtype_a, dtype_b) -> Kernel:
    """The kernel that runs for kernel=`name` and these dtypes: numpy's wherever the
    named one would not give numpy's result; "auto" reads this machine's calibration.

    KernelUnavailable and ValueError as get_kernel.
    """
    return get_kernel(name, calibrated() if name == "auto" else None).for_dtypes(dtype_a, dtype_b)


def calibrated() -> Dict[str, str]:
    """auto's table: calibrate's faster kernel per dtype on this machine ({} if never measured)."""
    from .calibration import kernel_table  # the file is read only when auto asks

    return kernel_table()


def preload(name: str) -> None:
    """Import now the library kernel=`name` may run here (torch's import takes seconds,
    which a caller timing its phases wants inside one).  Nothing is decided: a missing
    library or a bad name is for resolve and the agreement to report.
    """
    try:
        names = set(calibrated().values()) if name == "auto" else {name}
        for each in sorted(names - {"numpy"}):
            get_kernel(each)
    except (KernelUnavailable, ValueError):  # ValueError: a bad name or calibration file
        pass


def available() -> Dict[str, bool]:
    out = {}
    for name in ("numpy", "torch"):
        try:
            get_kernel(name)
            out[name] = True
        except KernelUnavailable:
            out[name] = False
    return out


def gflops(kernel: Kernel, n: int, dtype="float64", threads: Optional[int] = None, repeat: int = 3,
           seed: int = 0) -> float:
    """Best-of-`repeat` GFLOP/s of an n x n x n product (for calibration and benchmarks)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    best = float("inf")
    with kernel.threads(threads):
        kernel.matmul(a, b, out)  # warm-up: first touch, library start-up
        for _ in range(repeat):
            t0 = time.perf_counter()
            kernel.matmul(a, b, out)
            best = min(best, time.perf_counter() - t0)
    flops = (8 if dtype.kind == "c" else 2) * n ** 3
    return flops / best / 1e9
