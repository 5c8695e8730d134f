"""Matrices that never live on one rank: 2-D blocks, SUMMA, parallel I/O.

    from mpimat import dist
    A = dist.load_npy("A.npy", comm)          # each rank reads only its block (MPI-IO)
    B = dist.random((k, n), "float32", seed=1, comm=comm, matrix="B")
    C = dist.matmul(A, B)                     # SUMMA; C stays distributed
    dist.save_npy("C.npy", C)                 # collective write, atomic
    C.local, C.layout.block_of(rank)          # each rank's block and where it sits
    X = dist.from_root(A_np, comm, root=0); Y = X.to_root(root=0)
    dist.freivalds(A, B, C)                   # verified without gathering

Every call is collective over the matrices' communicator; bad input raises
the same exception (an mpimat.InputError for bad files and operands) on
every rank.
"""

# Names are loaded lazily: `mpimat.dist.layout` is pure (no mpi4py), and
# importing it must not initialise MPI.
_WHERE = {
    "Block": "layout", "BlockLayout": "layout", "choose_summa_grid": "layout", "default_grid": "layout",
    "DistMatrix": "matrix", "empty": "matrix", "from_root": "matrix", "redistribute": "matrix",
    "to_root": "matrix", "load_npy": "npyio", "save_npy": "npyio", "random": "generate",
    "matmul": "summa", "freivalds": "verify",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'mpimat.dist' has no attribute {name!r}")
