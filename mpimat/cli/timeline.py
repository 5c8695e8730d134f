"""`python -m mpimat report RUN.json --timeline OUT.png [--trace OUT.json]`: a picture of a run.

Reads a JSON report written by `--report` and draws one row per rank: the
phases as coloured spans, and inside compute each panel (dark), each
wait for a panel's inputs (grey) and, with --check-panels, each panel's
check (orange); white is idle time.  `--trace` writes the
same events as a Chrome trace (Perfetto, chrome://tracing).  Runs on rank
0; needs matplotlib for the picture (`pip install 'mpimat[plot]'`).
"""

from __future__ import annotations

import json

from mpi4py import MPI

from .. import report
from ..control import agree
from ..errors import EXIT_OK, InputError
from ..fileio import AtomicWriter, open_regular
from .args import ArgumentParser

COLOURS = {"load": "#b8b8e8", "distribute": "#f2c57c", "compute": "#9fd39f", "gather": "#8fc1e3",
           "write": "#d9a6d9", "verify": "#e8b0a0"}


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="mpimat report",
                       description="Draw a run's timeline from its JSON report (written with --report).")
    p.add_argument("report", metavar="RUN.json", help="a report written by `python -m mpimat --report`")
    p.add_argument("--timeline", metavar="PNG", help="draw one row per rank (phases, panels, idle gaps)")
    p.add_argument("--trace", metavar="JSON", help="write the events as a Chrome trace")
    return p


def load(path: str) -> dict:
    with open_regular(path, "report") as f:
        text = f.read(256 << 20)
    try:
        rep = json.loads(text)
        ranks = rep["per_rank"]
        if not all(isinstance(r.get("events"), list) for r in ranks):
            raise KeyError("events")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not an mpimat report with events ({exc})") from None
    return rep


def draw(rep: dict, writer: AtomicWriter) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise InputError(f"--timeline needs matplotlib ({exc}): pip install 'mpimat[plot]'") from None
    ranks = rep["per_rank"]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.55 * len(ranks)))
    for row, r in enumerate(ranks):
        y = len(ranks) - 1 - row
        for name, start, end, _ in r["events"]:
            if name in COLOURS:
                ax.barh(y, end - start, left=start, height=0.8, color=COLOURS[name], edgecolor="none")
        for name, start, end, _ in r["events"]:
            if name == "panel":
                ax.barh(y - 0.2, end - start, left=start, height=0.3, color="#2e6b2e", edgecolor="white",
                        linewidth=0.4)
            elif name == "wait":
                ax.barh(y - 0.2, end - start, left=start, height=0.3, color="#8c8c8c", edgecolor="none")
            elif name == "check":  # --check-panels
                ax.barh(y - 0.2, end - start, left=start, height=0.3, color="#d9822b", edgecolor="none")
    ax.set_yticks(range(len(ranks)),
                  [f"rank {i}" + (f" ({r['host']})" if r.get("host") else "") for i, r in enumerate(ranks)][::-1])
    ax.set_xlabel("seconds since the job's start")
    m, k, n = rep["shape"]
    ax.set_title(f"mpimat {rep['strategy']} {m}x{k} @ {k}x{n} {rep['dtype']}, {rep['ranks']} ranks, "
                 f"grid {rep['grid']}: {rep['gflops']:.1f} GFLOP/s")
    handles = [Patch(color=c, label="load / generate" if p == "load" else p) for p, c in COLOURS.items()]
    handles += [Patch(color="#2e6b2e", label="panel (BLAS)"), Patch(color="#8c8c8c", label="waiting for inputs")]
    if any(e[0] == "check" for r in ranks for e in r["events"]):
        handles.append(Patch(color="#d9822b", label="panel check"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.38), ncol=8, fontsize=8, frameon=False)
    ax.set_xlim(left=0)
    fig.tight_layout()
    writer.prepare(lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    writer.commit()


def run(args, comm: MPI.Comm) -> int:
    """The subcommand, on rank 0; bad input raises InputError (exit 2)."""
    if not args.timeline and not args.trace:
        raise InputError("report needs --timeline PNG and/or --trace JSON")

    def decide():
        rep = load(args.report)
        writers = {flag: AtomicWriter(getattr(args, flag), f"--{flag}") for flag in ("timeline", "trace")
                   if getattr(args, flag)}
        if "trace" in writers:
            writers["trace"].write_text(json.dumps(report.chrome_trace(rep)) + "\n")
        if "timeline" in writers:
            draw(rep, writers["timeline"])
        return {}

    agree(comm, 0, decide if comm.rank == 0 else None)
    return EXIT_OK
