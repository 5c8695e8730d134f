"""An alpha-beta-gamma cost model of mpimat's strategies.  Pure arithmetic.

A message of b bytes costs  alpha + b * beta  (alpha: latency including
the software on both ends, beta = 1 / link bandwidth); a rank's arithmetic
costs gamma per flop (gamma = 1 / its flop rate for the dtype).  Rank 0
(the root) holds A and B and must hold C at the end; its link is the
bottleneck every root-based scheme shares.

Collectives are costed the way MPICH implements the calls mpimat makes:

- Bcast (MPIR_Bcast_intra_auto): binomial tree when the message is short
  (< 12288 bytes) or the communicator small (< 8 ranks):
  ceil(log2 p) * (alpha + b beta); otherwise scatter then allgather
  (recursive doubling for medium messages on power-of-two sizes, ring for
  long ones): about (log2 p + p - 1) alpha + 2 (p-1)/p b beta;
- point-to-point fan-out from the root (tiles stage 1, the gather of C, the
  dot dispatcher): the root's link serialises its messages, so k messages of
  b bytes cost k alpha + (k b) beta on the root.

Every prediction is per phase, as the JSON report measures them on the
root: distribute, compute, gather.  `Machine` holds the parameters;
`calibrate` measures them, `plan` prints the predictions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .partition import Grid, block, factor_pairs

BCAST_SHORT_MSG_SIZE = 12288
BCAST_LONG_MSG_SIZE = 524288
BCAST_MIN_PROCS = 8


@dataclass(frozen=True)
class Machine:
    """Machine parameters (SI units).

    latency: alpha, seconds per message (one way, software included);
    bandwidth: bytes per second of one rank's link (1 / beta);
    gflops: dense float64 matmul rate of one rank (BLAS, one thread);
    gflops_noblas: numpy's own matmul loops (ints, bool, float16);
    dot_gflops / dot_call: a single dot product of length k costs
        dot_call + 2 k / (dot_gflops 1e9) (vector ops are memory-bound);
    dispatch_batch / dispatch_task / dispatch_element: the dot dispatcher's
        own time per message, per task and per element of k packed (a
        strided column costs a cache line per element); 0 means "use beta";
    blas_setup: fixed cost of one local product when ranks share a node
        (mpimat limits BLAS to one thread per rank with threadpoolctl);
    cores: cores per node (None: every rank has its own core).  A rank
        alone gets BLAS's default of every core (ideal scaling assumed).
    """

    latency: float = 2e-6
    bandwidth: float = 10e9
    gflops: float = 50.0
    gflops_noblas: float = 1.0
    dot_gflops: float = 2.0
    dot_call: float = 1.5e-6
    dispatch_batch: float = 4e-6
    dispatch_task: float = 1.5e-6
    dispatch_element: float = 0.0
    blas_setup: float = 0.0
    cores: Optional[int] = None
    source: str = "defaults"

    @property
    def beta(self) -> float:
        return 1.0 / self.bandwidth

    def rate(self, dtype) -> float:
        """Flops per second of one rank's local matmul for this dtype."""
        dtype = np.dtype(dtype)
        if dtype == np.float64:
            return self.gflops * 1e9
        if dtype == np.float32:
            return 2 * self.gflops * 1e9
        if dtype == np.complex128:  # a complex multiply-add is 4 real ones
            return self.gflops * 1e9 / 4
        if dtype == np.complex64:
            return self.gflops * 1e9 / 2
        return self.gflops_noblas * 1e9

    def contention(self, ranks: int) -> float:
        """Slowdown when more ranks than cores share a node (busy-polling MPI)."""
        if not self.cores or ranks <= self.cores:
            return 1.0
        return ranks / self.cores

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Machine":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Prediction:
    strategy: str
    ranks: int
    grid: Optional[str]
    phases: Dict[str, float]
    notes: List[str] = field(default_factory=list)
    options: Dict[str, object] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.phases.values())

    def label(self) -> str:
        if self.strategy == "tiles":
            return f"tiles {self.grid}"
        if self.strategy == "dot":
            keep = " keep-blocks" if self.options.get("keep_blocks") else ""
            return f"dot K={self.options.get('tasks_per_message', 1)}{keep}"
        return self.strategy


