#!/usr/bin/env python3
"""summa against tiles end to end across hosts, measured and predicted by the cost model.

    flock /tmp/mpimat-bench.lock sudo .venv/bin/python scripts/bench_cluster_summa.py          # ~2 min
    flock /tmp/mpimat-bench.lock sudo .venv/bin/python scripts/bench_cluster_summa.py --doc    # + docs section
    .venv/bin/python scripts/bench_cluster_summa.py --render RESULTS.json [--doc]   # table/doc again

Issue 12's case: 4 hosts x 1 rank of scripts/cluster.sh (network namespaces,
TCP links capped with tc tbf, default 1gbit), n = 4096 float64. Steps:

1. brings the cluster up (scripts/cluster.sh up HOSTS --bandwidth RATE; always
   taken down again, also on failure, Ctrl-C or SIGTERM; afterwards it checks
   that `ip netns list` and `ip link` hold nothing of it), or uses the one
   given with --cluster-dir;
2. `mpimat calibrate` across the hosts (HOSTS x 1: the link between hosts),
   which the runs then read (MPIMAT_CALIBRATION: summa picks its panel
   width with the model for it) and plan uses;
3. runs `python -m mpimat --size N --seed S --strategy tiles|summa
   --blas-threads 1 --verify V --report R` through Hydra's rsh launcher
   (the mpiexec beside this interpreter, MPIEXEC_TIMEOUT and a subprocess
   timeout, UCX_TLS=tcp,self), alternating the two strategies, --repeats
   times each; the script times each mpiexec from start to exit (wall) and
   reads the bytes that crossed every host's link from its veth counters;
4. asks `python -m mpimat plan --json --ranks HOSTS --ranks-per-node 1
   --cores C` (as scripts/cluster_validation.py does; C = cores / hosts, at
   least 1) for both strategies' phases, and prints the table: median wall,
   median phases, model vs measured for distribute + compute + gather,
   bytes through rank 0's link, and the speed-up summa / tiles measured
   against predicted.

What "end to end" holds: the wall time is process start (Hydra, the rsh
launcher, interpreters, imports, MPI_Init) to the exit of mpiexec. Inside
it, the report's phases on rank 0: generate (tiles: rank 0 generates all of
A and B; summa: every rank generates its own blocks in place), distribute
(tiles: rank 0's blocks to the other hosts; summa: none), compute (summa:
SUMMA with its panel broadcasts), gather (tiles: the tiles back to rank 0;
summa: none, C stays in blocks), verify (the same --verify for both:
Freivalds on rank 0 for tiles, distributed for summa). The model predicts
distribute + compute + gather only.

Raw reports, results.json and one timeline per strategy (the median run,
`python -m mpimat report R --timeline PNG`) go to a directory it prints.
--doc writes (or replaces) its section of docs/cluster-validation.md: the
table between two markers, after the line that scripts/cluster_validation.py
keeps (with everything below it) when it rewrites that file; the reading,
written by hand below the section's end marker, stays.
Needs root (network namespaces), like scripts/cluster.sh.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster_validation as cv  # noqa: E402  (scripts/ is not a package)

ROOT = cv.ROOT
DOC = ROOT / "docs" / "cluster-validation.md"
STRATEGIES = ("tiles", "summa")
PHASES = ("load", "distribute", "compute", "gather", "verify")
MODEL = ("distribute", "compute", "gather")
# Its section of DOC: generated between these markers (a rerun with --doc replaces it); the reading
# written by hand follows END and stays.
BEGIN = "<!-- scripts/bench_cluster_summa.py --doc: begin -->"
END = "<!-- scripts/bench_cluster_summa.py --doc: end -->"


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=4, help="hosts, one rank each (default 4)")
    p.add_argument("--rate", default="1gbit", help="tc rate of every link (default 1gbit)")
    p.add_argument("--size", type=int, default=4096, help="n of the random n x n float64 inputs (default 4096)")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5, help="runs per strategy, alternating (default 5)")
    p.add_argument("--verify", choices=("none", "freivalds"), default="freivalds",
                   help="the same for both strategies (default freivalds)")
    p.add_argument("--timeout", type=int, default=300, help="seconds per mpiexec (MPIEXEC_TIMEOUT)")
    p.add_argument("--cluster-dir", help="use this cluster (scripts/cluster.sh up HOSTS or more) at its rate")
    p.add_argument("--calibration", help="use this calibration instead of calibrating across the hosts")
    p.add_argument("--keep", help="directory for reports, results and timelines (default: a new temp dir)")
    p.add_argument("--render", metavar="RESULTS", help="print the table (and --doc) from a results.json")
    p.add_argument("--repredict", action="store_true",
                   help="with --render: ask plan again (predictions missing, or the model changed)")
    p.add_argument("--doc", action="store_true", help=f"write its section of {DOC.relative_to(ROOT)}")
    return p.parse_args()


# --- the cluster's leftovers --------------------------------------------------

def link_counters(state: dict, hosts: int) -> list:
    """Per host: [bytes it sent, bytes it received] through its link (root side of its veth)."""
    out = []
    for i in range(1, hosts + 1):
        stats = Path("/sys/class/net") / state[f"VETH_{i}"] / "statistics"
        out.append([int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text())])
    return out


def leftovers(state: dict) -> list:
    """Namespaces and links of this cluster that still exist (after down: none)."""
    ident = state["ID"]
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=30).stdout
    left = [line.split()[0] for line in names.splitlines() if line.startswith(f"mpimat-c{ident}-")]
    left += re.findall(rf"\d+: (mpc{ident}(?:br|h\d+))[@:]", links)
    return left


def shm_segments() -> set:
    return {p.name for p in Path("/dev/shm").glob("mpich_shm_*")}


def mapped_anywhere(name: str) -> bool:
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if name in maps.read_text():
                return True
        except OSError:
            continue
    return False


def clean_shm(before: set) -> list:
    """Remove MPICH segments that appeared during our runs and that no process maps."""
    removed = []
    for name in sorted(shm_segments() - before):
        if not mapped_anywhere(name):
            try:
                (Path("/dev/shm") / name).unlink()
                removed.append(name)
            except OSError:
                pass
    return removed


# --- measuring ------------------------------------------------------------------

def run_once(cluster: cv.Cluster, out: Path, strategy: str, args, i: int) -> dict:
    report = out / f"{strategy}-{i}.json"
    cmd = [sys.executable, "-m", "mpimat", "--size", args.size, "--seed", args.seed, "--strategy", strategy,
           "--blas-threads", 1, "--verify", args.verify, "--report", report, "--quiet"]
    before = link_counters(cluster.state, cluster.hosts)
    start = time.perf_counter()
    cluster.mpiexec(1, cmd, timeout=args.timeout)
    wall = time.perf_counter() - start
    after = link_counters(cluster.state, cluster.hosts)
    rep = json.loads(report.read_text())
    if rep["exit_code"] != 0 or not rep["verification"]["passed"]:
        raise RuntimeError(f"{strategy} run {i}: exit {rep['exit_code']}, verification {rep['verification']}")
    hosts = [r.get("host") for r in rep["per_rank"]]
    if len(set(hosts)) != cluster.hosts:
        raise RuntimeError(f"{strategy} run {i}: ranks on {hosts}, not one per host")
    r0 = rep["per_rank"][0]
    return {
        "strategy": strategy, "run": i, "report": str(report), "wall": wall, "grid": rep["grid"],
        "phases": {p: rep["phases"][p] for p in PHASES},
        "per_rank_phases": [{p: r["phases"].get(p, 0.0) for p in PHASES} for r in rep["per_rank"]],
        "rank0_payload": [r0["bytes_sent"], r0["bytes_received"]],
        "link_bytes": [[a[0] - b[0], a[1] - b[1]] for a, b in zip(after, before)],
        "wait_seconds": [r.get("wait_seconds") for r in rep["per_rank"]],
        "panels": rep.get("panels"), "panel_width": rep.get("panel_width"), "load_avg": os.getloadavg()[0],
    }


def calibrate(cluster: cv.Cluster, out: Path, timeout: int) -> Path:
    cal = out / "calibration.json"
    proc = cluster.mpiexec(1, [sys.executable, "-m", "mpimat", "calibrate", "--save", cal], timeout=timeout)
    print(proc.stdout, end="", flush=True)
    return cal


def consistent_summa(cal: Path, n: int, grid: str, width) -> tuple:
    """(phases, width) of predict_summa charging cores as tiles' two-level model does: for the ranks
    of the busiest host (here one, on at least one core: no slowdown), not for all P ranks as if they
    shared one host's cores (predict_summa's mach.contention(P)); at the panel width the runs used
    when the model takes one (else the model's own)."""
    from mpimat import calibration, model
    from mpimat.partition import Grid

    mach = dataclasses.replace(calibration.load(str(cal)), ranks_per_node=1, cores=None)
    extra = {"width": width} if width and "width" in inspect.signature(model.predict_summa).parameters else {}
    pred = model.predict_summa(n, n, n, Grid(*map(int, grid.split("x"))), mach, **extra)
    return pred.phases, extra.get("width")


def code_state() -> dict:
    """Which code ran: the commit, and the files under mpimat/ that differ from it (read-only git)."""
    def git(*argv):
        try:
            return subprocess.run(["git", "--no-optional-locks", *argv], cwd=ROOT, capture_output=True,
                                  text=True, timeout=30).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "mpimat").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or "?", "modified": dirty}


