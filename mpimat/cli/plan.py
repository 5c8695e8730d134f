"""`python -m mpimat plan`: where the time would go, the lower bound, and what to run.

    python -m mpimat plan --shape 100000 100000 100000 --ranks 1024 \\
        [--latency 2us --bandwidth 12.5GB/s --gflops 40] [--dtype float64] [--json]
        [--ranks-per-node 32 --intra-latency 0.5us --intra-bandwidth 20GB/s]

Machine parameters come from the flags, else from the saved calibration
(`mpiexec -n 2 python -m mpimat calibrate`), else from documented defaults
(a generic cluster node); flags override single calibrated values.  The
same model drives `--strategy auto` (mpimat/auto.py).
"""

from __future__ import annotations

import json

import numpy as np
from mpi4py import MPI

from .. import calibration, model
from ..control import agree
from ..errors import EXIT_OK, InputError
from ..model import Machine
from ..partition import Grid, factor_pairs
from .args import ArgumentParser, dtype_arg, nonneg, parse_bandwidth, parse_latency, positive, typed


def parser() -> ArgumentParser:
    def gflops(text):
        value = float(text)
        if value <= 0:
            raise ValueError("--gflops must be positive")
        return value

    p = ArgumentParser(prog="mpimat plan",
                       description="Predict each strategy's phase times with an alpha-beta-gamma model, "
                                   "state the lower bound and recommend a strategy and grid.")
    p.add_argument("--shape", nargs=3, type=nonneg, metavar=("M", "K", "N"), help="A is MxK, B is KxN")
    p.add_argument("--size", type=nonneg, metavar="N", help="square NxN matrices")
    p.add_argument("--ranks", type=positive, metavar="P", help="number of MPI ranks (default: this job's)")
    p.add_argument("--dtype", type=dtype_arg, default=np.dtype("float64"), help="default float64")
    p.add_argument("--latency", type=typed(parse_latency), metavar="S", help="seconds per message (e.g. 2us)")
    p.add_argument("--bandwidth", type=typed(parse_bandwidth), metavar="B/s",
                   help="bytes per second of a rank's link (e.g. 12.5GB/s, 100Gb/s)")
    p.add_argument("--gflops", type=typed(gflops), metavar="G", help="float64 GFLOP/s of one rank")
    p.add_argument("--cores", type=positive, metavar="C", help="cores per node (ranks beyond share cores)")
    p.add_argument("--ranks-per-node", type=positive, metavar="R",
                   help="ranks per node, placed in blocks (rank r on node r // R, as mpiexec -ppn R does): "
                        "two levels, --latency/--bandwidth between nodes, --intra-* within one")
    p.add_argument("--intra-latency", type=typed(parse_latency), metavar="S",
                   help="seconds per message between ranks of one node (default: --latency)")
    p.add_argument("--intra-bandwidth", type=typed(parse_bandwidth), metavar="B/s",
                   help="bytes per second between ranks of one node (default: --bandwidth)")
    p.add_argument("--calibration", metavar="PATH", help="calibration file (default: the saved one)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def machine_for(args) -> Machine:
    base = calibration.load(args.calibration)
    if base is None:
        base = Machine(source="defaults (no calibration saved; run `mpiexec -n 2 python -m mpimat calibrate`)")
    changes = {}
    for flag, field in (("latency", "latency"), ("bandwidth", "bandwidth"), ("gflops", "gflops")):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if args.cores is not None:
        changes["cores"] = args.cores
    for flag, field in (("ranks_per_node", "ranks_per_node"), ("intra_latency", "latency_intra"),
                        ("intra_bandwidth", "bandwidth_intra")):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if changes:
        names = {"latency_intra": "intra-latency", "bandwidth_intra": "intra-bandwidth",
                 "ranks_per_node": "ranks-per-node"}
        what = ", ".join(f"--{names.get(k, k)}" for k in changes)
        changes["source"] = f"{what} over {base.source}"
        if args.gflops is not None and base.source.startswith("calibration"):
            # Scale the other compute rates with the one given.
            ratio = args.gflops / base.gflops
            changes.update(gflops_noblas=base.gflops_noblas * ratio, dot_gflops=base.dot_gflops * ratio)
    return Machine(**{**base.as_dict(), **changes})


def fmt_seconds(s: float) -> str:
    if s == 0:
        return "0"
    if s < 1e-3:
        return f"{s * 1e6:.3g} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 3600:
        return f"{s:.3g} s"
    if s < 86400 * 2:
        return f"{s / 3600:.3g} h"
    if s < 86400 * 365 * 2:
        return f"{s / 86400:.3g} days"
    return f"{s / 86400 / 365:.3g} years"


def fmt_bytes(b: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


def build_plan(m: int, k: int, n: int, ranks: int, mach: Machine, dtype) -> dict:
    rec = model.recommend(m, k, n, ranks, mach, dtype)
    best = rec["best"]
    bound = model.lower_bound(m, k, n, ranks, mach, dtype)
    out = {
        "shape": [m, k, n], "dtype": str(np.dtype(dtype)), "ranks": ranks,
        "machine": mach.as_dict(),
        "predictions": [{"strategy": p.strategy, "label": p.label(), "grid": p.grid, "options": p.options,
                         "phases": p.phases, "total": p.total, "notes": p.notes} for p in rec["candidates"]],
        "lower_bound": bound,
        "recommendation": {"strategy": best.strategy, "grid": best.grid, "options": best.options,
                           "seconds": best.total, "advice": rec["advice"]},
    }
    if m == n == k and n > 0:
        out["blog_scenario"] = model.predict_blog(n, mach, dtype)
    # With the matrices in blocks from start to end (--strategy summa), rank 0's link is no bound.
    summa = sorted((model.predict_summa(m, k, n, Grid(r, c), mach, dtype) for r, c in factor_pairs(ranks)),
                   key=model.ranking)[0]
    item = np.dtype(dtype).itemsize
    width = summa.options["panel_width"]
    out["summa"] = {"grid": summa.grid, "phases": summa.phases, "seconds": summa.total,
                    "panel_width": width, "panels": summa.options["panels"],
                    **model.summa_words(m, k, n, Grid(*map(int, summa.grid.split("x"))), item, item, item,
                                        width=width)}
    return out


def render(plan: dict) -> str:
    m, k, n = plan["shape"]
    mach = plan["machine"]
    P = plan["ranks"]
    rpn = mach.get("ranks_per_node")
    if rpn:
        nodes = -(-P // rpn)
        intra_lat = mach["latency"] if mach.get("latency_intra") is None else mach["latency_intra"]
        intra_bw = mach["bandwidth"] if mach.get("bandwidth_intra") is None else mach["bandwidth_intra"]
        links = (f"{rpn} rank{'s' if rpn > 1 else ''} per node ({nodes} node{'s' if nodes > 1 else ''}); "
                 f"between nodes: latency "
                 f"{fmt_seconds(mach['latency'])}, bandwidth {fmt_bytes(mach['bandwidth'])}/s per node; "
                 f"within a node: latency {fmt_seconds(intra_lat)}, bandwidth {fmt_bytes(intra_bw)}/s")
    else:
        links = f"latency {fmt_seconds(mach['latency'])}, bandwidth {fmt_bytes(mach['bandwidth'])}/s per link"
    lines = [
        f"mpimat plan: C = A @ B, A {m}x{k}, B {k}x{n}, {plan['dtype']}, {P} ranks",
        f"machine: {links}, "
        f"{mach['gflops']:.3g} GFLOP/s per rank"
        + (f", {mach['cores']} cores per node" if mach.get("cores") else "")
        + f"  [{mach['source']}]",
        "",
        "where the time goes (predicted, per phase on rank 0):",
        f"  {'strategy':<34}{'distribute':>12}{'compute':>12}{'gather':>12}{'total':>12}",
    ]
    preds = plan["predictions"]
    tiles = [p for p in preds if p["strategy"] == "tiles"]
    shown = tiles[:4] + [p for p in preds if p["strategy"] != "tiles"]
    for p in sorted(shown, key=lambda q: q["total"]):
        ph = p["phases"]
        lines.append(f"  {p['label']:<34}{fmt_seconds(ph['distribute']):>12}{fmt_seconds(ph['compute']):>12}"
                     f"{fmt_seconds(ph['gather']):>12}{fmt_seconds(p['total']):>12}")
    if len(tiles) > 4:
        lines.append(f"  ({len(tiles) - 4} slower tiles grids not shown)")
    b = plan["lower_bound"]
    lines += [
        "",
        "lower bound: if any rank but 0 computes, every element of A and B it needs must leave rank 0,",
        f"  at least once: {fmt_bytes(b['bytes_out_of_root'])} out of rank 0 (and {fmt_bytes(b['bytes_into_root'])} "
        f"of C back in) through one link = {fmt_seconds(b['link_seconds'])}, however many ranks;",
        f"  the flops split evenly take {fmt_seconds(b['compute_seconds'])}; rank 0 alone takes "
        f"{fmt_seconds(b['one_rank_seconds'])}.  No scheme on {P} ranks beats {fmt_seconds(b['seconds'])}.",
    ]
    blog = plan.get("blog_scenario")
    if blog:
        lines += [
            "",
            f"the blog's scenario (P = n^2 = {blog['ranks']:,} ranks, one dot product each, data on rank 0):",
            f"  claimed 'O(n)' (one dot product of length {n}):   {fmt_seconds(blog['claimed_seconds'])}",
            f"  literal scheme (n^2 messages, 2n^3 words out):   {fmt_seconds(blog['literal_seconds'])}",
            f"  best possible with trees (2n^2 words out once):  {fmt_seconds(blog['best_tree_seconds'])}",
            f"  lower bound 2n^2 words / link bandwidth:         {fmt_seconds(blog['lower_bound_seconds'])}",
            f"  one rank doing it all:                           {fmt_seconds(blog['one_rank_seconds'])}",
            "  the time grows like n^2 (bandwidth) and n^3 for the literal scheme, not like n.",
        ]
    sm = plan.get("summa")
    if sm:
        lines += [
            "",
            "with the matrices in blocks from start to end (--strategy summa: parallel read, SUMMA, parallel write):",
            f"  summa {sm['grid']}: predicted {fmt_seconds(sm['seconds'])} (compute with its panel broadcasts; no "
            f"distribute or gather through rank 0)",
            f"  panel width {sm['panel_width']}: {sm['panels']} panels of at most {sm['panel_width']} columns of A / "
            f"rows of B (the model's width:",
            "    narrower pays more latency and slower thin BLAS, wider an unhidden first broadcast and memory)",
            f"  each rank receives {fmt_bytes(sm['received_bytes'])} and holds {fmt_bytes(sm['memory_bytes'])}; with that "
            f"memory M some rank must communicate at least {fmt_bytes(sm['bound_bytes'])}",
            "  (Irony, Toledo, Tiskin 2004: m k n / (2 sqrt(2) P sqrt(M)) - M words)",
        ]
    r = plan["recommendation"]
    if r["strategy"] == "tiles":
        how = f"--strategy tiles --grid {r['grid']}"
    else:
        how = f"--strategy dot --tasks-per-message {r['options']['tasks_per_message']}" + (
            " --keep-blocks" if r["options"].get("keep_blocks") else "")
    lines += ["", f"recommendation: {how}  (predicted {fmt_seconds(r['seconds'])}; `--strategy auto` runs it)"]
    if r["advice"]:
        lines.append(f"  note: {r['advice']}")
    return "\n".join(lines)


def run(args, comm: MPI.Comm) -> int:
    """The subcommand; bad input raises InputError, which cli.main reports (exit 2)."""
    if args.shape and args.size is not None:
        raise InputError("--shape and --size are exclusive")
    if not args.shape and args.size is None:
        raise InputError("plan needs --shape M K N or --size N")
    m, k, n = args.shape if args.shape else (args.size,) * 3
    ranks = args.ranks or comm.size
    # Only rank 0 reads the calibration file; its verdict goes to every rank.

    def decide():
        plan = build_plan(m, k, n, ranks, machine_for(args), args.dtype)
        print(json.dumps(plan, indent=2) if args.json else render(plan), flush=True)
        return {}

    agree(comm, 0, decide if comm.rank == 0 else None)
    return EXIT_OK
