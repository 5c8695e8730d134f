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

Two levels (Machine.ranks_per_node set): ranks fill nodes in blocks, as
Hydra's -ppn and Slurm's block distribution place them (rank r on node
r // ranks_per_node).  A message between two ranks of one node costs the
intra-node figures (latency_intra, bandwidth_intra: shared memory), any
other the inter-node ones (latency, bandwidth: the network).  The ranks of
a node share its network link, so node 0's link is the bottleneck: every
byte that leaves or enters node 0, whichever of its ranks sends it, is
serialised on it, and a phase takes at least that long.  Without
ranks_per_node every rank has a link of its own (one level, as before).

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
    latency_intra / bandwidth_intra: the link between two ranks of one
        node (None: the same as latency / bandwidth, which are then the
        link between nodes when ranks_per_node is set);
    ranks_per_node: ranks per node, filled in blocks (rank r on node
        r // ranks_per_node); None: one level, every rank its own link.
    gemm_half_width: SUMMA's local product per panel is a rank-w update
        C += A_w B_w, and each one streams the whole block of C through
        memory once: it runs at w / (w + gemm_half_width) of `gflops`
        (half speed at w = gemm_half_width).  32 fits a 1-thread OpenBLAS
        dgemm into a 2048 x 4096 block on a noisy 2-core VM: ~20% lost at
        w = 128, ~45% at w = 32 (the formula: 20%, 50%); calibrate fits
        it from rank-w updates of several widths;
    summa_step: the software cost of one SUMMA panel on each rank, on top
        of the messages' latency: posting and completing its broadcasts
        from Python, the BLAS calls' setup (~50 us measured on a loaded
        2-core VM; 20 us by default; calibrate measures it on ranks 0 and 1).
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
    latency_intra: Optional[float] = None
    bandwidth_intra: Optional[float] = None
    ranks_per_node: Optional[int] = None
    gemm_half_width: float = 32.0
    summa_step: float = 2e-5
    source: str = "defaults"

    @property
    def beta(self) -> float:
        return 1.0 / self.bandwidth

    @property
    def intra(self) -> Tuple[float, float]:
        """(alpha, beta) between two ranks of one node."""
        alpha = self.latency if self.latency_intra is None else self.latency_intra
        bandwidth = self.bandwidth if self.bandwidth_intra is None else self.bandwidth_intra
        return alpha, 1.0 / bandwidth

    @property
    def inter(self) -> Tuple[float, float]:
        """(alpha, beta) between ranks of different nodes (one level: every message)."""
        return self.latency, self.beta

    def node(self, rank: int) -> int:
        """The node of a rank (block placement); one level: every rank its own."""
        return rank // self.ranks_per_node if self.ranks_per_node else rank

    def same_node(self, a: int, b: int) -> bool:
        return bool(self.ranks_per_node) and self.node(a) == self.node(b)

    def link(self, a: int, b: int) -> Tuple[float, float]:
        """(alpha, beta) of a message between ranks a and b."""
        return self.intra if self.same_node(a, b) else self.inter

    def busiest_node(self, ranks: int) -> int:
        """Ranks on the fullest node (one level: all of them share `cores`)."""
        return min(ranks, self.ranks_per_node) if self.ranks_per_node else ranks

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
    moved: float = 0.0  # bytes each rank receives (summa): breaks ties between grids the flops hide

    @property
    def total(self) -> float:
        return sum(self.phases.values())

    def label(self) -> str:
        if self.strategy == "tiles":
            return f"tiles {self.grid}"
        if self.strategy == "dot":
            keep = " keep-blocks" if self.options.get("keep_blocks") else ""
            return f"dot K={self.options.get('tasks_per_message', 1)}{keep}"
        if self.strategy == "summa":
            return f"summa {self.grid}"
        return self.strategy


# --- collectives -------------------------------------------------------------

def log2ceil(p: int) -> int:
    return max(0, math.ceil(math.log2(p))) if p > 1 else 0


def bcast_time(p: int, nbytes: float, mach: Machine) -> float:
    """MPICH's MPI_Bcast among p ranks (see module docstring)."""
    return bcast_on(p, nbytes, *mach.inter)


def bcast_on(p: int, nbytes: float, a: float, b: float) -> float:
    """MPI_Bcast among p ranks over links of latency a and seconds per byte b."""
    if p <= 1 or nbytes <= 0:
        return 0.0
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


def message_time(a: int, b: int, nbytes: float, mach: Machine) -> float:
    """One message of nbytes between ranks a and b, over their link."""
    alpha, beta = mach.link(a, b)
    return alpha + nbytes * beta


def group_bcast_time(ranks: List[int], nbytes: float, mach: Machine, slow: float = 1.0) -> float:
    """MPI_Bcast among `ranks` (two levels): within one node over the intra
    link; across nodes a broadcast among the nodes over the inter link, then
    one within the fullest node (MPICH's node-aware composition).  slow
    stretches the part within a node (copies by cores that ranks share)."""
    per_node: Dict[int, int] = {}
    for r in ranks:
        per_node[mach.node(r)] = per_node.get(mach.node(r), 0) + 1
    if len(ranks) > 1 and len(per_node) == 1 and mach.ranks_per_node:
        return bcast_on(len(ranks), nbytes, *mach.intra) * slow
    return bcast_on(len(per_node), nbytes, *mach.inter) + \
        bcast_on(max(per_node.values()), nbytes, *mach.intra) * slow


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
    slow = mach.contention(mach.busiest_node(P))
    if mach.ranks_per_node:
        distribute, gather = tiles_messages_two_level(m, k, n, grid, mach, (sa, sb, sc), slow)
        pred = tiles_prediction(m, k, n, grid, mach, dtype, distribute, gather, slow)
        if any(not mach.same_node(0, r) for r in range(1, P)):
            # Over a network without a progress thread (TCP) rank 0's messages
            # to other nodes move only while it is inside MPI, and it computes
            # its own tile first: their tiles follow its own, and it waits for
            # them in the gather.
            pred.phases["gather"] += pred.phases["compute"]
            pred.notes.append("ranks on other nodes get their inputs while rank 0 is inside MPI: "
                              "their tiles follow rank 0's (counted in gather)")
        return pred
    # Stage 1: row blocks of A to the pr-1 row leaders, column blocks of B to the pc-1 column leaders.
    rows_sent = sum(block(m, pr, r)[1] - block(m, pr, r)[0] for r in range(1, pr))
    cols_sent = sum(block(n, pc, c)[1] - block(n, pc, c)[0] for c in range(1, pc))
    msgs = (pr - 1 if k else 0) + (pc - 1 if k else 0)
    stage1 = fan_out_time(msgs, (rows_sent * k * sa + cols_sent * k * sb), mach)
    # Stage 2: the biggest row block Bcast along a grid row, column block along a grid column.
    a_block = (-(-m // pr)) * k * sa
    b_block = k * (-(-n // pc)) * sb
    stage2 = bcast_time(pc, a_block, mach) + bcast_time(pr, b_block, mach)
    root_tile = block(m, pr, 0)[1] * block(n, pc, 0)[1]
    gather = fan_out_time(P - 1, (m * n - root_tile) * sc, mach) if P > 1 else 0.0
    return tiles_prediction(m, k, n, grid, mach, dtype, (stage1 + stage2) * slow, gather * slow, slow)


def tiles_prediction(m: int, k: int, n: int, grid: Grid, mach: Machine, dtype, distribute: float,
                     gather: float, slow: float) -> Prediction:
    """The prediction from the message phases (already slowed where cores are shared) and the flops."""
    P, pr, pc = grid.size, grid.rows, grid.cols
    tile = (-(-m // pr)) * (-(-n // pc))
    if P == 1:
        compute = 2.0 * tile * k / (mach.rate(dtype) * (mach.cores or 1))
    else:
        compute = 2.0 * tile * k / mach.rate(dtype) + mach.blas_setup
    notes = []
    if slow > 1:
        notes.append(f"{mach.busiest_node(P)} ranks on {mach.cores} cores: compute and messages slowed {slow:.1f}x")
    return Prediction("tiles", P, str(grid), {
        "distribute": distribute,
        "compute": compute * slow,
        "gather": gather,
    }, notes)


def tiles_messages_two_level(m: int, k: int, n: int, grid: Grid, mach: Machine,
                             sizes: Tuple[int, int, int], slow: float = 1.0) -> Tuple[float, float]:
    """(distribute, gather) of tiles when ranks fill nodes of ranks_per_node.

    The one-level scheme with each message over its own link: the root's
    blocks to the row and column leaders one after the other, then the
    slowest row and the slowest column broadcast (node-aware).  But the
    ranks of node 0 share its link: every byte that leaves node 0 (the
    root's messages to other nodes, and the broadcasts that node 0's ranks
    lead across nodes) passes through it one after the other, so
    distribution takes at least that long.  The gather: every tile to the
    root over its link, serialised on the root.

    slow (ranks sharing cores) stretches what the cores do (copies within
    a node) but not the network.
    """
    sa, sb, sc = sizes
    pr, pc = grid.rows, grid.cols
    rows = [block(m, pr, r)[1] - block(m, pr, r)[0] for r in range(pr)]
    cols = [block(n, pc, c)[1] - block(n, pc, c)[0] for c in range(pc)]
    a_bytes = [rr * k * sa for rr in rows]
    b_bytes = [k * cc * sb for cc in cols]
    alpha_x, beta_x = mach.inter
    stage1 = nic = 0.0
    if k:
        for dest, nbytes in [(grid.rank(r, 0), a_bytes[r]) for r in range(1, pr)] + \
                            [(grid.rank(0, c), b_bytes[c]) for c in range(1, pc)]:
            if mach.same_node(0, dest):
                stage1 += message_time(0, dest, nbytes, mach) * slow
            else:
                stage1 += alpha_x + nbytes * beta_x
                nic += alpha_x + nbytes * beta_x
    row_groups = [([grid.rank(r, c) for c in range(pc)], a_bytes[r]) for r in range(pr)]
    col_groups = [([grid.rank(r, c) for r in range(pr)], b_bytes[c]) for c in range(pc)]
    stage2 = max(group_bcast_time(g, b, mach, slow) for g, b in row_groups) + \
        max(group_bcast_time(g, b, mach, slow) for g, b in col_groups)
    for group, nbytes in row_groups + col_groups:
        nodes = {mach.node(r) for r in group}
        if len(nodes) > 1 and mach.node(group[0]) == mach.node(0):  # led from node 0, crosses its link
            nic += bcast_on(len(nodes), nbytes, alpha_x, beta_x)
    gather = sum(message_time(grid.rank(r, c), 0, rows[r] * cols[c] * sc, mach)
                 * (slow if mach.same_node(0, grid.rank(r, c)) else 1.0)
                 for r in range(pr) for c in range(pc) if (r, c) != (0, 0))
    return max(stage1 + stage2, nic), gather


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
    two levels: workers pull batches at their own pace, those on other
    nodes together at most one per batch bytes * beta (node 0's link), and
    each of their batches costs the root the latency difference between
    the links on top (see the code);
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
    # Each worker's link: two levels, intra for node 0's workers, inter for
    # the rest (one level: inter for all).
    links = [mach.link(0, w) for w in range(1, ranks)]
    # dispatch_batch is calibrated from whole dispatcher runs, so it already
    # holds the root's MPI calls (send, answer, wait): no extra alpha here.
    elements = (payload / batches) / (sa + sb)  # k per task: a row and a column element each
    per_byte = max(mach.dispatch_element * elements, per_batch_bytes * min(beta for _, beta in links))
    root = mach.dispatch_batch + K * mach.dispatch_task + per_byte
    workers = [alpha + K * dot + per_batch_bytes * beta for alpha, beta in links]
    worker = max(workers)
    # Ranks sharing node 0's cores with the dispatcher (one level: all of them).
    local = mach.busiest_node(ranks)
    cores = mach.cores or local
    # The workers pull batches at their own pace (one batch per `pace`
    # together); those beyond node 0 share its link, at most one batch per
    # batch-bytes * beta through it.
    near = sum(1.0 / w for w, r in zip(workers, range(1, ranks)) if mach.same_node(0, r))
    far = sum(1.0 / w for w, r in zip(workers, range(1, ranks)) if not mach.same_node(0, r))
    if mach.ranks_per_node and far:
        far = min(far, 1.0 / (per_batch_bytes * mach.beta))
        # dispatch_batch was timed between ranks 0 and 1, which share a node
        # when the calibration had intra figures: a batch for another node
        # also costs the root a network send and receive, about the latency
        # difference (calibrated on two nodes x one rank, the difference is 0).
        root += far / (near + far) * max(0.0, mach.latency - mach.intra[0])
    pace = 1.0 / (near + far)
    local_worker = min(workers[:local - 1], default=worker)
    per_batch = max(root, pace, (root + local_worker * min(local - 1, cores)) / cores if local > cores else 0.0)
    total = batches * per_batch + worker  # plus the pipeline's fill
    busy = batches * root
    notes = [f"{tasks:,} tasks in {batches:,} messages (+ as many answers); "
             f"root {root * 1e6:.2f} us/message, worker {worker * 1e6:.2f} us/message"]
    if local > cores:
        notes.append(f"{local} ranks on {cores} cores: dispatcher and workers share cores")
    bound = "root (dispatcher)" if per_batch == root else "workers"
    if mach.ranks_per_node and ranks > mach.ranks_per_node:
        notes.append(f"{sum(1 for w in range(1, ranks) if not mach.same_node(0, w))} of {W} workers "
                     f"beyond node 0's link")
    notes.append(f"paced by the {bound}")
    return Prediction("dot", ranks, None, {
        "distribute": min(busy, total),
        "compute": max(0.0, total - busy),
        "gather": 0.0,
    }, notes, opts)


# --- SUMMA ---------------------------------------------------------------------

def summa_groups(grid: Grid, mach: Machine) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """The shapes of SUMMA's broadcast groups: (nodes, ranks on the fullest node) of
    every grid row (A's panels) and every grid column (B's), without repeats.
    One level: every rank its own node."""
    def shape(ranks: List[int]) -> Tuple[int, int]:
        per_node: Dict[int, int] = {}
        for r in ranks:
            per_node[mach.node(r)] = per_node.get(mach.node(r), 0) + 1
        return len(per_node), max(per_node.values())

    rows = sorted({shape([grid.rank(r, c) for c in range(grid.cols)]) for r in range(grid.rows)})
    cols = sorted({shape([grid.rank(r, c) for r in range(grid.rows)]) for c in range(grid.cols)})
    return rows, cols


def _group_bcast(shape: Tuple[int, int], nbytes: float, mach: Machine) -> Tuple[float, float]:
    """MPI_Bcast within a group of this shape (group_bcast_time, from its shape), in two
    parts: (among nodes over the network, the rest).  The first is non-zero only on two
    levels when the group spans nodes; one level: all of it is the rest (every rank its
    own link, as the one-level tiles model treats every message)."""
    nodes, fullest = shape
    if not mach.ranks_per_node:
        return 0.0, bcast_on(nodes, nbytes, *mach.inter)
    if nodes == 1:
        return 0.0, bcast_on(fullest, nbytes, *mach.intra)
    return bcast_on(nodes, nbytes, *mach.inter), bcast_on(fullest, nbytes, *mach.intra)


@dataclass(frozen=True)
class SummaTime:
    """SUMMA's predicted compute phase for one panel width (the slowest rank).

    count, widest: the panels (layout.panels) and the widest of them;
    products: the local rank-w updates, BLAS's loss on narrow panels included;
    steps: the software cost of the panel steps;
    broadcasts: every panel's row and column broadcasts that the look-ahead
        overlaps with the products: within a node (two levels), all of them
        (one level);
    fill: the first panel's overlapped broadcasts, which nothing overlaps;
    network: every panel's broadcasts among nodes (two levels), which do
        not overlap the products (see `seconds`);
    slow: the contention factor (mach.contention of the busiest node's
        ranks), already in products, steps, broadcasts and fill, not in
        network (shared cores do not slow the network).
    """

    width: int
    count: int
    widest: int
    products: float
    steps: float
    broadcasts: float
    fill: float
    network: float = 0.0
    slow: float = 1.0

    @property
    def seconds(self) -> float:
        # One panel of look-ahead: the broadcasts of panel p+1 run while panel p's
        # product does, so the slower of the two sets the pace; the first panel's
        # broadcasts come before any product.  But only where a broadcast moves
        # while its ranks compute: within a node (shared memory, the receiver
        # pulls) it does.  Between nodes (two levels) it does not: over a network
        # without asynchronous progress (MPICH over UCX's TCP, no progress
        # thread) a message moves only while its ranks are inside MPI, so those
        # broadcasts add to the products, all of them, the first included (no
        # separate fill).  The same effect as rank 0's messages to other nodes
        # in predict_tiles' two-level model (their tiles follow rank 0's).
        # Measured on 4 hosts x 1 rank over 1 Gbit/s TCP, n = 4096: nothing
        # crossed the links during the products; docs/cluster-validation.md,
        # "summa against tiles on 4 hosts (issue 12)".
        return max(self.products + self.steps, self.broadcasts) + self.fill + self.network


def summa_time(m: int, k: int, n: int, grid: Grid, mach: Machine, width: int, dtype_a="float64",
               dtype_b=None, groups=None) -> SummaTime:
    """SUMMA's compute phase with panels of at most `width` (see summa_panel_width for the terms).

    Contention as predict_tiles charges it: mach.contention of the ranks on
    the busiest node, on what the cores do (products, steps, broadcasts
    within a node; one level: every broadcast, as tiles' one-level
    messages), not on the broadcasts among nodes (two levels)."""
    from .dist.layout import panel_count

    sa, sb, _ = itemsizes(dtype_a, dtype_b)
    dtype_c = np.result_type(np.dtype(dtype_a), np.dtype(dtype_a if dtype_b is None else dtype_b))
    P = grid.size
    slow = mach.contention(mach.busiest_node(P))
    rows, cols = -(-m // grid.rows), -(-n // grid.cols)  # the largest block: the slowest rank
    count, widest = panel_count(k, grid, max(1, width)) if k else (0, 0)
    rate = mach.rate(dtype_c) * ((mach.cores or 1) if P == 1 else 1)
    # Each panel's rank-w update streams C once: as if it had gemm_half_width more columns.
    products = 2.0 * rows * cols * (k + count * mach.gemm_half_width) / rate * slow
    steps = count * mach.summa_step * slow if P > 1 else 0.0
    row_shapes, col_shapes = groups or summa_groups(grid, mach)

    def bcasts(w: float) -> Tuple[float, float]:
        # A's panel along the slowest grid row and B's along the slowest grid
        # column, both posted together (Ibcast) and counted one after the other;
        # (among nodes, the rest), each part for its slowest group.
        a = [_group_bcast(g, rows * w * sa, mach) for g in row_shapes]
        b = [_group_bcast(g, w * cols * sb, mach) for g in col_shapes]
        return (max(x for x, _ in a) + max(x for x, _ in b),
                (max(y for _, y in a) + max(y for _, y in b)) * slow)

    # Per panel: log2-ish latency terms plus its bytes; bcast is affine in the
    # bytes within one MPICH algorithm, so count panels of the mean width.
    network, broadcasts = (count * x for x in bcasts(k / count)) if count else (0.0, 0.0)
    fill = bcasts(widest)[1] if count else 0.0
    return SummaTime(width, count, widest, products, steps, broadcasts, fill, network, slow)


def summa_panel_memory(m: int, k: int, n: int, grid: Grid, width: int, sa: int = 8, sb: int = 8,
                       sc: int = 8) -> Tuple[int, int]:
    """(bytes of the largest blocks of A, B and C, bytes of two panel buffers per operand)."""
    pr, pc = grid.rows, grid.cols
    rows, cols = -(-m // pr), -(-n // pc)
    blocks = rows * -(-k // pc) * sa + -(-k // pr) * cols * sb + rows * cols * sc
    return blocks, 2 * width * (rows * sa + cols * sb)


def summa_panel_width(m: int, k: int, n: int, grid: Grid, mach: Optional[Machine] = None,
                      dtype_a="float64", dtype_b=None, memory: Optional[float] = None,
                      panel_bytes: Optional[int] = None) -> int:
    """SUMMA's panel width (columns of A / rows of B per step): the width whose
    predicted time (summa_time) is least, within the memory bound.

    Deterministic: a pure function of its arguments, so every rank that calls
    it with the same ones gets the same width.

    Why not one fixed width:
    - narrow panels pay per panel: each step's row and column broadcasts
      cost about log2(p) * alpha of latency (MPICH's binomial tree; more
      for scatter-allgather), the step's software (mach.summa_step), and
      a thin rank-w update runs below BLAS's speed, because it streams the
      whole block of C for only 2w flops per element: w / (w + h) of the
      full rate, h = mach.gemm_half_width (so w = 128 loses ~20% at h = 32);
    - wide panels lose overlap: the first panel's broadcasts are not hidden
      behind any product (the pipeline's fill, one panel's transfer), and
      they cost memory: two buffers per operand, 2 w (rows + cols) items.
    So the time is  max(products + steps, broadcasts) + fill + network
    (see SummaTime: broadcasts among nodes, `network`, are not overlapped;
    contention as summa_time charges it), minimised over widths from
    MIN_PANEL_WIDTH (or k, if k is
    smaller) up to the memory bound, on a ladder of 8 widths per octave;
    ties go to the narrower width (less memory).

    Memory: a panel of either operand holds at most panel_bytes (default
    layout.PANEL_BYTES, 32 MiB: a BLAS call of that size already runs at
    full speed), as before this was a model decision; and when `memory`
    (bytes a rank may use) is given, the largest blocks of A, B and C plus
    the four panel buffers must fit in it.  The memory bound wins over
    the minimum width (a narrow panel is slow; one that does not fit
    fails); when not even one column fits, the answer is 1 (the caller's
    memory check refuses).  k = 0: 1 (no panels).
    """
    from .dist.layout import MIN_PANEL_WIDTH, PANEL_BYTES, panel_count, panel_width

    for name, value in (("m", m), ("k", k), ("n", n)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}= must be a whole number >= 0, got {value!r}")
    if memory is not None and not memory >= 0:
        raise ValueError(f"memory= must be a number of bytes >= 0, got {memory!r}")
    if panel_bytes is not None and (not isinstance(panel_bytes, (int, np.integer)) or panel_bytes < 1):
        raise ValueError(f"panel_bytes= must be a positive number of bytes, got {panel_bytes!r}")
    mach = Machine() if mach is None else mach
    if k == 0:
        return 1
    sa, sb, sc = itemsizes(dtype_a, dtype_b)
    rows, cols = -(-m // grid.rows), -(-n // grid.cols)
    # The cap per panel buffer (at least MIN_PANEL_WIDTH, at most k).
    hi = panel_width(k, rows, cols, sa, sb, PANEL_BYTES if panel_bytes is None else panel_bytes)
    if memory is not None:
        blocks, per_width = summa_panel_memory(m, k, n, grid, 1, sa, sb, sc)
        fits = int((memory - blocks) // per_width) if per_width else k
        if fits < 1:
            return 1
        hi = min(hi, fits)
    lo = min(MIN_PANEL_WIDTH, hi)
    # Widths wider than the longest stretch of k one owner holds make the same panels.
    longest = panel_count(k, grid, k)[1]
    hi = max(lo, min(hi, longest))
    ladder = {lo, hi}
    i = 1
    while lo * 2 ** (i / 8) < hi:
        ladder.add(int(round(lo * 2 ** (i / 8))))
        i += 1
    groups = summa_groups(grid, mach)
    return min(sorted(ladder), key=lambda w: (summa_time(m, k, n, grid, mach, w, dtype_a, dtype_b, groups).seconds, w))


def predict_summa(m: int, k: int, n: int, grid: Grid, mach: Machine, dtype="float64",
                  from_root: bool = False, width: Optional[int] = None,
                  memory: Optional[float] = None) -> Prediction:
    """SUMMA (dist/summa.py) on a pr x pc grid, the matrices in 2-D blocks from the start.

    For each panel of k, a grid row broadcasts A's panel and a grid column
    B's (MPICH Bcast, per panel); with one panel of look-ahead the
    broadcasts within a node (one level: all) overlap the local products,
    so compute is the larger of the two plus one panel's broadcasts, plus
    the broadcasts among nodes (two levels), which do not overlap them
    (summa_time, SummaTime.seconds).  Shared cores slow what the cores do,
    for the ranks of the busiest node, as predict_tiles charges them, not
    the network.  width: the panel width
    (default: the model's, summa_panel_width, as dist.matmul picks it;
    memory is passed to it).  from_root: the data starts and ends on
    rank 0 (matmul(A, B) on the root): then the blocks go out through rank
    0's link and C's blocks come back through it (distribute, gather).
    Options carry the panel width and count; notes the words each rank
    receives and the ITT lower bound (summa_words).
    """
    sa, sb, sc = itemsizes(dtype)
    P = grid.size
    if width is None:
        width = summa_panel_width(m, k, n, grid, mach, dtype, memory=memory)
    t = summa_time(m, k, n, grid, mach, width, dtype)  # contention included where it applies
    compute = t.seconds + (mach.blas_setup * t.slow if P > 1 else 0.0)
    distribute = gather = 0.0
    if from_root and P > 1:
        # Through rank 0's link: shared cores stretch it on one level (as tiles'), not the network.
        link_slow = 1.0 if mach.ranks_per_node else t.slow
        distribute = fan_out_time(P - 1, (m * k * sa + k * n * sb) * (P - 1) / P, mach) * link_slow
        gather = fan_out_time(P - 1, m * n * sc * (P - 1) / P, mach) * link_slow
    words = summa_words(m, k, n, grid, sa, sb, sc, width=t.widest)
    notes = [f"panels of {t.widest} (model's width; {t.count} panels): each rank receives about "
             f"{words['received_bytes'] / 1e6:.3g} MB; "
             f"lower bound (Irony-Toledo-Tiskin 2004) with the {words['memory_bytes'] / 1e6:.3g} MB it holds: "
             f"{words['bound_bytes'] / 1e6:.3g} MB"]
    if t.slow > 1:
        notes.append(f"{mach.busiest_node(P)} ranks on {mach.cores} cores: products slowed {t.slow:.1f}x")
    if t.network:
        notes.append(f"broadcasts between nodes ({t.network:.3g} s) move only while the ranks are inside MPI: "
                     f"added to the products, not overlapped")
    return Prediction("summa", P, str(grid), {
        "distribute": distribute, "compute": compute, "gather": gather}, notes,
        {"panel_width": t.widest, "panels": t.count}, moved=words["received_bytes"])


def summa_words(m: int, k: int, n: int, grid: Grid, sa: int = 8, sb: int = 8, sc: int = 8,
                width: Optional[int] = None) -> dict:
    """Bytes SUMMA moves into each rank, against the communication lower bound for its memory.

    received: a rank receives the parts of its grid row's A block and its
    grid column's B block that others own: rows*k*(pc-1)/pc + k*cols*(pr-1)/pr.
    bound: Irony, Toledo and Tiskin (J. Parallel Distrib. Comput. 64, 2004,
    Theorem 3.1): with M words of memory per processor, some processor of P
    communicates at least  m k n / (2 sqrt(2) P sqrt(M)) - M  words (stated
    for n x n; the same Loomis-Whitney argument counts m k n products).  M is
    what SUMMA holds: its blocks of A, B and C and two panels of each operand
    (of `width`; default: the model's width on the default Machine).
    The bound is for the busiest processor; words in units of the largest itemsize.
    """
    pr, pc, P = grid.rows, grid.cols, grid.size
    rows, cols = -(-m // pr), -(-n // pc)
    received = rows * k * sa * (pc - 1) / pc + k * cols * sb * (pr - 1) / pr
    if width is None:
        width = summa_panel_width(m, k, n, grid, None, _dtype_of_size(sa), _dtype_of_size(sb)) if k else 0
    blocks, panels = summa_panel_memory(m, k, n, grid, width, sa, sb, sc)
    memory = blocks + panels
    word = max(sa, sb, sc)
    M = max(memory / word, 1.0)
    bound = max(0.0, m * k * n / (2 * math.sqrt(2) * P * math.sqrt(M)) - M) * word
    return {"received_bytes": received, "memory_bytes": memory, "bound_bytes": bound}


def _dtype_of_size(itemsize: int) -> np.dtype:
    """A numeric dtype with this itemsize (floats first), for callers that only know sizes."""
    return np.dtype({1: "int8", 2: "float16", 4: "float32", 8: "float64", 16: "complex128"}.get(itemsize, "float64"))


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
    messages: 2 m n k / rate.  Two levels: the cheaper of the two links
    (the data may stay on node 0), and `cores` on every node.
    """
    sa, sb, sc = itemsizes(dtype)
    out_bytes = m * k * sa + k * n * sb
    in_bytes = m * n * sc
    beta = mach.beta
    if mach.ranks_per_node:  # the data may stay on node 0: its cheaper link bounds it
        beta = min(beta, mach.intra[1])
    link = max(out_bytes, in_bytes) * beta
    cores = mach.cores or ranks
    if mach.ranks_per_node and mach.cores:
        cores = mach.cores * -(-ranks // mach.ranks_per_node)
    compute = 2.0 * m * n * k / mach.rate(dtype) / max(1, min(ranks, cores))
    alone = 2.0 * m * n * k / mach.rate(dtype)
    distributed = max(link, compute)
    return {
        "seconds": min(alone, distributed) if ranks > 1 else alone,
        "link_seconds": link, "compute_seconds": compute, "one_rank_seconds": alone,
        "bytes_out_of_root": out_bytes, "bytes_into_root": in_bytes,
    }


# --- choosing ----------------------------------------------------------------

def candidates(m: int, k: int, n: int, ranks: int, mach: Machine, dtype="float64",
               with_dot: bool = True, distributed: bool = False) -> List[Prediction]:
    """Predictions for every strategy and grid.

    distributed: the job can start and end with the matrices in blocks (the
    command line reads, generates and writes them in parallel), so SUMMA
    competes too; matmul(A, B) on the root keeps the root-scatter strategies.
    """
    out = [predict_tiles(m, k, n, Grid(r, c), mach, dtype) for r, c in factor_pairs(ranks)]
    if distributed:
        out += [predict_summa(m, k, n, Grid(r, c), mach, dtype) for r, c in factor_pairs(ranks)]
    if with_dot:
        for K in (1, 64, 1024):
            for keep in (False, True):
                out.append(predict_dot(m, k, n, ranks, mach, dtype, K, keep))
    return sorted(out, key=ranking)


def ranking(p: Prediction):
    """Fastest first; among predictions equal to 0.1% (SUMMA grids whose communication the
    products hide), the one that moves the fewest bytes."""
    return (float(f"{p.total:.3g}"), p.moved)


def recommend(m: int, k: int, n: int, ranks: int, mach: Machine, dtype="float64",
              distributed: bool = False) -> dict:
    """The fastest runnable choice on exactly `ranks` ranks, and advice on rank count."""
    cands = candidates(m, k, n, ranks, mach, dtype, distributed=distributed)
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
    if best.strategy in ("tiles", "summa"):
        r, c = best.grid.split("x")
        return best.strategy, Grid(int(r), int(c)), {}
    return best.strategy, None, dict(best.options)


def choose(m: int, k: int, n: int, ranks: int, mach: Machine, dtype="float64") -> Tuple[str, Optional[Grid], dict]:
    """(strategy, grid, options) for --strategy auto."""
    return choice(recommend(m, k, n, ranks, mach, dtype)["best"])