def measure(args, env: dict, out: Path) -> dict:
    results = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "hosts": args.hosts,
               "code": code_state(),
               "size": args.size, "seed": args.seed, "verify": args.verify, "repeats": args.repeats,
               "runs": [], "load": [os.getloadavg()[0]]}
    shm_before = shm_segments()
    cluster = cv.Cluster(None if args.cluster_dir else args.rate, args.cluster_dir, env, hosts=args.hosts)
    state = dict(cluster.state)
    try:
        results["rate"] = cluster.rate
        print(f"== {args.hosts} hosts x 1 rank, links capped at {cluster.rate} ({cluster.dir})", flush=True)
        started = time.monotonic()
        cal = Path(args.calibration) if args.calibration else calibrate(cluster, out, args.timeout)
        results["calibration"] = json.loads(cal.read_text())
        # The runs read it too (summa's panel width is the model's choice for the saved calibration).
        cluster.env["MPIMAT_CALIBRATION"] = str(cal.resolve())
        results["calibrate_seconds"] = time.monotonic() - started
        for i in range(args.repeats):
            for strategy in (STRATEGIES if i % 2 == 0 else STRATEGIES[::-1]):
                r = run_once(cluster, out, strategy, args, i)
                results["runs"].append(r)
                results["load"].append(r["load_avg"])
                m = r["phases"]
                print(f"  {strategy:<5} {r['grid']} run {i}: wall {r['wall']:6.2f} s, "
                      + ", ".join(f"{p} {m[p]:.2f}" for p in PHASES)
                      + f"; h1 link out/in {r['link_bytes'][0][0] / 1e6:.0f}/{r['link_bytes'][0][1] / 1e6:.0f} MB",
                      flush=True)
    finally:
        cluster.close()
        if cluster.own:
            left = leftovers(state)
            if left:
                print(f"bench_cluster_summa: still there after down: {' '.join(left)}", file=sys.stderr)
            removed = clean_shm(shm_before)
            if removed:
                print(f"bench_cluster_summa: removed unmapped {' '.join(removed)}", file=sys.stderr)
    return results


