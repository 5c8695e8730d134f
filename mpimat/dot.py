"""The dot strategy: the blog's scheme, literally.  One task = one dot product.

C = A @ B has m*n entries; each is a task "C[i, j] = A[i, :] @ B[:, j]".
The root is a dispatcher: it sends a worker the row i of A and the column j
of B a task needs, the worker sends back one scalar, the root stores it.
Workers ask for work by answering: every answer frees a slot, the root fills
it with the next tasks, so a slow worker simply gets fewer tasks.

Protocol (buffer-based, fixed-size, no Probe, nothing pickled):

- every worker has `window` slots; slot s has its own tags (task TAG_TASK+s,
  answer TAG_RESULT+s), its own preallocated buffers on both sides, and at
  most one batch in flight, so `window` batches per worker are pipelined;
- a batch message is one byte buffer: an int64 header
  [count, nrows, ncols, first_task, row_slot[K], col_slot[K], row_dest[K], col_dest[K]]
  followed by up to K rows of A (each padded to 16 bytes) and up to K columns
  of B.  Tasks of a batch are consecutive flat indices of C (row-major), so
  the answer is K scalars stored with one slice assignment;
- the worker preposts a receive of the largest batch size per slot (a shorter
  message fills a prefix), so no message size is ever probed;
- count == 0 is "stop": the root sends exactly one stop per slot, after the
  slot's last answer, so every receive the worker posted is matched.

With --keep-blocks (option keep_blocks) a worker keeps rows and columns it
has received in a bounded cache whose slots the root manages (LRU, mirrored
on the root); a batch then only carries the rows/columns the worker lacks.
Every scalar of C is still its own task.  Reported as rows/cols sent/reused.

Each dot product is np.matmul(row, column) on the original dtypes, so the
result has numpy's dtype and integers wrap exactly as in A @ B.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import List, Optional

import numpy as np
from mpi4py import MPI

from .stats import Stats

TAG_TASK, TAG_RESULT = 2000, 3000
ALIGN = 16
HEADER_FIXED = 4  # count, nrows, ncols, first task


def padded(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class BatchLayout:
    """Byte layout of a batch buffer; identical on every rank."""

    def __init__(self, job, K: int):
        self.K = K
        self.k = job.k
        self.dtype_a, self.dtype_b, self.dtype_c = job.dtype_a, job.dtype_b, job.dtype_c
        self.header_words = HEADER_FIXED + 4 * K
        self.row_stride = padded(job.k * job.dtype_a.itemsize)
        self.col_stride = padded(job.k * job.dtype_b.itemsize)
        self.rows_at = padded(8 * self.header_words)
        self.cols_at = self.rows_at + K * self.row_stride
        self.nbytes = self.cols_at + K * self.col_stride
        self.result_bytes = max(1, K * job.dtype_c.itemsize)

    def length(self, nrows: int, ncols: int) -> int:
        """Bytes actually sent for a batch carrying nrows rows and ncols columns."""
        if ncols:
            return self.cols_at + ncols * self.col_stride
        if nrows:
            return self.rows_at + nrows * self.row_stride
        return 8 * self.header_words

    def views(self, buf: np.ndarray):
        """(header, rows[K, k], cols[K, k]) views into one batch buffer."""
        header = buf[: 8 * self.header_words].view(np.int64)
        rows = np.ndarray((self.K, self.k), self.dtype_a, buffer=buf, offset=self.rows_at,
                          strides=(self.row_stride, self.dtype_a.itemsize))
        cols = np.ndarray((self.K, self.k), self.dtype_b, buffer=buf, offset=self.cols_at,
                          strides=(self.col_stride, self.dtype_b.itemsize))
        return header, rows, cols


def cache_capacity(count: int, nbytes_each: int, K: int, budget: int) -> int:
    """Cache slots: all `count` items if they fit the budget, else at least K+1.

    K+1 slots guarantee that the rows (columns) one batch uses are never
    evicted by that same batch (the LRU victim is older than all of them).
    """
    fit = int(budget) // max(1, nbytes_each)
    return int(min(count, max(K + 1, fit)))


def cache_sizes(job, K: int):
    """(row slots, column slots) of a worker's cache; the same on every rank."""
    budget = job.options.keep_budget_bytes
    return (cache_capacity(job.m, job.k * job.dtype_a.itemsize, K, budget),
            cache_capacity(job.n, job.k * job.dtype_b.itemsize, K, budget))


