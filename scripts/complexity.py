#!/usr/bin/env python3
"""How does the time of each scheme grow with n?  Measured, fitted, and checked against the model.

    python scripts/complexity.py                 # default sweep (< 10 min on 2 cores), writes docs/complexity*
    python scripts/complexity.py --quick         # a smaller sweep (about a minute)
    python scripts/complexity.py --validate-only --results docs/complexity.json   # redo the table only

For each rank count it launches ONE job under the interpreter's own
mpiexec, which multiplies random n x n float64 matrices for every n of the
sweep with `--strategy dot` (K=1, the blog's scheme) and `--strategy tiles`,
best of --repeats runs, timing the phases on rank 0 (distribute, compute,
gather; no process start, no input generation, no verification).  Then:

- fits the log-log slope of time against n per (strategy, ranks): over the
  whole sweep and over its largest three sizes (the asymptotic exponent);
- writes docs/complexity.json and docs/complexity.png (matplotlib);
- compares every measured phase with the alpha-beta-gamma model's
  prediction for the calibrated machine (calibrating first, under
  mpiexec -n 2, if no calibration is given) and writes the table to
  docs/complexity-validation.md, with the worst factor per phase.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PHASES = ("distribute", "compute", "gather")

SWEEPS = {
    # strategy -> sizes; ranks come from --ranks
    "default": {"dot": [32, 64, 128, 256, 512], "tiles": [128, 256, 512, 1024, 2048, 4096]},
    "quick": {"dot": [32, 64, 128, 256], "tiles": [128, 256, 512, 1024]},
}


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smaller sweep")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dot-sizes", type=int, nargs="+")
    p.add_argument("--tiles-sizes", type=int, nargs="+")
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs per point")
    p.add_argument("--out", default=str(DOCS / "complexity"), help="prefix of the .json/.png/-validation.md")
    p.add_argument("--calibration", help="calibration JSON (default: measure one, saved as <out>-calibration.json)")
    p.add_argument("--validate-only", action="store_true", help="skip the sweep; use --results")
    p.add_argument("--results", help="a JSON written by an earlier sweep")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    return p.parse_args()


# --- the MPI side ------------------------------------------------------------

def worker(plan_path: str) -> int:
    import numpy as np
    from mpi4py import MPI

    from mpimat import matmul
    from mpimat.generate import random_pair
    from mpimat.stats import Stats

    comm = MPI.COMM_WORLD
    plan = json.loads(Path(plan_path).read_text())
    rows = []
    for strategy, n in plan["points"]:
        A = B = None
        if comm.rank == 0:
            A, B = random_pair(n, n, n, np.float64, seed=n)
        best = None
        for _ in range(plan["repeats"]):
            stats = Stats()
            comm.Barrier()
            start = time.perf_counter()
            matmul(A, B, comm=comm, strategy=strategy, stats=stats, tasks_per_message=1)
            wall = time.perf_counter() - start
            if comm.rank == 0:
                phases = {p: stats.phases.get(p, 0.0) for p in PHASES}
                total = sum(phases.values())
                if best is None or total < best["total"]:
                    best = {"strategy": strategy, "n": n, "ranks": comm.size, "phases": phases,
                            "total": total, "wall": wall, "grid": stats.extra.get("grid"),
                            "dot_products_per_second": stats.extra.get("dot_products_per_second")}
        if comm.rank == 0:
            rows.append(best)
            print(f"  {strategy:<6} n={n:<5} ranks={comm.size}  {best['total']:.4f} s", flush=True)
    if comm.rank == 0:
        Path(plan["output"]).write_text(json.dumps(rows))
    return 0


def launch(ranks: int, points, repeats: int, tmp: Path) -> list:
    plan = tmp / f"plan-{ranks}.json"
    output = tmp / f"rows-{ranks}.json"
    plan.write_text(json.dumps({"points": points, "repeats": repeats, "output": str(output)}))
    mpiexec = Path(sys.executable).with_name("mpiexec")
    cmd = [str(mpiexec), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker", "--plan", str(plan)]
    env = dict(os.environ, MPIEXEC_TIMEOUT="900")
    subprocess.run(cmd, env=env, check=True, timeout=960)
    return json.loads(output.read_text())


def calibrate(path: Path) -> None:
    mpiexec = Path(sys.executable).with_name("mpiexec")
    cmd = [str(mpiexec), "-n", "2", sys.executable, "-m", "mpimat", "calibrate", "--save", str(path)]
    subprocess.run(cmd, env=dict(os.environ, MPIEXEC_TIMEOUT="300"), check=True, timeout=330)


# --- analysis ----------------------------------------------------------------

def slope(points) -> float:
    """Least-squares slope of log(time) against log(n)."""
    xs = [math.log(n) for n, t in points if t > 0]
    ys = [math.log(t) for n, t in points if t > 0]
    if len(xs) < 2:
        return float("nan")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


def fits(rows) -> list:
    out = []
    for key in sorted({(r["strategy"], r["ranks"]) for r in rows}):
        pts = sorted((r["n"], r["total"]) for r in rows if (r["strategy"], r["ranks"]) == key)
        out.append({"strategy": key[0], "ranks": key[1], "sizes": [n for n, _ in pts],
                    "slope_all": slope(pts), "slope_top3": slope(pts[-3:])})
    return out


def plot(rows, fit, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    styles = {"dot": "o-", "tiles": "s-"}
    for f in fit:
        pts = sorted((r["n"], r["total"]) for r in rows if (r["strategy"], r["ranks"]) == (f["strategy"], f["ranks"]))
        label = (f"{f['strategy']}, {f['ranks']} rank{'s' if f['ranks'] > 1 else ''}: "
                 f"slope {f['slope_top3']:.2f} (largest 3), {f['slope_all']:.2f} (all)")
        ax.loglog([n for n, _ in pts], [t for _, t in pts], styles.get(f["strategy"], "x-"), label=label)
    lo = min(r["n"] for r in rows)
    hi = max(r["n"] for r in rows)
    ref_t = min(r["total"] for r in rows if r["n"] == lo)
    for power, style in ((1, ":"), (2, "--"), (3, "-.")):
        ax.loglog([lo, hi], [ref_t, ref_t * (hi / lo) ** power], "k" + style, alpha=0.35, label=f"n^{power}")
    ax.set_xlabel("n (C = A @ B, all n x n, float64)")
    ax.set_ylabel("seconds on rank 0 (distribute + compute + gather)")
    ax.set_title("The blog's 'O(n)' scheme (dot) vs tiles, measured")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def validate(rows, cal_path: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from mpimat import model
    from mpimat.calibration import load
    from mpimat.partition import Grid

    mach = load(str(cal_path))
    table = []
    for r in sorted(rows, key=lambda r: (r["strategy"], r["ranks"], r["n"])):
        n, P = r["n"], r["ranks"]
        if r["strategy"] == "tiles":
            rows_, cols_ = (int(x) for x in r["grid"].split("x"))
            pred = model.predict_tiles(n, n, n, Grid(rows_, cols_), mach)
        else:
            pred = model.predict_dot(n, n, n, P, mach)
        entry = {"strategy": r["strategy"], "ranks": P, "n": n, "grid": r.get("grid"),
                 "measured": r["phases"], "predicted": pred.phases,
                 "measured_total": r["total"], "predicted_total": pred.total}
        entry["factor_total"] = factor(r["total"], pred.total)
        table.append(entry)
    return {"machine": mach.as_dict(), "rows": table}


def factor(measured: float, predicted: float) -> float:
    if measured <= 0 or predicted <= 0:
        return float("nan")
    return max(measured / predicted, predicted / measured)


def ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


def markdown(val: dict, min_seconds: float = 0.005) -> str:
    m = val["machine"]
    lines = [
        f"Machine (calibrated): latency {m['latency'] * 1e6:.2f} us, bandwidth {m['bandwidth'] / 1e9:.2f} GB/s, "
        f"{m['gflops']:.1f} GFLOP/s per rank (1 BLAS thread), dispatcher {m['dispatch_batch'] * 1e6:.2f} + "
        f"{m['dispatch_task'] * 1e6:.2f} us per message/task, {m['cores']} cores.",
        "",
        "| strategy | ranks | n | distribute ms (pred) | compute ms (pred) | gather ms (pred) | total ms (pred) | factor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in val["rows"]:
        cells = [f"{ms(e['measured'][p])} ({ms(e['predicted'][p])})" for p in PHASES]
        lines.append(f"| {e['strategy']}{' ' + e['grid'] if e['strategy'] == 'tiles' else ''} | {e['ranks']} | "
                     f"{e['n']} | " + " | ".join(cells) +
                     f" | {ms(e['measured_total'])} ({ms(e['predicted_total'])}) | {e['factor_total']:.2f}x |")
    big = [e for e in val["rows"] if e["measured_total"] >= min_seconds]
    worst = max((e["factor_total"] for e in big), default=float("nan"))
    within = sum(1 for e in big if e["factor_total"] <= 1.5)
    lines += ["", f"Totals of runs over {min_seconds * 1e3:.0f} ms: {within} of {len(big)} within 1.5x of the "
                  f"prediction; worst factor {worst:.2f}x."]
    val["summary"] = {"min_seconds": min_seconds, "runs": len(big), "within_1_5x": within, "worst_factor": worst}
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse()
    if args.worker:
        return worker(args.plan)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.validate_only:
        previous = json.loads(Path(args.results or f"{out}.json").read_text())
        rows, loads = previous["runs"], previous.get("load_average")
    else:
        sweep = dict(SWEEPS["quick" if args.quick else "default"])
        if args.dot_sizes:
            sweep["dot"] = args.dot_sizes
        if args.tiles_sizes:
            sweep["tiles"] = args.tiles_sizes
        points = [(s, n) for s in ("dot", "tiles") for n in sweep[s]]
        tmp = out.parent / ".complexity-tmp"
        tmp.mkdir(exist_ok=True)
        rows = []
        started = time.time()
        loads = [os.getloadavg()[0]]
        for P in args.ranks:
            print(f"mpiexec -n {P}: {len(points)} points, best of {args.repeats}", flush=True)
            rows += launch(P, points, args.repeats, tmp)
            loads.append(os.getloadavg()[0])
        # Other processes on the machine distort everything: say how busy it was.
        print(f"1-minute load average during the sweep: {', '.join(f'{x:.1f}' for x in loads)}")
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        print(f"sweep took {time.time() - started:.0f} s")
    fit = fits(rows)
    cal = Path(args.calibration) if args.calibration else Path(f"{out}-calibration.json")
    if not args.calibration and not (args.validate_only and cal.exists()):
        print("calibrating (mpiexec -n 2 python -m mpimat calibrate) ...", flush=True)
        calibrate(cal)
    val = validate(rows, cal)
    table = markdown(val)
    extra = {"load_average": loads} if loads else {}
    Path(f"{out}.json").write_text(json.dumps({"runs": rows, "fits": fit, "validation": val, **extra},
                                              indent=1) + "\n")
    Path(f"{out}-validation.md").write_text(table)
    plot(rows, fit, Path(f"{out}.png"))
    print("\nlog-log slope of time against n:")
    for f in fit:
        print(f"  {f['strategy']:<6} ranks={f['ranks']}  all sizes {f['slope_all']:.2f}   largest three "
              f"{f['slope_top3']:.2f}   (n = {f['sizes']})")
    print("\npredicted vs measured (ms):\n" + table)
    print(f"wrote {out}.json, {out}.png, {out}-validation.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
