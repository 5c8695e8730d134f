#!/usr/bin/env python3
"""Heat's ht.matmul against mpimat's SUMMA and numpy, data already distributed (compute only).

    bash scripts/heat_env.sh                       # once: the .venv-heat venv (heat, torch, mpimat)
    flock /tmp/mpimat-bench.lock .venv-heat/bin/python scripts/bench_heat.py \\
        [--size 4096 8192] [--ranks 2] [--repeats 3] [--panel W]

Run it with .venv-heat's interpreter (another one without heat re-executes
itself under .venv-heat/bin/python); it launches its workers with the
mpiexec beside that interpreter (the `mpich` wheel's), under MPIEXEC_TIMEOUT
(default 3600 s) and a subprocess timeout.  Heat is no dependency of mpimat:
the tests and CI never install it (scripts/heat_env.sh, by hand, only).

One run, float64, `--ranks` ranks on this node, n x n x n for each --size.
Every rank generates its blocks in place with mpimat's generator (the same
values everywhere: mpimat.generate), rank 0 also the whole of A and B.
Then, in every repeat, one after the other in the same process tree:

  - numpy    rank 0 alone: A @ B with `ranks` BLAS threads (OpenBLAS);
             the other ranks sleep, not spin (bench_summa.idle_barrier);
  - torch    rank 0 alone: torch.matmul with `ranks` threads (MKL), the
             kernel Heat and summa-torch use, single process;
  - summa    mpimat.dist.matmul(X, Y), kernel="numpy": 1 BLAS thread a rank;
  - summa-torch  the same with kernel="torch" (torch's addmm_ per panel);
  - heat     ht.matmul(a, b), a and b split 0 (row blocks, heat's own
             balanced chunks), torch at 1 thread a rank.  Heat's split
             0 x 0 algorithm is 1-D: each rank computes its rows of C and
             receives, block by block, all of B it does not hold.

Distributed products are timed from a barrier before the call to a barrier
after it; C stays distributed (no gather).  Every product's corner (its
whole block for n <= 2048) is checked against numpy; a wrong one aborts.
Printed: the CPU model (lscpu), versions, per method the median time and
GFLOP/s (2 n^3 / median), its ratio to numpy (median over the repeats of
numpy's time / its time: above 1 is faster than numpy) and to torch, and
the CPU seconds (all threads, all ranks).  The machine is shared and noisy:
compare ratios rather than absolute times, and take the lock above.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_summa import cpu_model, idle_barrier  # noqa: E402 - scripts/ is no package

ROOT = HERE.parent
HEAT_PYTHON = ROOT / ".venv-heat" / "bin" / "python"
METHODS = ("numpy", "torch", "summa", "summa-torch", "heat")
CHECK = 32  # rows and columns of the corner checked against numpy (n > 2048)


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs="+", default=[4096, 8192])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--panel", type=int, default=None, help="SUMMA's panel width (default: the library's)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def _stand_in_torchvision() -> None:
    """An empty torchvision in sys.modules, so that `import heat` works without it.

    heat imports torchvision at import for heat.utils.data (images, MNIST)
    only; PyPI has no CPU build of torchvision, and its CUDA build fails to
    import next to the CPU torch (scripts/heat_env.sh).  Using any of it
    raises ImportError; ht.matmul never does.
    """
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # a half-imported real one

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise ImportError("torchvision is not installed (bench_heat's stand-in for `import heat`)")

    tv = types.ModuleType("torchvision")
    tv.__file__ = None
    tv.STAND_IN = True
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.Compose = Unavailable
    tv.transforms.transforms = types.ModuleType("torchvision.transforms.transforms")
    tv.transforms.transforms.__all__ = []
    tv.datasets = types.ModuleType("torchvision.datasets")
    tv.datasets.MNIST = Unavailable
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms,
                        "torchvision.transforms.transforms": tv.transforms.transforms,
                        "torchvision.datasets": tv.datasets})


def import_heat():
    """heat, with a stand-in torchvision where no working one is installed."""
    try:
        importlib.import_module("torchvision")
    except (ImportError, RuntimeError, OSError):
        _stand_in_torchvision()
    import heat

    return heat


def heat_importable() -> bool:
    try:
        import_heat()
    except ImportError:
        return False
    return True


def versions(ht) -> str:
    import mpi4py
    import numpy as np
    import torch
    from mpi4py import MPI
    from threadpoolctl import threadpool_info

    blas = ", ".join(f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info()
                     if i.get("user_api") == "blas") or "unknown"
    torch_blas = "mkl" if torch.backends.mkl.is_available() else "not MKL"
    lib = MPI.Get_library_version().splitlines()[0].strip()
    return (f"heat {ht.__version__}, torch {torch.__version__} ({torch_blas}), numpy {np.__version__} ({blas}), "
            f"mpi4py {mpi4py.__version__}, {lib}; torchvision: "
            f"{'stand-in' if getattr(sys.modules.get('torchvision'), 'STAND_IN', False) else 'installed'}")


def launch(args) -> int:
    if not heat_importable():
        if HEAT_PYTHON.exists() and Path(sys.executable) != HEAT_PYTHON:
            print(f"bench_heat: no heat in {sys.executable}; re-running under {HEAT_PYTHON}", flush=True)
            os.execv(str(HEAT_PYTHON), [str(HEAT_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
        print("bench_heat: heat is not importable here: run `bash scripts/heat_env.sh`, then "
              ".venv-heat/bin/python scripts/bench_heat.py", file=sys.stderr)
        return 2
    mpiexec = Path(sys.executable).with_name("mpiexec")
    timeout = int(os.environ.get("MPIEXEC_TIMEOUT", "3600"))
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(timeout))
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; load average {os.getloadavg()}", flush=True)
    cmd = [str(mpiexec), "-n", str(args.ranks), sys.executable, str(Path(__file__).resolve()), "--worker",
           "--size", *map(str, args.size), "--repeats", str(args.repeats)]
    if args.panel:
        cmd += ["--panel", str(args.panel)]
    try:
        rc = subprocess.call(cmd, env=env, timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        print(f"bench_heat: mpiexec still running after {timeout + 60} s: stopped", file=sys.stderr)
        rc = 1
    print(f"load average at the end {os.getloadavg()}", flush=True)
    return rc


class Runner:
    """The five products on one size; each returns (seconds, cpu seconds, result to check)."""

    def __init__(self, comm, n, panel, ht):
        import numpy as np
        import torch

        from mpimat import dist
        from mpimat.generate import random_block, random_pair

        self.comm, self.n, self.panel, self.ht, self.torch = comm, n, panel, ht, torch
        self.random_block = random_block
        # mpimat's blocks (its own grid) and heat's row blocks: the same values.
        self.X = dist.random((n, n), "float64", 1, comm, "A")
        self.Y = dist.random((n, n), "float64", 1, comm, "B")
        off, lshape, _ = ht.MPI_WORLD.chunk((n, n), 0)
        self.a = ht.array(torch.from_numpy(random_block(1, "A", (n, n), "float64", (off, off + lshape[0]), (0, n))),
                          is_split=0)
        self.b = ht.array(torch.from_numpy(random_block(1, "B", (n, n), "float64", (off, off + lshape[0]), (0, n))),
                          is_split=0)
        self.A = self.B = None
        if comm.rank == 0:
            self.A, self.B = random_pair(n, n, n, "float64", 1)
        self.np = np
        self.summa_stats = None

    # Single-process references on rank 0, `ranks` threads; others sleep.
    def single(self, which):
        from threadpoolctl import threadpool_limits

        comm, torch = self.comm, self.torch
        idle_barrier(comm)
        t = c = 0.0
        if comm.rank == 0:
            if which == "numpy":
                with threadpool_limits(limits=comm.size, user_api="blas"):
                    t0, c0 = time.perf_counter(), time.process_time()
                    R = self.A @ self.B
                    t, c = time.perf_counter() - t0, time.process_time() - c0
            else:
                before = torch.get_num_threads()
                torch.set_num_threads(comm.size)
                try:
                    ta, tb = torch.from_numpy(self.A), torch.from_numpy(self.B)
                    t0, c0 = time.perf_counter(), time.process_time()
                    R = torch.matmul(ta, tb)
                    t, c = time.perf_counter() - t0, time.process_time() - c0
                finally:
                    torch.set_num_threads(before)
                R = R.numpy()
            self.check(R, 0, 0, which)
            del R
        idle_barrier(comm)
        return comm.bcast(t), comm.bcast(c)

    def distributed(self, which):
        from mpimat import dist
        from mpimat.stats import Stats

        comm, torch = self.comm, self.torch
        idle_barrier(comm)
        comm.Barrier()
        if which == "heat":
            before = torch.get_num_threads()
            torch.set_num_threads(1)  # a rank per core, as summa's 1 BLAS thread
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                C = self.ht.matmul(self.a, self.b)
                cpu = time.process_time() - c0
                comm.Barrier()
                t = time.perf_counter() - t0
            finally:
                torch.set_num_threads(before)
            off = self.ht.MPI_WORLD.chunk(C.gshape, 0)[0]
            local, row0, col0 = C.larray.numpy(), off, 0
        else:
            stats = Stats()
            t0, c0 = time.perf_counter(), time.process_time()
            C = dist.matmul(self.X, self.Y, panel=self.panel, stats=stats,
                            kernel="torch" if which == "summa-torch" else "numpy")
            cpu = time.process_time() - c0
            comm.Barrier()
            t = time.perf_counter() - t0
            self.summa_stats = stats
            local, row0, col0 = C.local, C.block.row0, C.block.col0
        self.check(local, row0, col0, which)
        del C, local
        return t, comm.allreduce(cpu)

    def check(self, local, row0, col0, which):
        """This rank's block of C (at row0, col0) against numpy: its corner, or all of it if n <= 2048."""
        np, n = self.np, self.n
        rows, cols = local.shape
        if n > 2048:
            rows, cols = min(CHECK, rows), min(CHECK, cols)
        if rows and cols:
            a = self.random_block(1, "A", (n, n), "float64", (row0, row0 + rows), (0, n))
            b = self.random_block(1, "B", (n, n), "float64", (0, n), (col0, col0 + cols))
            if not np.allclose(local[:rows, :cols], a @ b, rtol=1e-10, atol=1e-8 * n):
                print(f"bench_heat: WRONG RESULT from {which} on rank {self.comm.rank}", file=sys.stderr, flush=True)
                self.comm.Abort(1)

    def run(self, which):
        return self.single(which) if which in ("numpy", "torch") else self.distributed(which)