# --- collectives -------------------------------------------------------------

def log2ceil(p: int) -> int:
    return max(0, math.ceil(math.log2(p))) if p > 1 else 0


def bcast_time(p: int, nbytes: float, mach: Machine) -> float:
    """MPICH's MPI_Bcast among p ranks (see module docstring)."""
    if p <= 1 or nbytes <= 0:
        return 0.0
    a, b = mach.latency, mach.beta
    lg = log2ceil(p)
    if nbytes < BCAST_SHORT_MSG_SIZE or p < BCAST_MIN_PROCS:
        return lg * (a + nbytes * b)
    scatter = lg * a + (p - 1) / p * nbytes * b
    if nbytes < BCAST_LONG_MSG_SIZE and p & (p - 1) == 0:
        allgather = lg * a + (p - 1) / p * nbytes * b
    else:
        allgather = (p - 1) * a + (p - 1) / p * nbytes * b
    return scatter + allgather


def fan_out_time(messages: int, nbytes: float, mach: Machine) -> float:
    """`messages` messages totalling nbytes through the root's link."""
    return messages * mach.latency + nbytes * mach.beta


# --- strategies --------------------------------------------------------------

def itemsizes(dtype_a, dtype_b=None, dtype_c=None) -> Tuple[int, int, int]:
    dtype_a = np.dtype(dtype_a)
    dtype_b = np.dtype(dtype_b) if dtype_b is not None else dtype_a
    dtype_c = np.dtype(dtype_c) if dtype_c is not None else np.result_type(dtype_a, dtype_b)
    return dtype_a.itemsize, dtype_b.itemsize, dtype_c.itemsize


