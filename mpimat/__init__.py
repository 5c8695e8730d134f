"""mpimat: distributed dense matrix multiplication (C = A @ B) over MPI.

    from mpimat import matmul
    C = matmul(A, B, comm=comm, root=0)   # C on root, None elsewhere

Names are imported lazily: `import mpimat` loads neither MPI nor Lightning
(the Lightning component lives in mpimat.lightning), so `python -m mpimat`
can set up its warning filters before mpi4py initialises MPI.
"""

__version__ = "0.1.0"

__all__ = ["matmul", "InputError", "InputTypeError", "PanelCheckError", "__version__"]


def __getattr__(name):
    if name == "matmul":
        from .api import matmul

        return matmul
    if name in ("InputError", "InputTypeError", "PanelCheckError"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'mpimat' has no attribute {name!r}")