def predict(results: dict, out: Path) -> None:
    """plan's predictions (and summa's with tiles' contention) for the grids the runs used."""
    cal = out / "calibration-used.json"
    cal.write_text(json.dumps(results["calibration"]))
    cores = max(1, (results["calibration"]["machine"].get("cores") or 1) // results["hosts"])
    results["cores_per_host"] = cores
    results["predicted"] = {}
    for strategy in STRATEGIES:
        grid = next(r["grid"] for r in results["runs"] if r["strategy"] == strategy)
        pred = cv.predict(cal, strategy, grid, 1, results["size"], cores, hosts=results["hosts"])
        results["predicted"][strategy] = {"grid": grid, "phases": pred["phases"], "notes": pred["notes"],
                                          "panel_width": pred.get("panel_width")}
    grid = results["predicted"]["summa"]["grid"]
    width = next((r.get("panel_width") for r in results["runs"] if r["strategy"] == "summa"), None)
    phases, used = consistent_summa(cal, results["size"], grid, width)
    results["predicted"]["summa"].update(consistent=phases, consistent_width=used)


def timelines(results: dict, out: Path) -> None:
    for strategy in STRATEGIES:
        r = median_run(results, strategy)
        png = out / f"timeline-{strategy}.png"
        proc = subprocess.run([sys.executable, "-m", "mpimat", "report", r["report"], "--timeline", str(png)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            results.setdefault("timelines", {})[strategy] = str(png)
        else:
            print(f"timeline of {r['report']} failed: {proc.stderr.strip()}", file=sys.stderr)


# --- the table ------------------------------------------------------------------

def runs_of(results: dict, strategy: str) -> list:
    return [r for r in results["runs"] if r["strategy"] == strategy]


def median_run(results: dict, strategy: str) -> dict:
    runs = sorted(runs_of(results, strategy), key=lambda r: r["wall"])
    return runs[(len(runs) - 1) // 2]


def med(values) -> float:
    return statistics.median(values)


def summary(results: dict) -> dict:
    rows = {}
    for strategy in STRATEGIES:
        runs = runs_of(results, strategy)
        pred = results["predicted"][strategy]
        row = {
            "grid": pred["grid"], "runs": len(runs),
            "wall": med(r["wall"] for r in runs), "walls": [r["wall"] for r in runs],
            "phases": {p: med(r["phases"][p] for r in runs) for p in PHASES},
            "model_measured": med(sum(r["phases"][p] for p in MODEL) for r in runs),
            "predicted_phases": pred["phases"], "predicted": sum(pred["phases"].values()),
            "rank0_payload": [med(r["rank0_payload"][j] for r in runs) for j in (0, 1)],
            "link0": [med(r["link_bytes"][0][j] for r in runs) for j in (0, 1)],
            "busiest_link": med(max(a + b for a, b in r["link_bytes"]) for r in runs),
        }
        row["other"] = med(r["wall"] - sum(r["phases"].values()) for r in runs)
        if "consistent" in pred:
            row["consistent"] = sum(pred["consistent"].values())
        rows[strategy] = row
    t, s = rows["tiles"], rows["summa"]
    speed = {"wall": t["wall"] / s["wall"], "model_phases": t["model_measured"] / s["model_measured"],
             "predicted": t["predicted"] / s["predicted"]}
    if "consistent" in s:
        speed["predicted_consistent"] = t["predicted"] / s["consistent"]
    return {"rows": rows, "speedup": speed}


def mb(b: float) -> str:
    return f"{b / 1e6:.0f}"


def table(results: dict) -> list:
    s = summary(results)
    lines = [
        "| strategy | wall, median (runs) | generate | distribute | compute | gather | verify | other | "
        "distribute + compute + gather: measured / predicted / ratio | rank 0's link out / in, MB "
        "(payload out / in) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for strategy in STRATEGIES:
        r = s["rows"][strategy]
        ph = r["phases"]
        walls = ", ".join(f"{w:.2f}" for w in r["walls"])
        lines.append(
            f"| {strategy} {r['grid']} | **{r['wall']:.2f} s** ({walls}) | {ph['load']:.2f} | {ph['distribute']:.2f} | "
            f"{ph['compute']:.2f} | {ph['gather']:.2f} | {ph['verify']:.2f} | {r['other']:.2f} | "
            f"{r['model_measured']:.2f} / {r['predicted']:.2f} / {r['model_measured'] / r['predicted']:.2f} | "
            f"{mb(r['link0'][0])} / {mb(r['link0'][1])} ({mb(r['rank0_payload'][0])} / {mb(r['rank0_payload'][1])}) |")
    sp = s["speedup"]
    lines += [
        "",
        f"Speed-up summa over tiles (tiles' time / summa's, medians): end to end (wall) **{sp['wall']:.2f}x**; "
        f"distribute + compute + gather **{sp['model_phases']:.2f}x**; predicted by `plan` **{sp['predicted']:.2f}x**"
        + (f" (summa by `mpimat.model` at the runs' panel width, its contention counted as tiles': "
           f"**{sp['predicted_consistent']:.2f}x**)."
           if "predicted_consistent" in sp else "."),
    ]
    return lines


def predicted_lines(results: dict) -> list:
    lines = []
    for strategy in STRATEGIES:
        p = results["predicted"][strategy]
        ph = p["phases"]
        width = f", panels of {p['panel_width']}" if p.get("panel_width") else ""
        lines.append(f"- {strategy} {p['grid']} (`plan`{width}): distribute {ph['distribute']:.2f} s, compute "
                     f"{ph['compute']:.2f} s, gather {ph['gather']:.2f} s = {sum(ph.values()):.2f} s")
        if "consistent" in p:
            c = p["consistent"]
            at = (f"at the runs' panel width {p['consistent_width']}" if p.get("consistent_width")
                  else "at the model's panel width")
            lines.append(f"- summa {p['grid']}, `mpimat.model.predict_summa` {at}, with contention counted as "
                         f"tiles counts it (ranks on the busiest host, not all {results['hosts']}): compute "
                         f"{c['compute']:.2f} s = {sum(c.values()):.2f} s")
    return lines


def calibration_line(results: dict) -> str:
    m = results["calibration"]["machine"]
    return (f"calibrated across the hosts: {m['latency'] * 1e6:.0f} us, {m['bandwidth'] / 1e6:.1f} MB/s between "
            f"hosts; {m['gflops']:.1f} GFLOP/s per rank (1 BLAS thread); plan told {results['cores_per_host']} "
            f"core(s) per host (`--cores`), {results['hosts']} hosts x 1 rank (`--ranks-per-node 1`)")


def code_line(results: dict) -> str:
    code = results.get("code")
    if not code:
        return "Code: not recorded"
    dirty = code.get("modified") or []
    return (f"Code: commit {code.get('commit', '?')}"
            + (f" with uncommitted changes to {', '.join(dirty)}" if dirty else ", no local changes in mpimat/"))


def print_table(results: dict) -> None:
    print()
    print(f"n = {results['size']} float64, {results['hosts']} hosts x 1 rank, links {results['rate']}, "
          f"--verify {results['verify']}, {results['repeats']} runs each; {calibration_line(results)}")
    print(code_line(results))
    print("\n".join(table(results)))
    print("\n".join(predicted_lines(results)))
    print("wall: mpiexec start to exit, timed by this script; other: wall minus the report's phases "
          "(process start, MPI_Init, report, exit); the model predicts distribute + compute + gather")


# --- the doc section -------------------------------------------------------------

def section(results: dict) -> str:
    model, cores = cv.machine_line()
    loads = results["load"]
    lines = [
        BEGIN,
        "## summa against tiles on 4 hosts (issue 12)",
        "",
        f"Generated by `scripts/bench_cluster_summa.py` (run as root, under `flock /tmp/mpimat-bench.lock`): "
        f"{results['hosts']} hosts x 1 rank of `scripts/cluster.sh`, links capped at {results['rate']}, "
        f"`python -m mpimat --size {results['size']} --seed {results['seed']} --strategy tiles|summa "
        f"--blas-threads 1 --verify {results['verify']} --report R` through Hydra's rsh launcher, the two "
        f"strategies alternating, {results['repeats']} runs each. Run of {results['started']} on lscpu model "
        f"name \"{model}\", {cores} cores shared by all hosts; 1-minute load average {min(loads):.1f}-{max(loads):.1f}; "
        f"{calibration_line(results)}. {code_line(results)}.",
        "",
        "End to end: *wall* is mpiexec's start to its exit as the script times it (Hydra, the rsh launcher, "
        "four interpreters, imports, MPI_Init, finalize). Inside it, rank 0's phases (s, medians): *generate* "
        "(tiles: rank 0 generates all of A and B; summa: each rank its own blocks, in place), *distribute* "
        "(tiles: rank 0 sends the blocks; summa: nothing), *compute* (summa: with its panel broadcasts), "
        "*gather* (tiles: the tiles come back to rank 0; summa: C stays in blocks), *verify* (Freivalds: on "
        "rank 0 for tiles, distributed for summa); *other* = wall minus the phases. The model predicts "
        "distribute + compute + gather. Rank 0's link: bytes through h1's veth (its counters: TCP/IP "
        "included), in brackets the payload rank 0's report counts.",
        "",
        *table(results),
        "",
        "Predictions (`python -m mpimat plan --json`, the calibration above):",
        "",
        *predicted_lines(results),
        END,
    ]
    return "\n".join(lines)


def write_doc(results: dict) -> None:
    """Replace the section between BEGIN and END, or append it after cluster_validation's KEEP line."""
    text = DOC.read_text() if DOC.exists() else ""
    new = section(results)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + new + rest.split(END, 1)[1]
    else:
        if cv.KEEP not in text:
            text = text.rstrip("\n") + "\n\n" + cv.KEEP
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    DOC.write_text(text)
    print(f"wrote its section of {DOC}")


def main() -> int:
    args = parse()
    if args.render:
        results = json.loads(Path(args.render).read_text())
        out = Path(args.render).parent
        if args.repredict or "predicted" not in results:
            predict(results, out)
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    else:
        if os.geteuid() != 0 and not args.cluster_dir:
            print("bench_cluster_summa: needs root (network namespaces, veth links and tc)", file=sys.stderr)
            return 3
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MPIMAT_", "UCX_", "PMI_"))}
        out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mpimat-bench-cluster-summa."))
        out.mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            results = measure(args, env, out)
        except KeyboardInterrupt:
            print("bench_cluster_summa: interrupted (the cluster is down again)", file=sys.stderr)
            return 130
        # The measurements first: if plan fails (a model being edited), --render --repredict redoes the rest.
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        timelines(results, out)
        predict(results, out)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        print(f"raw reports, timelines and results: {out}")
    print_table(results)
    if args.doc:
        write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
