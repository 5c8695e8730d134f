#!/usr/bin/env python3
"""Whole jobs from the shell, as users run them: wall time including process start.

    python scripts/bench_e2e.py [--size 8192] [--ranks 2] [--repeats 2] [--files]

1. The default-style job, `mpiexec -n R python -m mpimat --size N` (generate,
   multiply, verify): wall time against the multiply alone (the report's
   distribute + compute + gather) and against a plain numpy script that
   generates the same-sized normal matrices with default_rng and multiplies
   them (issue 13: <= 1.35x the multiply, and faster than the script).
2. --files: files to files, N x N float64 .npy in and out: `--strategy summa`
   (parallel read, SUMMA, parallel write) against `--strategy tiles` (rank 0
   reads, scatters, gathers, writes), wall time from mpiexec's start to C.npy
   on disk (issue 12: summa below tiles).
Runs alternate, so load changes hit both; the median of the repeats is shown.
mpimat's modules are byte-compiled first, as a regular pip install leaves
them: an editable install under PYTHONDONTWRITEBYTECODE=1 (set on these
sandboxes) would otherwise compile every module at every start, 0.2-0.3 s
of each job that no user pays.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # scripts/machine.py, beside this script

PY = sys.executable
MPIEXEC = str(Path(PY).with_name("mpiexec"))
NUMPY_SCRIPT = """
import numpy as np, sys
n = int(sys.argv[1])
rng = np.random.default_rng(0)
A = rng.standard_normal((n, n)); B = rng.standard_normal((n, n))
C = A @ B
"""


def timed(cmd, cwd, env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, env=dict(os.environ, MPIEXEC_TIMEOUT="1800", **(env or {})),
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--files", action="store_true")
    args = p.parse_args()
    n, R = args.size, args.ranks
    print(f"bench_e2e: n={n} float64, {R} ranks, {os.cpu_count()} cpus ({cpu_model()}), "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    import mpimat
    compileall.compile_dir(Path(mpimat.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        walls, multiplies, scripts = [], [], []
        for _ in range(args.repeats):
            report = Path(tmp) / "r.json"
            walls.append(timed([MPIEXEC, "-n", str(R), PY, "-m", "mpimat", "--size", str(n), "--quiet",
                                "--report", str(report)], tmp))
            rep = json.loads(report.read_text())
            multiplies.append(rep["matmul_seconds"])
            phases = rep["phases"]
            scripts.append(timed([PY, "-c", NUMPY_SCRIPT, str(n)], tmp))
        wall, mult, script = map(statistics.median, (walls, multiplies, scripts))
        print(f"  default job: wall {wall:.2f} s (runs {', '.join(f'{w:.2f}' for w in walls)}), multiply alone "
              f"{mult:.2f} s: {wall / mult:.2f}x (target <= 1.35x); plain numpy script {script:.2f} s: "
              f"job/script {wall / script:.2f} (target < 1)", flush=True)
        print("    last run's phases: " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
              + f"; outside them (start, MPI init, finalize) {walls[-1] - sum(phases.values()):.2f}", flush=True)
        if args.files:
            subprocess.run([PY, "-c", f"""
import numpy as np
from mpimat.generate import random_pair
A, B = random_pair({n}, {n}, {n}, 'float64', 1)
np.save('A.npy', A); np.save('B.npy', B)
"""], cwd=tmp, check=True)
            times = {"summa": [], "tiles": []}
            for _ in range(args.repeats):
                for strategy in ("summa", "tiles"):
                    os.sync()
                    times[strategy].append(timed([MPIEXEC, "-n", str(R), PY, "-m", "mpimat", "--strategy", strategy,
                                                  "--a", "A.npy", "--b", "B.npy", "--out", "C.npy", "--quiet"], tmp))
            s, t = statistics.median(times["summa"]), statistics.median(times["tiles"])
            print(f"  files to files: summa {s:.2f} s (runs {', '.join(f'{x:.2f}' for x in times['summa'])}), "
                  f"tiles {t:.2f} s (runs {', '.join(f'{x:.2f}' for x in times['tiles'])}): summa/tiles {s / t:.2f} "
                  f"(target < 1)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
