"""Messages over 2^31 elements (MPI-4 large counts) through the real wheel.

Needs about 13 GiB of memory and half a minute; the machines here have 24 GiB.
"""

import os
import subprocess
import sys

import pytest

from launch import MPIEXEC, ROOT


def available_memory():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize("order", ["C", "F"])
def test_more_than_2_31_elements(order):
    if available_memory() < 16 * 2**30:
        pytest.skip("needs 16 GiB of free memory")
    env = dict(os.environ, MPIEXEC_TIMEOUT="300")
    proc = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(ROOT / "tests" / "large_count_job.py"), order],
                          capture_output=True, text=True, timeout=330, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "large-count result [8, 10]" in proc.stdout
