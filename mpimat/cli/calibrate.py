"""`python -m mpimat calibrate`: measure this machine's alpha, beta and gamma.

    mpiexec -n 2 python -m mpimat calibrate [--save PATH] [--quick]

- latency (alpha): half the round trip of an 8-byte ping-pong (buffer-based
  Send/Recv, the best of several rounds);
- bandwidth (1/beta): from ping-pongs of 1 MiB and 16 MiB messages (4 MiB
  on a slow link, so that --quick stays quick; the slope, so the latency
  cancels);
- both for each kind of link the job has: between two ranks of one node
  (MPI.COMM_TYPE_SHARED: the first rank sharing rank 0's node, or any pair
  sharing a node) and between nodes (rank 0 and the first rank on another
  node).  latency / bandwidth are the link between nodes when the job spans
  nodes, else the one within the node; latency_intra / bandwidth_intra the
  one within a node (null when no two ranks share one); ranks_per_node is
  rank 0's node's rank count when the job spans nodes in blocks (as
  `mpiexec -ppn` and Slurm place them), else null (one level);
- gflops: float64 matmul rate of one rank with one BLAS thread (mpimat's
  default when ranks share a node); gflops_noblas: int64 matmul (numpy's
  own loops); dot_call: one task of the dot strategy on one rank (k=1);
  dot_gflops: np.dot of length 65536; blas_setup: limiting BLAS to one
  thread (threadpoolctl), paid once per local product when ranks share a node;
- dispatch_batch / dispatch_task: the dot strategy's dispatcher, timed on
  ranks 0 and 1 with one and with 32 tasks per message;
- gemm_half_width: SUMMA's rank-w update C += A_w B_w (dist.gemm, 1 BLAS
  thread) timed for w from 16 to the block's size; the model's rate
  G w / (w + h) is fitted (1/rate is linear in 1/w) and h saved;
- summa_step: dist.matmul on ranks 0 and 1 for a tiny product in many
  narrow panels; what the model does not charge for its flops and
  broadcasts (with the figures above) is the software of the steps, per
  panel.

Across hosts: `mpiexec -hosts h1,h2 -n 4 -ppn 2 python -m mpimat calibrate`
measures both links (see docs/cluster-validation.md).

Saved as JSON to --save, else $MPIMAT_CALIBRATION, else
~/.config/mpimat/calibration.json; `python -m mpimat plan` reads it.
Needs at least 2 ranks (ranks beyond 1 wait); with 1 rank it says so and
exits with code 2.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
from mpi4py import MPI

from .. import calibration, dist, kernels, model
from ..api import matmul
from ..compute import blas_threads, cpu_count
from ..control import agree, idle_barrier
from ..dist.gemm import Accumulator
from ..errors import EXIT_OK, InputError
from ..partition import Grid
from ..stats import Stats
from .args import ArgumentParser

TAG = 4242


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="mpimat calibrate",
                       description="Measure latency, bandwidth and flop rates; save them for `mpimat plan`. "
                                   "Run with: mpiexec -n 2 python -m mpimat calibrate")
    p.add_argument("--save", metavar="PATH",
                   help=f"where to save (default $MPIMAT_CALIBRATION or {calibration.default_path()})")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (seconds, less precise)")
    p.add_argument("--json", action="store_true", help="print the saved JSON instead of a summary")
    return p


def node_of_ranks(comm: MPI.Comm) -> list:
    """Per rank of comm, its node's id: the lowest rank of comm on that node."""
    shared = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
    leader = np.array([comm.rank], dtype=np.int64)
    try:
        shared.Allreduce(MPI.IN_PLACE, leader, op=MPI.MIN)
    finally:
        shared.Free()
    nodes = np.empty(comm.size, dtype=np.int64)
    comm.Allgather(leader, nodes)
    return [int(x) for x in nodes]


def link_pairs(nodes: list) -> dict:
    """Which ranks to ping-pong: {"intra": (a, b) on one node, "inter": (0, b) on two}, if any."""
    pairs = {}
    same = [r for r in range(1, len(nodes)) if nodes[r] == nodes[0]]
    if same:
        pairs["intra"] = (0, same[0])
    else:
        for a in range(1, len(nodes)):
            mates = [b for b in range(a + 1, len(nodes)) if nodes[b] == nodes[a]]
            if mates:
                pairs["intra"] = (a, mates[0])
                break
    other = [r for r in range(1, len(nodes)) if nodes[r] != nodes[0]]
    if other:
        pairs["inter"] = (0, other[0])
    return pairs


