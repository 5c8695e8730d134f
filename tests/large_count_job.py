"""Helper job for test_large_count.py: messages of more than 2^31 elements.

A is 2 x (2^31 + 8) int8, so the rows of A and the column of B that rank 1
receives are each over 2^31 elements (MPI-4 large counts).  int8 products
wrap exactly like numpy's.
"""

import sys

import numpy as np
from mpi4py import MPI

from mpimat import matmul

comm = MPI.COMM_WORLD
k = 2**31 + 8
A = B = None
if comm.rank == 0:
    A = np.ones((2, k), dtype=np.int8, order=sys.argv[1])
    A[1, -1] = 3
    B = np.ones((k, 1), dtype=np.int8)
C = matmul(A, B, comm=comm)
if comm.rank == 0:
    want = np.array([[k % 256], [(k + 2) % 256]]).astype(np.int8)  # numpy's wrap-around
    print("large-count result", C.ravel().tolist(), "expected", want.ravel().tolist())
    sys.exit(0 if C.dtype == np.int8 and np.array_equal(C, want) else 1)
