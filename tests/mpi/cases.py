"""What the MPI tests of both root-held matmul and mpimat.dist multiply, and how they compare with numpy."""

import numpy as np

SHAPES = [
    (1, 1, 1),
    (9, 1, 7),        # k = 1
    (301, 5, 3),      # tall-skinny
    (3, 5, 301),      # wide
    (1, 8, 1),        # fewer dot products than ranks
    (2, 3, 1),
    (0, 4, 5),        # zero-sized
    (5, 0, 4),        # empty inner dimension: zeros
    (4, 6, 0),
    (0, 0, 0),
    (37, 23, 41),
]
DTYPES = ["float16", "float32", "float64", "complex64", "complex128",
          "int8", "int16", "int32", "int64", "uint8", "uint32", "bool"]
RTOL = {"float16": 2e-2, "float32": 1e-4, "float64": 1e-11, "complex64": 1e-4, "complex128": 1e-11}


def check_same(C, R):
    assert C.shape == R.shape
    assert C.dtype == R.dtype
    if R.dtype.kind in "fc":
        scale = max(1.0, float(np.abs(R).max())) if R.size else 1.0
        tol = RTOL[R.dtype.name]
        np.testing.assert_allclose(C, R, rtol=tol, atol=tol * scale)
    else:
        np.testing.assert_array_equal(C, R)