class CacheMirror:
    """The root's copy of one worker's cache: index -> slot, least recently used first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.where: "OrderedDict[int, int]" = OrderedDict()
        self.free = list(range(capacity - 1, -1, -1))

    def lookup(self, index: int):
        """(slot, must_send)."""
        slot = self.where.get(index)
        if slot is not None:
            self.where.move_to_end(index)
            return slot, False
        slot = self.free.pop() if self.free else self.where.popitem(last=False)[1]
        self.where[index] = slot
        return slot, True


def run(A: Optional[np.ndarray], B: Optional[np.ndarray], job, stats: Stats) -> Optional[np.ndarray]:
    """C = A @ B, one task per entry of C; C on job.root, None elsewhere."""
    # options.DotOptions, checked on the root and the same on every rank.
    K, keep, window = job.options.tasks_per_message, job.options.keep_blocks, job.options.window
    comm = job.comm
    stats.record(tasks_per_message=K, keep_blocks=keep)
    if comm.size == 1:
        return run_alone(A, B, job, stats)
    layout = BatchLayout(job, K)
    with untraced(stats, layout, job, window, keep):
        if comm.rank == job.root:
            return dispatch(A, B, job, stats, layout, keep, window)
        work(job, stats, layout, keep, window)
        return None


@contextmanager
def untraced(stats: Stats, layout: "BatchLayout", job, window: int, keep: bool):
    """Pause tracemalloc around the task loop (see Stats.untraced).

    The task loop makes a few small objects per task, which tracing slows
    down about tenfold (2,000/s instead of 100,000/s).  What this strategy
    allocates inside: C on the root, batch/answer buffers, the keep_blocks
    cache at full size.
    """
    nslots = window * (job.comm.size - 1) if job.comm.rank == job.root else window
    ours = nslots * (layout.nbytes + layout.result_bytes)
    if job.comm.rank == job.root:
        ours += job.m * job.n * job.dtype_c.itemsize
    elif keep:
        rows_cap, cols_cap = cache_sizes(job, layout.K)
        ours += rows_cap * job.k * job.dtype_a.itemsize + cols_cap * job.k * job.dtype_b.itemsize
    with stats.untraced(ours):
        yield


def run_alone(A, B, job, stats: Stats) -> np.ndarray:
    """One rank: the root computes every task itself, one dot product at a time."""
    m, n = job.m, job.n
    C = np.empty((m, n), dtype=job.dtype_c)
    dot = dot_function(job)
    rows = [A[i] for i in range(m)]
    started = time.perf_counter()
    with stats.phase("compute"):
        # Column by column: the column is copied once into a contiguous
        # vector (as a worker would receive it), then each of its m entries
        # of C is its own dot product.
        for j in range(n):
            col = np.ascontiguousarray(B[:, j])
            out = C[:, j]
            for i in range(m):
                out[i] = dot(rows[i], col)
    elapsed = time.perf_counter() - started
    record(stats, tasks=m * n, messages=0, elapsed=elapsed, window=0)
    stats.record(tasks_computed=m * n)
    return C


def record(stats: Stats, tasks: int, messages: int, elapsed: float, window: int, **more) -> None:
    stats.record(tasks=tasks, messages=messages, window=window, dispatch_seconds=round(elapsed, 6),
                 dot_products_per_second=round(tasks / elapsed, 1) if elapsed > 0 else None, **more)


def dot_function(job):
    """The per-task dot product: numpy's matmul semantics, fastest equal call.

    For equal float32/64 or complex dtypes `row.dot(col)` is the same BLAS
    dot product as np.matmul on 1-D operands with less call overhead; every
    other combination (ints, bool, float16, mixed) goes through np.matmul
    itself, so promotion and integer wrap-around are numpy's.
    """
    if job.dtype_a == job.dtype_b and job.dtype_a.kind in "fc" and job.dtype_a.itemsize >= 4:
        return np.ndarray.dot
    return np.matmul


def dispatch(A, B, job, stats: Stats, layout: BatchLayout, keep: bool, window: int) -> np.ndarray:
    comm, root, m, n, K = job.comm, job.root, job.m, job.n, layout.K
    C = np.empty((m, n), dtype=job.dtype_c)
    Cflat = C.reshape(-1)
    total = m * n
    workers = [r for r in range(comm.size) if r != root]
    nslots = len(workers) * window
    bufs = [np.empty(layout.nbytes, dtype=np.uint8) for _ in range(nslots)]
    views = [layout.views(b) for b in bufs]
    results = [np.empty(layout.result_bytes, dtype=np.uint8) for _ in range(nslots)]
    result_views = [r[: K * job.dtype_c.itemsize].view(job.dtype_c) for r in results]
    dest = [workers[idx // window] for idx in range(nslots)]
    firsts = [0] * nslots
    counts = [0] * nslots
    # Persistent requests: a full batch always has the same length (without
    # keep_blocks) and every answer lands in its slot's buffer.
    full_send = [comm.Send_init([bufs[idx], layout.nbytes, MPI.BYTE], dest=dest[idx],
                                tag=TAG_TASK + idx % window) for idx in range(nslots)]
    recv = [comm.Recv_init([results[idx], MPI.BYTE], source=dest[idx], tag=TAG_RESULT + idx % window)
            for idx in range(nslots)]
    waiting: List[MPI.Request] = [MPI.REQUEST_NULL] * nslots  # what Waitany watches
    pending: List[Optional[MPI.Request]] = [None] * nslots   # the slot's send in flight
    stop_reqs: List[MPI.Request] = []
    stopped = [False] * nslots
    if keep:
        rows_cap, cols_cap = cache_sizes(job, K)
        mirrors = {w: (CacheMirror(rows_cap), CacheMirror(cols_cap)) for w in workers}
    counters = {"rows_sent": 0, "cols_sent": 0, "rows_reused": 0, "cols_reused": 0}
    messages = sent_messages = 0
    bytes_out = bytes_in = 0
    next_task = 0
    t_pack = t_wait = t_store = 0.0
    clock = time.perf_counter
    header_bytes = 8 * layout.header_words
    full_bytes = layout.nbytes
    row0 = [v[1][0] for v in views]
    col0 = [v[2][0] for v in views]
    hdr = [v[0] for v in views]
    columns = B.T if B is not None else None  # columns[j] is B[:, j] (a view)

    def send(idx: int) -> None:
        """Pack the next batch into slot idx and send it (or a stop)."""
        nonlocal next_task, messages, sent_messages, bytes_out
        header, rows, cols = views[idx]
        first = next_task
        count = min(K, total - first)
        next_task += count
        w = dest[idx]
        if count == 0:
            header[0] = 0
            stop_reqs.append(comm.Isend([bufs[idx], header_bytes, MPI.BYTE], dest=w,
                                        tag=TAG_TASK + idx % window))
            stopped[idx] = True
            waiting[idx] = MPI.REQUEST_NULL
            pending[idx] = None
            nbytes = header_bytes
        else:
            if not keep:
                if count == 1:
                    i, j = divmod(first, n)
                    row0[idx][...] = A[i]
                    col0[idx][...] = columns[j]
                else:
                    i, j = np.divmod(np.arange(first, first + count), n)
                    rows[:count] = A[i]
                    cols[:count] = columns[j]
                header[0:4] = (count, count, count, first)
                nbytes = layout.length(count, count)
                counters["rows_sent"] += count
                counters["cols_sent"] += count
            else:
                nbytes = pack_kept(header, rows, cols, first, count, mirrors[w], counters)
            if nbytes == full_bytes:
                req = full_send[idx]
                req.Start()
            else:
                req = comm.Isend([bufs[idx], nbytes, MPI.BYTE], dest=w, tag=TAG_TASK + idx % window)
            pending[idx] = req
            firsts[idx], counts[idx] = first, count
            recv[idx].Start()
            waiting[idx] = recv[idx]
        messages += 1
        sent_messages += 1
        bytes_out += nbytes

    def pack_kept(header, rows, cols, first, count, mirror, counters) -> int:
        rmirror, cmirror = mirror
        nrows = ncols = 0
        base = HEADER_FIXED
        for q in range(count):
            i, j = divmod(first + q, n)
            slot, fresh = rmirror.lookup(i)
            header[base + q] = slot
            if fresh:
                rows[nrows] = A[i]
                header[base + 2 * K + nrows] = slot
                nrows += 1
            slot, fresh = cmirror.lookup(j)
            header[base + K + q] = slot
            if fresh:
                cols[ncols] = columns[j]
                header[base + 3 * K + ncols] = slot
                ncols += 1
        header[0:4] = (count, nrows, ncols, first)
        counters["rows_sent"] += nrows
        counters["cols_sent"] += ncols
        counters["rows_reused"] += count - nrows
        counters["cols_reused"] += count - ncols
        return layout.length(nrows, ncols)

    started = clock()
    try:
        for idx in range(nslots):
            send(idx)
        t_pack = clock() - started
        waitany = MPI.Request.Waitany
        live = sum(1 for r in waiting if r != MPI.REQUEST_NULL)
        fast = not keep and K == 1
        # With kept blocks the root's cache mirror must see batches in the
        # order the worker runs them: round-robin over its live slots.  So
        # the root handles each worker's answers in that order too: an
        # answer that completes before its turn is set aside in `early`
        # (Waitany has consumed its completion) until its turn comes.
        turn = [0] * len(workers)
        early = set()
        while live:
            t0 = clock()
            idx = -1
            if early:
                idx = next((e for e in early if e % window == turn[e // window]), -1)
                if idx >= 0:
                    early.discard(idx)
            if idx < 0:
                idx = waitany(waiting)
                if keep and idx % window != turn[idx // window]:
                    early.add(idx)
                    waiting[idx] = MPI.REQUEST_NULL
                    continue
            t1 = clock()
            if counts[idx] == 1:
                Cflat[firsts[idx]] = result_views[idx][0]
            else:
                first, count = firsts[idx], counts[idx]
                Cflat[first:first + count] = result_views[idx][:count]
            messages += 1
            bytes_in += layout.result_bytes
            pending[idx].Wait()
            t2 = clock()
            if fast and next_task < total:
                # The hot path of the benchmark: one task, full-length persistent send.
                first = next_task
                next_task += 1
                i, j = divmod(first, n)
                row0[idx][...] = A[i]
                col0[idx][...] = columns[j]
                hdr[idx][3] = first
                hdr[idx][0] = 1
                full_send[idx].Start()
                recv[idx].Start()
                firsts[idx] = first
                messages += 1
                sent_messages += 1
                bytes_out += full_bytes
            else:
                send(idx)
                if waiting[idx] == MPI.REQUEST_NULL:
                    live -= 1
                if keep and live:
                    # The worker's next slot: the next one not stopped yet.
                    w_index, slot = divmod(idx, window)
                    for step in range(1, window + 1):
                        nxt = (slot + step) % window
                        if not stopped[w_index * window + nxt]:
                            turn[w_index] = nxt
                            break
            t3 = clock()
            t_wait += t1 - t0
            t_store += t2 - t1
            t_pack += t3 - t2
        MPI.Request.Waitall(stop_reqs)
    finally:
        for req in full_send + recv:
            req.Free()
    if fast:
        counters["rows_sent"] = counters["cols_sent"] = total
    elapsed = clock() - started
    stats.add("distribute", t_pack)
    stats.add("compute", t_wait)
    stats.add("gather", t_store)
    stats.sent(bytes_out, messages=sent_messages)
    stats.received(bytes_in)
    record(stats, tasks=total, messages=messages, elapsed=elapsed, window=window,
           tasks_computed=0, **counters)
    if keep:
        stats.record(keep_cache_slots={"rows": rows_cap, "cols": cols_cap})
    return C


def work(job, stats: Stats, layout: BatchLayout, keep: bool, window: int) -> None:
    comm, root, K = job.comm, job.root, layout.K
    bufs = [np.empty(layout.nbytes, dtype=np.uint8) for _ in range(window)]
    views = [layout.views(b) for b in bufs]
    results = [np.zeros(layout.result_bytes, dtype=np.uint8) for _ in range(window)]
    res = [r[: K * job.dtype_c.itemsize].view(job.dtype_c) for r in results]
    if keep:
        rows_cap, cols_cap = cache_sizes(job, K)
        # np.empty does not touch the pages: memory grows with what is kept.
        rows_cache = np.empty((rows_cap, job.k), job.dtype_a)
        cols_cache = np.empty((cols_cap, job.k), job.dtype_b)
    recv = [comm.Recv_init([bufs[s], MPI.BYTE], source=root, tag=TAG_TASK + s) for s in range(window)]
    send = [comm.Send_init([results[s], MPI.BYTE], dest=root, tag=TAG_RESULT + s) for s in range(window)]
    sending = [False] * window
    live = [True] * window
    remaining = window
    dot = dot_function(job)
    row0 = [v[1][0] for v in views]
    col0 = [v[2][0] for v in views]
    clock = time.perf_counter
    tasks = batches = 0
    bytes_in = bytes_out = 0
    t_wait = t_compute = t_send = 0.0
    s = 0
    try:
        for req in recv:
            req.Start()
        while remaining:
            if not live[s]:
                s = (s + 1) % window
                continue
            t0 = clock()
            recv[s].Wait()
            t1 = clock()
            header, rows, cols = views[s]
            count = int(header[0])
            if count == 0:
                live[s] = False
                remaining -= 1
                bytes_in += 8 * layout.header_words
                t_wait += t1 - t0
                s = (s + 1) % window
                continue
            if sending[s]:
                send[s].Wait()
            out = res[s]
            if not keep:
                if count == 1:
                    out[0] = dot(row0[s], col0[s])
                else:
                    for q in range(count):
                        out[q] = dot(rows[q], cols[q])
                nrows = ncols = count
            else:
                nrows, ncols = int(header[1]), int(header[2])
                h = header.tolist()
                base = HEADER_FIXED
                for q in range(nrows):
                    rows_cache[h[base + 2 * K + q]] = rows[q]
                for q in range(ncols):
                    cols_cache[h[base + 3 * K + q]] = cols[q]
                for q in range(count):
                    out[q] = dot(rows_cache[h[base + q]], cols_cache[h[base + K + q]])
            t2 = clock()
            send[s].Start()
            sending[s] = True
            recv[s].Start()
            t3 = clock()
            tasks += count
            batches += 1
            bytes_in += layout.length(nrows, ncols)
            bytes_out += layout.result_bytes
            t_wait += t1 - t0
            t_compute += t2 - t1
            t_send += t3 - t2
            s = (s + 1) % window
        for s in range(window):
            if sending[s]:
                send[s].Wait()
    finally:
        for req in recv + send:
            req.Free()
    stats.add("distribute", t_wait)
    stats.add("compute", t_compute)
    stats.add("gather", t_send)
    stats.sent(bytes_out, messages=batches)
    stats.received(bytes_in)
    stats.record(tasks_computed=tasks)