def worker(args) -> int:
    ht = import_heat()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        print(f"versions: {versions(ht)}", flush=True)
    for n in args.size:
        runner = Runner(comm, n, args.panel, ht)
        wall = {m: [] for m in METHODS}
        cpu = {m: [] for m in METHODS}
        for _ in range(args.repeats):
            for m in METHODS:
                t, c = runner.run(m)
                wall[m].append(t)
                cpu[m].append(c)
        if comm.rank == 0:
            flops = 2.0 * n ** 3
            st = runner.summa_stats.extra
            print(f"n={n} float64, {comm.size} ranks, {args.repeats} repeats; summa grid {st['grid']}, "
                  f"{st['panels']} panels of <= {st['panel_width']}", flush=True)
            print(f"    {'method':<12} {'median s':>9} {'GFLOP/s':>8} {'vs numpy':>9} {'vs torch':>9} "
                  f"{'CPU s':>7}   times (s)", flush=True)
            for m in METHODS:
                med = statistics.median(wall[m])
                vs_np = statistics.median(a / b for a, b in zip(wall["numpy"], wall[m]))
                vs_t = statistics.median(a / b for a, b in zip(wall["torch"], wall[m]))
                print(f"    {m:<12} {med:9.3f} {flops / med / 1e9:8.1f} {vs_np:9.3f} {vs_t:9.3f} "
                      f"{statistics.median(cpu[m]):7.2f}   {', '.join(f'{t:.3f}' for t in wall[m])}", flush=True)
        del runner
    return 0


def main() -> int:
    args = parse()
    return worker(args) if args.worker else launch(args)


if __name__ == "__main__":
    sys.exit(main())