def block_ranks_per_node(nodes: list):
    """Ranks per node if nodes hold consecutive blocks of one size (the last may hold fewer), else None."""
    first = sum(1 for x in nodes if x == nodes[0])
    blocks = [nodes[i:i + first] for i in range(0, len(nodes), first)]
    ok = all(len(set(b)) == 1 for b in blocks) and len({b[0] for b in blocks}) == len(blocks)
    return first if ok else None


def link_figures(pair: MPI.Comm, quick: bool) -> tuple:
    """(latency, bandwidth) between the two ranks of `pair` (pair rank 0's view)."""
    latency = pingpong(pair, 8, 300 if quick else 2000, 3 if quick else 5)
    small = 1 << 20
    probe = np.array([pingpong(pair, small, 1, 1)])
    # Sizes and rounds from rank 0's probe, so both sides agree: a slow link
    # (a 100 Mbit/s network moves 1 MiB in ~85 ms) gets 4 MiB and one round.
    pair.Bcast(probe, root=0)
    probe = float(probe[0])
    large = 16 << 20 if probe < 2e-3 else 4 << 20
    budget = 0.5 if quick else 2.0  # seconds per message size, about
    rounds_small = max(1, min(5 if quick else 20, int(budget / (6 * probe))))
    rounds_large = max(1, min(2 if quick else 5, int(budget / (6 * probe * large / small))))
    t_small = pingpong(pair, small, rounds_small, 3)
    t_large = pingpong(pair, large, rounds_large, 3)
    return latency, (large - small) / max(t_large - t_small, 1e-9)


def measure_link(comm: MPI.Comm, a: int, b: int, quick: bool):
    """(latency, bandwidth) between ranks a and b of comm, on rank 0 (None elsewhere).

    The others wait without spinning (idle_barrier): on a machine with few
    cores MPICH's busy polling would slow the pair down.
    """
    pair = comm.Split(0 if comm.rank in (a, b) else MPI.UNDEFINED, 0 if comm.rank == a else 1)
    figures = None
    if pair != MPI.COMM_NULL:
        figures = link_figures(pair, quick)
        pair.Free()
    idle_barrier(comm)
    if a != 0:  # the pair's first rank tells rank 0
        buf = np.array(figures if comm.rank == a else (0.0, 0.0), dtype=np.float64)
        if comm.rank == a:
            comm.Send(buf, dest=0, tag=TAG)
        elif comm.rank == 0:
            comm.Recv(buf, source=a, tag=TAG)
            figures = (float(buf[0]), float(buf[1]))
    return figures if comm.rank == 0 else None


def pingpong(comm: MPI.Comm, nbytes: int, rounds: int, repeats: int) -> float:
    """Best one-way time of an nbytes message between ranks 0 and 1 (rank 0's view)."""
    buf = np.zeros(max(1, nbytes), dtype=np.uint8)
    best = float("inf")
    for _ in range(repeats):
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(rounds):
            if comm.rank == 0:
                comm.Send([buf, MPI.BYTE], dest=1, tag=TAG)
                comm.Recv([buf, MPI.BYTE], source=1, tag=TAG)
            else:
                comm.Recv([buf, MPI.BYTE], source=0, tag=TAG)
                comm.Send([buf, MPI.BYTE], dest=0, tag=TAG)
        best = min(best, (time.perf_counter() - start) / rounds / 2)
    return best


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compute_rates(quick: bool) -> dict:
    reps = 2 if quick else 4
    n = 512 if quick else 1024
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n))
    B = rng.standard_normal((n, n))
    with blas_threads(1):
        np.matmul(A, B)
        t = best_time(lambda: np.matmul(A, B), reps)
    gflops = 2 * n ** 3 / t / 1e9
    ni = 96 if quick else 160
    Ai = rng.integers(-9, 9, (ni, ni))
    t = best_time(lambda: np.matmul(Ai, Ai), reps)
    gflops_noblas = 2 * ni ** 3 / t / 1e9
    # One task of the dot strategy on one rank (k=1): the per-dot-product
    # cost as the strategy pays it (the call, the views, the store).
    a1, b1 = np.ones((128, 1)), np.ones((1, 128))
    per_task = float("inf")
    for _ in range(3 * reps):  # short runs: take the best of many (shared machines are noisy)
        st = Stats()
        matmul(a1, b1, comm=MPI.COMM_SELF, strategy="dot", stats=st)
        per_task = min(per_task, st.extra["dispatch_seconds"] / (128 * 128))
    t = per_task
    big = 1 << 16
    xb, yb = rng.standard_normal(big), rng.standard_normal(big)
    tb = best_time(lambda: [xb.dot(yb) for _ in range(50)], reps) / 50

    def limited():
        with blas_threads(1):
            pass

    limited()
    setup = best_time(limited, 2 * reps)
    return {"gflops": gflops, "gflops_noblas": gflops_noblas, "dot_call": t,
            "dot_gflops": 2 * big / max(tb, 1e-9) / 1e9, "blas_setup": setup}


