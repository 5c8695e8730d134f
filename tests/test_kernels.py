"""Local kernels: numpy's values and dtype, whichever kernel runs; clean fallbacks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mpimat import kernels
from mpimat.generate import random_pair

ALL = ["float16", "float32", "float64", "complex64", "complex128", "int8", "int16", "int32", "int64", "uint8",
       "uint64", "bool"]
TORCH = ["float32", "float64", "complex64", "complex128"]


def tolerance_ok(got, want, A, B):
    """Within the gamma_k rounding bound of the product, entry-wise."""
    k = A.shape[1]
    eps = np.finfo(want.dtype).eps
    bound = np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64)
    return np.all(np.abs(got.astype(np.complex128) - want) <= 2 * (k + 2) * eps * bound + 1e-300)


@pytest.fixture(scope="module")
def torch_kernel():
    pytest.importorskip("torch")
    return kernels.get_kernel("torch")


@pytest.mark.parametrize("dtype", ALL)
def test_numpy_kernel_is_numpy_bitwise(dtype):
    A, B = random_pair(37, 29, 41, dtype, seed=1)
    out = np.empty((37, 41), dtype=(A @ B).dtype)
    got = kernels.get_kernel("numpy").matmul(A, B, out)
    assert got is out
    assert np.array_equal(got, A @ B)


@pytest.mark.parametrize("dtype", TORCH)
@pytest.mark.parametrize("shape", [(1, 1, 1), (64, 48, 80), (257, 130, 3), (5, 0, 4), (0, 3, 2)])
def test_torch_matches_numpy(torch_kernel, dtype, shape):
    A, B = random_pair(*shape, dtype, seed=2)
    want = A @ B
    out = np.full(want.shape, np.nan, dtype=want.dtype)
    got = torch_kernel.matmul(A, B, out)
    assert got is out and got.dtype == want.dtype
    assert tolerance_ok(got, want, A, B)


@pytest.mark.parametrize("dtype", TORCH)
def test_torch_strided_views_and_orders(torch_kernel, dtype):
    A, B = random_pair(90, 70, 60, dtype, seed=3)
    a = np.asfortranarray(A)[::2, 5:]        # strided, F-ordered
    b = B[5:, ::-1]                           # negative stride: copied for torch
    big = np.zeros((45, 200), dtype=A.dtype)
    out = big[:, 100:160]                     # a column block of a wider buffer
    torch_kernel.matmul(a, b, out)
    assert tolerance_ok(out, a @ b, a, b)
    assert not big[:, :100].any() and not big[:, 160:].any()
    rev = np.zeros((45, 60), dtype=A.dtype)[::-1]
    torch_kernel.matmul(a, b, rev)
    assert tolerance_ok(rev, a @ b, a, b)


@pytest.mark.parametrize("dtypes", [("float16", "float16"), ("bool", "bool"), ("int64", "int64"),
                                    ("int32", "int32"), ("uint8", "uint8"), ("float32", "float64"),
                                    ("float64", "complex128"), ("int32", "float64"), (">f8", ">f8")])
def test_torch_falls_back_to_numpy(torch_kernel, dtypes):
    da, db = dtypes
    assert not torch_kernel.supports(da, db)
    kernel = torch_kernel.for_dtypes(da, db)
    assert kernel.name == "numpy"
    A, _ = random_pair(20, 15, 1, da, seed=4)
    _, B = random_pair(1, 15, 25, db, seed=5)
    assert np.array_equal(kernel.matmul(A, B), A @ B)
    with pytest.raises(TypeError, match="torch"):
        torch_kernel.matmul(A, B)


def test_torch_supports_exactly_its_dtypes(torch_kernel):
    for dtype in TORCH:
        assert torch_kernel.supports(dtype, dtype)
        assert torch_kernel.for_dtypes(dtype, dtype) is torch_kernel


def test_torch_thread_control_restores(torch_kernel):
    import torch

    before = torch.get_num_threads()
    with torch_kernel.threads(1):
        assert torch.get_num_threads() == 1
        A, B = random_pair(50, 50, 50, "float64", seed=6)
        assert tolerance_ok(torch_kernel.matmul(A, B), A @ B, A, B)
    assert torch.get_num_threads() == before


def test_auto_picks_per_dtype_from_its_table():
    auto = kernels.get_kernel("auto", {"float64": "torch"})
    assert auto.for_dtypes("float32", "float32").name == "numpy"
    assert auto.for_dtypes("float64", "float32").name == "numpy"
    have_torch = kernels.available()["torch"]
    assert auto.for_dtypes("float64", "float64").name == ("torch" if have_torch else "numpy")
    A, B = random_pair(30, 20, 10, "float64", seed=7)
    assert tolerance_ok(auto.matmul(A, B), A @ B, A, B)
    assert kernels.get_kernel("auto").for_dtypes("float64", "float64").name == "numpy"


def test_unknown_kernel_names_the_parameter():
    with pytest.raises(ValueError, match="kernel="):
        kernels.get_kernel("cuda")


def test_missing_torch_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("no torch here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    monkeypatch.setattr(kernels, "_torch", None)
    with pytest.raises(kernels.KernelUnavailable, match=r"pip install 'mpimat\[torch\]'"):
        kernels.get_kernel("torch")
    assert kernels.available() == {"numpy": True, "torch": False}
    assert kernels.get_kernel("auto", {"float64": "torch"}).for_dtypes("float64", "float64").name == "numpy"


def test_gflops_measures_something():
    assert kernels.gflops(kernels.get_kernel("numpy"), 64, repeat=1) > 0


@pytest.mark.parametrize("name, table, imported", [
    ("torch", None, True),
    ("auto", {"float64": "torch"}, True),   # the calibration picks torch for some dtype
    ("auto", {"float64": "numpy"}, False),
    ("numpy", None, False),
    ("cuda", None, False),                  # a bad name is the agreement's to report, not preload's
])
def test_preload_imports_only_the_library_that_may_run(tmp_path, name, table, imported):
    pytest.importorskip("torch")
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"machine": {"latency": 1e-5, "bandwidth": 1e9, "gflops": 50.0},
                               **({"kernels": table} if table else {})}))
    code = f"import sys; from mpimat import kernels; kernels.preload({name!r}); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPIMAT_CALIBRATION": str(cal)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(imported)
