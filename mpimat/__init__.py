"""mpimat: distributed dense matrix multiplication (C = A @ B) over MPI.

    from mpimat import matmul
    C = matmul(A, B, comm=comm, root=0)   # C on root, None elsewhere

Importing mpimat never imports Lightning (that lives in mpimat.lightning).
"""

from .api import InputTypeError, matmul
from .errors import InputError, VerificationError

__version__ = "0.1.0"

__all__ = ["matmul", "InputError", "InputTypeError", "VerificationError", "__version__"]
