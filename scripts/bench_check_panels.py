#!/usr/bin/env python3
"""What --check-panels costs: the tiles job with and without every rank checking its panels.

    python scripts/bench_check_panels.py [--size 4096 8192] [--ranks 2] [--repeats 3]

Runs `mpiexec -n R python -m mpimat --size N --verify none` under the
interpreter's own mpiexec, alternating the plain job and `--check-panels`
(ratios measured in one run, on a shared and noisy machine), and prints per
run the multiply's time (distribute + compute + gather, as the report
gives it), the checks' time on each rank (their "verify" phase: the root's
check of C is off) and the medians.  The checks run on the rank that
computed each panel while the next panel's inputs stream in; they add to
the multiply what the slowest rank spends checking.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_model  # scripts/machine.py, beside this script

PY = sys.executable
MPIEXEC = str(Path(PY).with_name("mpiexec"))


def job(n: int, ranks: int, check: bool, workdir: str) -> dict:
    report = Path(workdir) / "run.json"
    cmd = [MPIEXEC, "-n", str(ranks), PY, "-m", "mpimat", "--size", str(n), "--verify", "none", "--quiet",
           "--report", str(report)] + (["--check-panels"] if check else [])
    subprocess.run(cmd, check=True, timeout=3600, env={**os.environ, "MPIEXEC_TIMEOUT": "3500"})
    rep = json.loads(report.read_text())
    return {"matmul": rep["matmul_seconds"],
            "checks": [r["phases"]["verify"] for r in rep["per_rank"]],
            "panels": [r.get("panels_checked", 0) for r in rep["per_rank"]]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs="+", default=[4096, 8192])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"bench_check_panels: {args.ranks} ranks, {cpu_model()}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for n in args.size:
            plain, checked, worst = [], [], []
            for _ in range(args.repeats):
                a = job(n, args.ranks, False, workdir)
                b = job(n, args.ranks, True, workdir)
                plain.append(a["matmul"])
                checked.append(b["matmul"])
                worst.append(max(b["checks"]))
                print(f"  n={n}: plain {a['matmul']:.3f} s, checked {b['matmul']:.3f} s; checks per rank "
                      f"{', '.join(f'{s:.3f}' for s in b['checks'])} s over {b['panels']} panels", flush=True)
            mp, mc, mw = statistics.median(plain), statistics.median(checked), statistics.median(worst)
            print(f"n={n} medians: plain {mp:.3f} s, checked {mc:.3f} s ({mc / mp:.3f}x); the slowest rank's "
                  f"checks {mw:.3f} s = {100 * mw / mp:.1f}% of the plain multiply", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