def predict_tiles(m: int, k: int, n: int, grid: Grid, mach: Machine, dtype="float64") -> Prediction:
    """mpimat's tiles strategy: root -> leaders, row/column Bcast, BLAS, gather."""
    sa, sb, sc = itemsizes(dtype)
    P = grid.size
    pr, pc = grid.rows, grid.cols
    slow = mach.contention(P)
    # Stage 1: row blocks of A to the pr-1 row leaders, column blocks of B to the pc-1 column leaders.
    rows_sent = sum(block(m, pr, r)[1] - block(m, pr, r)[0] for r in range(1, pr))
    cols_sent = sum(block(n, pc, c)[1] - block(n, pc, c)[0] for c in range(1, pc))
    msgs = (pr - 1 if k else 0) + (pc - 1 if k else 0)
    stage1 = fan_out_time(msgs, (rows_sent * k * sa + cols_sent * k * sb), mach)
    # Stage 2: the biggest row block Bcast along a grid row, column block along a grid column.
    a_block = (-(-m // pr)) * k * sa
    b_block = k * (-(-n // pc)) * sb
    stage2 = bcast_time(pc, a_block, mach) + bcast_time(pr, b_block, mach)
    tile = (-(-m // pr)) * (-(-n // pc))
    if P == 1:
        compute = 2.0 * tile * k / (mach.rate(dtype) * (mach.cores or 1))
    else:
        compute = 2.0 * tile * k / mach.rate(dtype) + mach.blas_setup
    root_tile = block(m, pr, 0)[1] * block(n, pc, 0)[1]
    gather = fan_out_time(P - 1, (m * n - root_tile) * sc, mach) if P > 1 else 0.0
    notes = []
    if slow > 1:
        notes.append(f"{P} ranks on {mach.cores} cores: compute and messages slowed {slow:.1f}x")
    return Prediction("tiles", P, str(grid), {
        "distribute": (stage1 + stage2) * slow,
        "compute": compute * slow,
        "gather": gather * slow,
    }, notes)


def dot_task_time(k: int, mach: Machine, dtype="float64") -> float:
    """One dot product of length k on one rank."""
    rate = mach.dot_gflops * 1e9
    if np.dtype(dtype).kind not in "fc" or np.dtype(dtype).itemsize < 4:
        rate = min(rate, mach.gflops_noblas * 1e9)
    return mach.dot_call + 2.0 * k / rate


def predict_dot(m: int, k: int, n: int, ranks: int, mach: Machine, dtype="float64",
                tasks_per_message: int = 1, keep_blocks: bool = False) -> Prediction:
    """The dot strategy: the root dispatches m*n tasks, K per message.

    The root's time per batch:   dispatch_batch + K dispatch_task
                                 + max(elements packed * dispatch_element,
                                       batch bytes * beta);
    a worker's time per batch:   alpha + K dot(k) + batch bytes * beta.
    With several batches in flight per worker (options.DotOptions.window)
    the slower side sets the pace: T = batches * max(root, worker / W,
    (root + worker) / cores).
    """
    sa, sb, sc = itemsizes(dtype)
    K = max(1, int(tasks_per_message))
    tasks = m * n
    opts = {"tasks_per_message": K, "keep_blocks": keep_blocks}
    if tasks == 0:
        return Prediction("dot", ranks, None, {"distribute": 0.0, "compute": 0.0, "gather": 0.0}, [], opts)
    dot = dot_task_time(k, mach, dtype)
    if ranks == 1:
        return Prediction("dot", 1, None, {"distribute": 0.0, "compute": tasks * dot, "gather": 0.0},
                          ["one rank: the root computes every task itself"], opts)
    W = ranks - 1
    batches = -(-tasks // K)
    if keep_blocks:
        # Tasks go out in row-major order: a worker mostly keeps its row;
        # each worker ends up holding every column it touched (at most n).
        rows_bytes = min(tasks, m * min(W, n)) * k * sa
        cols_bytes = min(tasks, W * n) * k * sb
        payload = rows_bytes + cols_bytes
    else:
        payload = tasks * k * (sa + sb)
    per_batch_bytes = payload / batches + 8 * (4 + 4 * K)
    # dispatch_batch is calibrated from whole dispatcher runs, so it already
    # holds the root's MPI calls (send, answer, wait): no extra alpha here.
    elements = (payload / batches) / (sa + sb)  # k per task: a row and a column element each
    per_byte = max(mach.dispatch_element * elements, per_batch_bytes * mach.beta)
    root = mach.dispatch_batch + K * mach.dispatch_task + per_byte
    worker = mach.latency + K * dot + per_batch_bytes * mach.beta
    cores = mach.cores or ranks
    per_batch = max(root, worker / W, (root + worker * min(W, cores)) / cores if ranks > cores else 0.0)
    total = batches * per_batch + worker  # plus the pipeline's fill
    busy = batches * root
    notes = [f"{tasks:,} tasks in {batches:,} messages (+ as many answers); "
             f"root {root * 1e6:.2f} us/message, worker {worker * 1e6:.2f} us/message"]
    if ranks > cores:
        notes.append(f"{ranks} ranks on {cores} cores: dispatcher and workers share cores")
    bound = "root (dispatcher)" if per_batch == root else "workers"
    notes.append(f"paced by the {bound}")
    return Prediction("dot", ranks, None, {
        "distribute": min(busy, total),
        "compute": max(0.0, total - busy),
        "gather": 0.0,
    }, notes, opts)


def predict_blog(n: int, mach: Machine, dtype="float64") -> Dict[str, float]:
    """The blog's scenario: P = n^2 ranks, one dot product each, data on rank 0.

    literal: rank 0 sends row i and column j to each of the n^2 ranks and
      receives n^2 scalars: n^2 messages out and in, 2 n^3 words out;
    lower_bound: every element of A and B leaves rank 0 at least once
      (2 n^2 words through its link) whatever the algorithm and P;
    claimed: the blog's 'O(n)': one dot product of length n.
    """
    sa, _, sc = itemsizes(dtype)
    P = n * n
    literal = 2 * P * mach.latency + (2.0 * n ** 3 * sa + P * sc) * mach.beta + dot_task_time(n, mach, dtype)
    tree = lower_bound(n, n, n, P, mach, dtype)["seconds"] + 2 * log2ceil(P) * mach.latency
    return {
        "ranks": P,
        "literal_seconds": literal,
        "best_tree_seconds": tree,
        "lower_bound_seconds": lower_bound(n, n, n, P, mach, dtype)["seconds"],
        "claimed_seconds": dot_task_time(n, mach, dtype),
        "one_rank_seconds": 2.0 * n ** 3 / mach.rate(dtype),
    }


def lower_bound(m: int, k: int, n: int, ranks: int, mach: Machine, dtype="float64") -> dict:
    """What no root-based scheme on `ranks` ranks can beat.

    If any rank but the root computes, the inputs it needs must leave the
    root: all of A and B in the worst case, and at least once each, so the
    root's link carries >= (mk + kn) words out (and the m n words of C back
    in); and the flops are at best split evenly.  The root alone needs no
    messages: 2 m n k / rate.
    """
    sa, sb, sc = itemsizes(dtype)
    out_bytes = m * k * sa + k * n * sb
    in_bytes = m * n * sc
    link = max(out_bytes, in_bytes) * mach.beta
    compute = 2.0 * m * n * k / mach.rate(dtype) / max(1, min(ranks, mach.cores or ranks))
    alone = 2.0 * m * n * k / mach.rate(dtype)
    distributed = max(link, compute)
    return {
        "seconds": min(alone, distributed) if ranks > 1 else alone,
        "link_seconds": link, "compute_seconds": compute, "one_rank_seconds": alone,
        "bytes_out_of_root": out_bytes, "bytes_into_root": in_bytes,
    }


# --- choosing ----------------------------------------------------------------

def candidates(m: int, k: int, n: int, ranks: int, mach: Machine, dtype="float64",
               with_dot: bool = True) -> List[Prediction]:
    out = [predict_tiles(m, k, n, Grid(r, c), mach, dtype) for r, c in factor_pairs(ranks)]
    if with_dot:
        for K in (1, 64, 1024):
            for keep in (False, True):
                out.append(predict_dot(m, k, n, ranks, mach, dtype, K, keep))
    return sorted(out, key=lambda p: p.total)


def recommend(m: int, k: int, n: int, ranks: int, mach: Machine, dtype="float64") -> dict:
    """The fastest runnable choice on exactly `ranks` ranks, and advice on rank count."""
    cands = candidates(m, k, n, ranks, mach, dtype)
    best = cands[0]
    advice = None
    # Would fewer ranks be faster?  (e.g. when the root's link costs more than the flops save)
    fewer = []
    p = 1
    while p < ranks:
        fewer.append(min(candidates(m, k, n, p, mach, dtype, with_dot=False), key=lambda q: q.total))
        p *= 2
    if fewer:
        quick = min(fewer, key=lambda q: q.total)
        if quick.total < 0.9 * best.total:
            advice = (f"{quick.ranks} rank{'s' if quick.ranks > 1 else ''} ({quick.label()}) would take "
                      f"{quick.total:.3g} s, less than {best.total:.3g} s on {ranks}: extra ranks cost "
                      f"more in rank 0's link than they save in flops")
    return {"best": best, "candidates": cands, "advice": advice}


def choice(best: Prediction) -> Tuple[str, Optional[Grid], dict]:
    """(strategy, grid, options) that run a prediction (grid None for dot)."""
    if best.strategy == "tiles":
        r, c = best.grid.split("x")
        return "tiles", Grid(int(r), int(c)), {}
    return best.strategy, None, dict(best.options)


def choose(m: int, k: int, n: int, ranks: int, mach: Machine, dtype="float64") -> Tuple[str, Optional[Grid], dict]:
    """(strategy, grid, options) for --strategy auto."""
    return choice(recommend(m, k, n, ranks, mach, dtype)["best"])
