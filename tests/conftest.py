import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The launcher that belongs to the running interpreter (the mpich wheel's),
# never a bare mpirun from PATH.
MPIEXEC = Path(sys.executable).with_name("mpiexec")


@pytest.fixture
def mpiexec():
    if not MPIEXEC.exists():
        pytest.fail(f"{MPIEXEC} not found: install mpimat (it depends on the mpich wheel)")
    return MPIEXEC