def gemm_half_width(quick: bool) -> float:
    """h in the model's rate G w / (w + h) of a rank-w update (model.Machine.gemm_half_width).

    Each update streams the block of C through memory once, whatever w, so
    seconds per flop are linear in 1/w: 1/rate = (1 + h / w) / G.  A least
    squares line through the best times of several widths gives h = slope /
    intercept.
    """
    n = 512 if quick else 1024
    reps = 2 if quick else 4
    rng = np.random.default_rng(1)
    acc = Accumulator(rng.standard_normal((n, n)))
    widths = (16, 32, 64, 128, 256, n)
    seconds = []
    with blas_threads(1):
        for w in widths:
            a, b = rng.standard_normal((n, w)), rng.standard_normal((w, n))
            acc.add(a, b, first=False)
            seconds.append(best_time(lambda: acc.add(a, b, first=False), reps))
    return fit_half_width(n, n, widths, seconds)


def fit_half_width(rows: int, cols: int, widths, seconds) -> float:
    """h from the times of rank-w updates of a rows x cols block (see gemm_half_width)."""
    per_flop = [t / (2.0 * rows * cols * w) for w, t in zip(widths, seconds)]
    slope, intercept = np.polyfit([1.0 / w for w in widths], per_flop, 1)
    if intercept <= 0:  # timings too noisy to fit: keep the model's default
        return model.Machine.gemm_half_width
    return float(min(max(slope / intercept, 0.0), 4096.0))


SUMMA_WIDTH = 8  # narrow panels of a tiny product: the steps' software is nearly all there is


def summa_panels(pair: MPI.Comm, quick: bool) -> tuple:
    """((m, k, n), best seconds) of dist.matmul on the pair (grid 2x1) in panels of SUMMA_WIDTH."""
    m, k, n = 16, (2048 if quick else 8192), 16
    A = dist.random((m, k), "float64", 0, pair, "A", grid="2x1")
    B = dist.random((k, n), "float64", 0, pair, "B", grid="2x1")
    best = float("inf")
    for _ in range(3 if quick else 5):
        pair.Barrier()
        start = time.perf_counter()
        dist.matmul(A, B, panel=SUMMA_WIDTH, blas_threads=1)
        pair.Barrier()
        best = min(best, time.perf_counter() - start)
    return (m, k, n), best


def summa_step(machine: dict, shape: tuple, seconds: float) -> float:
    """The software per SUMMA panel (model.Machine.summa_step): the measured time less what
    the model, with the other measured figures, charges for the flops and broadcasts."""
    known = {f: v for f, v in machine.items() if f in model.Machine.__dataclass_fields__}
    mach = model.Machine(**{**known, "summa_step": 0.0})
    t = model.summa_time(*shape, Grid(2, 1), mach, SUMMA_WIDTH)
    # The model's time is max(products + steps, broadcasts) + fill + network.
    rest = seconds - t.fill - t.network
    if rest <= t.broadcasts:  # the broadcasts alone explain it
        return 0.0
    return max(0.0, (rest - t.products) / (t.count * t.slow))


KERNEL_DTYPES = ("float32", "float64", "complex64", "complex128")
KERNEL_MARGIN = 1.03  # torch must beat numpy by more than the noise of a short timing


