"""`python -m mpimat` with a fault injected, for tests/test_cli.py (not part of mpimat).

    mpiexec -n N python tests/fault_job.py FAULT [mpimat args...]

FAULT is "corrupt" (the strategy returns C with one entry changed, so the
verification must fail), "crash:R" (rank R raises as the multiply
starts, while the others wait in its collectives: the job must abort, not
hang) or "panel:R" (rank R computes every tiles panel with one entry off,
for --check-panels).  Faults are injected through the public strategy
registry (api.register) or, for panels, by wrapping the tiles strategy's
local product on rank R, so the CLI under test is the real one, unmodified.
"""

import sys

from mpi4py import MPI

from mpimat import api
from mpimat.cli import console_main


def faulty(run, fault):
    def strategy(A, B, job, stats):
        if fault == f"crash:{MPI.COMM_WORLD.rank}":
            raise RuntimeError("injected fault (tests/fault_job.py)")
        C = run(A, B, job, stats)
        if fault == "corrupt" and C is not None and C.size:
            C.flat[0] = C.flat[0] + 1 if C.dtype.kind != "b" else not C.flat[0]
        return C
    return strategy


def wrong_panels():
    from mpimat import tiles

    real = tiles.local_product

    def product(a, b, out=None, kernel=None):
        C = real(a, b, out=out, kernel=kernel)
        C.flat[0] += 1
        return C

    tiles.local_product = product


fault, argv = sys.argv[1], sys.argv[2:]
if fault == f"panel:{MPI.COMM_WORLD.rank}":
    wrong_panels()
for name, run in list(api.STRATEGIES.items()):
    api.register(name, faulty(run, fault))
console_main(argv)
