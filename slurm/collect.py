#!/usr/bin/env python3
"""Collect a strong-scaling sweep's mpimat JSON reports into a table and a plot.

    python slurm/collect.py DIR

reads DIR/report-*.json (one per rank count, written by scaling.sbatch) and
writes DIR/scaling.md (a Markdown table, also printed), DIR/scaling.csv and
DIR/scaling.png (time and parallel efficiency against ranks). Speed-up and
efficiency are relative to the smallest rank count of the sweep. The time is
the multiplication itself (distribute + compute + gather, the report's
`matmul_seconds`); input generation, file I/O and verification are left out.

Exit status: 0 ok (also without matplotlib: then the table and CSV are
written and a warning says why there is no plot), 2 no reports or reports
of different problems.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

COLUMNS = ["ranks", "grid", "distribute_s", "compute_s", "gather_s", "matmul_s",
           "gflops", "speedup", "efficiency"]


def load_reports(directory: Path) -> list[dict]:
    reports = []
    for path in sorted(directory.glob("report-*.json")):
        with open(path) as f:
            report = json.load(f)
        report["_path"] = path.name
        reports.append(report)
    return sorted(reports, key=lambda r: r["ranks"])


def rows_of(reports: list[dict]) -> list[dict]:
    base = reports[0]
    base_time = base["matmul_seconds"]
    rows = []
    for r in reports:
        phases = r.get("phases", {})
        speedup = base_time / r["matmul_seconds"] if r["matmul_seconds"] > 0 else float("nan")
        rows.append({
            "ranks": r["ranks"],
            "grid": r.get("grid", ""),
            "distribute_s": phases.get("distribute", float("nan")),
            "compute_s": phases.get("compute", float("nan")),
            "gather_s": phases.get("gather", float("nan")),
            "matmul_s": r["matmul_seconds"],
            "gflops": r.get("gflops", float("nan")),
            "speedup": speedup,
            "efficiency": speedup * base["ranks"] / r["ranks"],
        })
    return rows


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"# {title}", "",
             "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---:" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = [row["ranks"] for row in rows]
    times = [row["matmul_s"] for row in rows]
    ideal = [times[0] * ranks[0] / r for r in ranks]
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(10, 4))
    ax_t.loglog(ranks, times, "o-", label="measured")
    ax_t.loglog(ranks, ideal, "--", color="gray", label="ideal")
    ax_t.set_xlabel("MPI ranks")
    ax_t.set_ylabel("time (distribute + compute + gather) [s]")
    ax_t.minorticks_off()
    ax_t.set_xticks(ranks, [str(r) for r in ranks])
    ax_t.legend()
    ax_e.plot(ranks, [row["efficiency"] for row in rows], "o-")
    ax_e.axhline(1.0, ls="--", color="gray")
    ax_e.set_xscale("log")
    ax_e.minorticks_off()
    ax_e.set_xticks(ranks, [str(r) for r in ranks])
    ax_e.set_ylim(bottom=0)
    ax_e.set_xlabel("MPI ranks")
    ax_e.set_ylabel(f"parallel efficiency (vs {ranks[0]} ranks)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="directory with report-*.json")
    args = parser.parse_args(argv)

    reports = load_reports(args.dir)
    if not reports:
        print(f"collect: no report-*.json in {args.dir}", file=sys.stderr)
        return 2
    problems = {(tuple(r["shape"]), r["dtype"], r.get("strategy")) for r in reports}
    if len(problems) > 1:
        print(f"collect: reports are not one strong-scaling sweep (shapes/dtypes/strategies "
              f"{sorted(problems)})", file=sys.stderr)
        return 2
    failed = [r["_path"] for r in reports if r.get("exit_code", 0) != 0]
    if failed:
        print(f"collect: runs that did not succeed: {', '.join(failed)}", file=sys.stderr)
        return 2
    (m, k, n), dtype, strategy = problems.pop()
    title = f"mpimat strong scaling: {m}x{k} @ {k}x{n} {dtype}, strategy {strategy}"
    rows = rows_of(reports)

    table = markdown(rows, title)
    (args.dir / "scaling.md").write_text(table)
    with open(args.dir / "scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(table, end="")
    try:
        plot(rows, title, args.dir / "scaling.png")
    except ImportError as exc:
        # The table is the result; the plot is a convenience.
        print(f"collect: warning: no plot ({exc}); install matplotlib (pip install 'mpimat[plot]')",
              file=sys.stderr)
        print(f"collect: wrote {args.dir / 'scaling.md'}, scaling.csv")
        return 0
    print(f"collect: wrote {args.dir / 'scaling.md'}, scaling.csv, scaling.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
