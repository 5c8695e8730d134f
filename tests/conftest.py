import glob
import os
import time

import pytest

from launch import MPIEXEC
from mpimat.shm import SEGMENT_PREFIX, mapped_segments, unlink_segments


def pytest_sessionstart(session):
    # Tests start the launcher that belongs to the running interpreter (the
    # mpich wheel's), never a bare mpirun from PATH: it must be there.
    if not MPIEXEC.exists():
        raise pytest.UsageError(f"{MPIEXEC} not found: install mpimat (it depends on the mpich wheel)")


def segments_in_use() -> set:
    """The MPICH segments some live process maps."""
    return set().union(*(mapped_segments(pid) for pid in os.listdir("/proc") if pid.isdigit()))


@pytest.fixture(autouse=True)
def no_segments_left():
    """Remove the MPICH segments a test's jobs left in /dev/shm.

    Ranks killed by a signal (the fault tests kill them on purpose) cannot
    remove their node's segments (mpimat/shm.py), which then stay until
    reboot.  After each test, those that appeared during it and that no
    live process maps any more are unlinked (killed ranks may take a moment
    to let go of them); other jobs' segments are mapped by their ranks.
    """
    before = set(glob.glob(SEGMENT_PREFIX + "*"))
    yield
    new = set(glob.glob(SEGMENT_PREFIX + "*")) - before
    deadline = time.monotonic() + 5
    while new:
        unlink_segments(new - segments_in_use())
        new = {path for path in new if os.path.exists(path)}
        if not new or time.monotonic() > deadline:
            break
        time.sleep(0.1)