def kernel_table(quick: bool) -> dict:
    """Per dtype, the faster local kernel at one thread (a rank's share of a node): {} without torch.

    Only where torch multiplies exactly as numpy does (kernels.TorchKernel);
    torch is chosen only if it is faster by more than KERNEL_MARGIN.
    """
    if not kernels.available()["torch"]:
        return {}
    n = 384 if quick else 768
    table = {}
    for dtype in KERNEL_DTYPES:
        rates = {name: kernels.gflops(kernels.get_kernel(name), n, dtype, threads=1, repeat=2 if quick else 3)
                 for name in ("numpy", "torch")}
        table[dtype] = "torch" if rates["torch"] > KERNEL_MARGIN * rates["numpy"] else "numpy"
    return table


def dispatch_costs(comm: MPI.Comm, quick: bool) -> dict:
    """Root time per message of the dot strategy: K=1 and K=32 at k=1, K=1 at k=256.

    dispatch_batch + K dispatch_task is the cost of a message of K tasks
    whose vectors are tiny; dispatch_element is what each element of the
    row and column adds (packing a strided column touches one cache line
    per element, so it is more than the bytes on the link).
    """
    n = 48 if quick else 160  # long enough runs that start-up costs fade
    long_k = 256
    per_batch = {}
    # The long run packs columns of a 256 x 256 B (rows 2 KiB apart, the
    # benchmark's case): each element of a column is on its own cache line.
    for K, m, k, cols in ((1, n, 1, n), (32, n, 1, n), (1, 16 if quick else 64, long_k, long_k)):
        A = np.ones((m, k)) if comm.rank == 0 else None
        B = np.ones((k, cols)) if comm.rank == 0 else None
        best = float("inf")
        for _ in range(2 if quick else 4):
            stats = Stats()
            matmul(A, B, comm=comm, strategy="dot", stats=stats, tasks_per_message=K)
            if comm.rank == 0:
                batches = -(-m * cols // K)
                best = min(best, stats.extra["dispatch_seconds"] / batches)
        per_batch[K, k] = best
    if comm.rank != 0:
        return {}
    task = max((per_batch[32, 1] - per_batch[1, 1]) / 31, 0.0)
    batch = max(per_batch[1, 1] - task, 0.0)
    element = max((per_batch[1, long_k] - per_batch[1, 1]) / (long_k - 1), 0.0)
    return {"dispatch_batch": batch, "dispatch_task": task, "dispatch_element": element}


def measure(comm: MPI.Comm, quick: bool) -> Optional[dict]:
    """Every rank of `comm` (size >= 2) calls this; rank 0 gets the figures."""
    nodes = node_of_ranks(comm)
    pairs = link_pairs(nodes)
    links = {kind: measure_link(comm, a, b, quick) for kind, (a, b) in sorted(pairs.items())}
    pair = comm.Split(0 if comm.rank < 2 else MPI.UNDEFINED, comm.rank)
    out = None
    if pair != MPI.COMM_NULL:
        # Rank 1 waits without spinning while rank 0 times its arithmetic:
        # MPICH busy-polls in blocking calls, which would halve rank 0's
        # CPU on a machine with few cores.
        rates = compute_rates(quick) if pair.rank == 0 else None
        half = gemm_half_width(quick) if pair.rank == 0 else None
        table = kernel_table(quick) if pair.rank == 0 else None
        idle_barrier(pair)
        disp = dispatch_costs(pair, quick)
        shape, seconds = summa_panels(pair, quick)
        if pair.rank == 0:
            inter, intra = links.get("inter"), links.get("intra")
            latency, bandwidth = inter or intra
            out = {"latency": latency, "bandwidth": bandwidth, **rates, **disp,
                   "cores": cpu_count(),
                   "latency_intra": intra[0] if intra and inter else None,
                   "bandwidth_intra": intra[1] if intra and inter else None,
                   "ranks_per_node": block_ranks_per_node(nodes) if inter else None,
                   "gemm_half_width": half}
            out["summa_step"] = summa_step(out, shape, seconds)
            out["_kernels"] = table
            out["_layout"] = {"nodes": len(set(nodes)), "ranks": len(nodes),
                              "ranks_per_node": [nodes.count(x) for x in sorted(set(nodes))],
                              "pairs": {kind: list(p) for kind, p in pairs.items()}}
        pair.Free()
    idle_barrier(comm)
    return out


def document(figures: dict) -> dict:
    """The calibration file's content: the figures and where they were measured."""
    import mpi4py

    machine = {k: v for k, v in figures.items() if not k.startswith("_")}
    return {
        "machine": machine,
        "layout": figures.get("_layout"),
        "kernels": figures.get("_kernels") or {},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "versions": {"numpy": np.__version__, "mpi4py": mpi4py.__version__,
                     "mpi": MPI.Get_library_version().splitlines()[0].strip()},
    }


def rate(bandwidth: float) -> str:
    return f"{bandwidth / 1e9:10.2f} GB/s" if bandwidth >= 1e9 else f"{bandwidth / 1e6:10.2f} MB/s"


def summary(machine: dict, path: Path, layout: Optional[dict] = None) -> str:
    layout = layout or {}
    spans = layout.get("nodes", 1) > 1
    where = "between nodes" if spans else "within a node"
    lines = [
        f"mpimat calibrate: saved to {path}",
        f"  ranks               {layout.get('ranks', 2):10d} on {layout.get('nodes', 1)} node(s) "
        f"({', '.join(map(str, layout.get('ranks_per_node', [])))} ranks per node)",
        f"  latency (alpha)     {machine['latency'] * 1e6:10.2f} us per message (one way, 8 bytes), {where}",
        f"  bandwidth (1/beta)  {rate(machine['bandwidth'])}, {where}",
    ]
    if machine.get("bandwidth_intra") is not None:
        lines += [
            f"  latency_intra       {machine['latency_intra'] * 1e6:10.2f} us per message, within a node",
            f"  bandwidth_intra     {rate(machine['bandwidth_intra'])}, within a node",
        ]
    elif spans:
        lines.append("  (no two ranks share a node: the link within a node is not measured; "
                     "run with 2 ranks per node, e.g. -ppn 2)")
    if spans:
        rpn = machine.get("ranks_per_node")
        lines.append(f"  ranks_per_node      {rpn:10d}" if rpn else
                     "  ranks_per_node            null (ranks not placed in blocks: one level)")
    return "\n".join(lines + [
        f"  gflops (gamma)      {machine['gflops']:10.2f} GFLOP/s float64 matmul, 1 BLAS thread",
        f"  gflops_noblas       {machine['gflops_noblas']:10.3f} GFLOP/s int64 matmul",
        f"  dot_call            {machine['dot_call'] * 1e6:10.2f} us per task, dot strategy on 1 rank",
        f"  dot_gflops          {machine['dot_gflops']:10.2f} GFLOP/s long dot products",
        f"  blas_setup          {machine['blas_setup'] * 1e3:10.2f} ms per local product (threadpoolctl)",
        f"  dispatch_batch      {machine['dispatch_batch'] * 1e6:10.2f} us per message (dot dispatcher)",
        f"  dispatch_task       {machine['dispatch_task'] * 1e6:10.2f} us per task (dot dispatcher)",
        f"  dispatch_element    {machine['dispatch_element'] * 1e9:10.2f} ns per element of k (dot dispatcher)",
        f"  cores               {machine['cores']:10d}",
    ] + ([f"  gemm_half_width     {machine['gemm_half_width']:10.1f} columns: a rank-w update runs at "
          f"w / (w + this) of gflops",
          f"  summa_step          {machine['summa_step'] * 1e6:10.2f} us per SUMMA panel (software)"]
         if "summa_step" in machine else []))


def run(args, comm: MPI.Comm) -> int:
    """The subcommand; bad input raises InputError, which cli.main reports (exit 2)."""
    if comm.size < 2:
        raise InputError("calibrate measures latency and bandwidth between two ranks: "
                         f"run it as `{Path(sys.executable).with_name('mpiexec')} -n 2 "
                         f"{Path(sys.executable).name} -m mpimat calibrate`")
    path = Path(args.save).expanduser() if args.save else calibration.default_path()
    figures = measure(comm, args.quick)

    def decide():
        doc = document(figures)
        calibration.save(path, doc)
        if args.json:
            print(path.read_text(), end="", flush=True)
        else:
            text = summary(doc["machine"], path, doc["layout"])
            if doc["kernels"]:
                text += "\n  kernels (faster at 1 thread)  " + ", ".join(f"{d} {k}" for d, k in doc["kernels"].items())
            print(text, flush=True)
        return {}

    agree(comm, 0, decide if comm.rank == 0 else None)
    return EXIT_OK
