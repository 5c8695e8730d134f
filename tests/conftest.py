import pytest

from launch import MPIEXEC


def pytest_sessionstart(session):
    # Tests start the launcher that belongs to the running interpreter (the
    # mpich wheel's), never a bare mpirun from PATH: it must be there.
    if not MPIEXEC.exists():
        raise pytest.UsageError(f"{MPIEXEC} not found: install mpimat (it depends on the mpich wheel)")
