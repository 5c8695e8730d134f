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


def memory_need(job) -> int:
    """Bytes this rank allocates: C on the root; a worker its batch buffers and, with
    keep_blocks, its cache (at most keep_budget_bytes for rows and as much for columns)."""
    if job.comm.rank == job.root:
        return job.m * job.n * job.dtype_c.itemsize
    K, window = job.options.tasks_per_message, job.options.window
    need = window * K * job.k * (job.dtype_a.itemsize + job.dtype_b.itemsize)
    if job.options.keep_blocks:
        need += 2 * job.options.keep_budget_bytes
    return need


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
            return Dispatcher(A, B, job, layout, keep, window).run(stats)
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


class Slot:
    """One batch in flight to one worker: its buffers, requests and tasks.

    Slot s of worker w uses tags TAG_TASK + s / TAG_RESULT + s, so at most
    one batch per slot is in flight and answers land in the slot's buffer.
    """

    __slots__ = ("index", "dest", "tag", "buf", "header", "rows", "cols", "row0", "col0", "result",
                 "answer", "full_send", "recv", "pending", "first", "count", "stopped")

    def __init__(self, comm: MPI.Comm, index: int, dest: int, tag: int, layout: BatchLayout, dtype_c):
        self.index, self.dest, self.tag = index, dest, tag
        self.buf = np.empty(layout.nbytes, dtype=np.uint8)
        self.header, self.rows, self.cols = layout.views(self.buf)
        self.row0, self.col0 = self.rows[0], self.cols[0]
        self.result = np.empty(layout.result_bytes, dtype=np.uint8)
        self.answer = self.result[: layout.K * dtype_c.itemsize].view(dtype_c)
        # Persistent requests: a full batch always has the same length (without
        # keep_blocks) and every answer lands in this slot's buffer.
        self.full_send = comm.Send_init([self.buf, layout.nbytes, MPI.BYTE], dest=dest, tag=TAG_TASK + tag)
        self.recv = comm.Recv_init([self.result, MPI.BYTE], source=dest, tag=TAG_RESULT + tag)
        self.pending: Optional[MPI.Request] = None  # the batch's send in flight
        self.first = self.count = 0
        self.stopped = False

    def free(self) -> None:
        self.full_send.Free()
        self.recv.Free()


class Tally:
    """What the dispatcher counts for the report."""

    def __init__(self):
        self.messages = self.sent_messages = self.bytes_out = self.bytes_in = 0
        self.rows_sent = self.cols_sent = self.rows_reused = self.cols_reused = 0

    def sent(self, nbytes: int) -> None:
        self.messages += 1
        self.sent_messages += 1
        self.bytes_out += nbytes

    def rows_cols(self) -> dict:
        return {"rows_sent": self.rows_sent, "cols_sent": self.cols_sent,
                "rows_reused": self.rows_reused, "cols_reused": self.cols_reused}


class Dispatcher:
    """The root: hands out the m n tasks, K per batch, `window` batches per worker.

    Workers ask for work by answering: each answer frees its slot, which
    gets the next batch (or a stop once the tasks run out).
    """

    def __init__(self, A, B, job, layout: BatchLayout, keep: bool, window: int):
        comm = job.comm
        self.comm, self.A, self.layout, self.keep, self.window = comm, A, layout, keep, window
        self.n, self.total = job.n, job.m * job.n
        self.columns = B.T  # columns[j] is B[:, j] (a view)
        self.C = np.empty((job.m, job.n), dtype=job.dtype_c)
        self.Cflat = self.C.reshape(-1)
        self.workers = [r for r in range(comm.size) if r != job.root]
        self.slots = [Slot(comm, idx, self.workers[idx // window], idx % window, layout, job.dtype_c)
                      for idx in range(len(self.workers) * window)]
        # What Waitany watches: a slot's answer, or REQUEST_NULL once it is stopped.
        self.waiting: List[MPI.Request] = [MPI.REQUEST_NULL] * len(self.slots)
        self.stops: List[MPI.Request] = []
        self.next_task = 0
        self.tally = Tally()
        if keep:
            rows_cap, cols_cap = self.cache_slots = cache_sizes(job, layout.K)
            self.mirrors = {w: (CacheMirror(rows_cap), CacheMirror(cols_cap)) for w in self.workers}

    def send(self, slot: Slot) -> None:
        """Pack the next batch into `slot` and send it (or a stop)."""
        K, layout = self.layout.K, self.layout
        first = self.next_task
        count = min(K, self.total - first)
        self.next_task += count
        if count == 0:
            slot.header[0] = 0
            nbytes = 8 * layout.header_words
            self.stops.append(self.comm.Isend([slot.buf, nbytes, MPI.BYTE], dest=slot.dest,
                                              tag=TAG_TASK + slot.tag))
            slot.stopped, slot.pending = True, None
            self.waiting[slot.index] = MPI.REQUEST_NULL
        else:
            nbytes = self.pack_kept(slot, first, count) if self.keep else self.pack(slot, first, count)
            if nbytes == layout.nbytes:
                req = slot.full_send
                req.Start()
            else:
                req = self.comm.Isend([slot.buf, nbytes, MPI.BYTE], dest=slot.dest, tag=TAG_TASK + slot.tag)
            slot.pending, slot.first, slot.count = req, first, count
            slot.recv.Start()
            self.waiting[slot.index] = slot.recv
        self.tally.sent(nbytes)

    def pack(self, slot: Slot, first: int, count: int) -> int:
        """Rows and columns of `count` consecutive tasks; returns the batch's length."""
        A, columns = self.A, self.columns
        if count == 1:
            i, j = divmod(first, self.n)
            slot.row0[...] = A[i]
            slot.col0[...] = columns[j]
        else:
            i, j = np.divmod(np.arange(first, first + count), self.n)
            slot.rows[:count] = A[i]
            slot.cols[:count] = columns[j]
        slot.header[0:4] = (count, count, count, first)
        self.tally.rows_sent += count
        self.tally.cols_sent += count
        return self.layout.length(count, count)

    def pack_kept(self, slot: Slot, first: int, count: int) -> int:
        """Like pack, but only the rows and columns the worker's cache lacks."""
        K, header, tally = self.layout.K, slot.header, self.tally
        rmirror, cmirror = self.mirrors[slot.dest]
        nrows = ncols = 0
        base = HEADER_FIXED
        for q in range(count):
            i, j = divmod(first + q, self.n)
            where, fresh = rmirror.lookup(i)
            header[base + q] = where
            if fresh:
                slot.rows[nrows] = self.A[i]
                header[base + 2 * K + nrows] = where
                nrows += 1
            where, fresh = cmirror.lookup(j)
            header[base + K + q] = where
            if fresh:
                slot.cols[ncols] = self.columns[j]
                header[base + 3 * K + ncols] = where
                ncols += 1
        header[0:4] = (count, nrows, ncols, first)
        tally.rows_sent += nrows
        tally.cols_sent += ncols
        tally.rows_reused += count - nrows
        tally.cols_reused += count - ncols
        return self.layout.length(nrows, ncols)

    def store(self, slot: Slot) -> None:
        """The answers of `slot`'s batch into C; its send is done by now."""
        if slot.count == 1:
            self.Cflat[slot.first] = slot.answer[0]
        else:
            self.Cflat[slot.first:slot.first + slot.count] = slot.answer[:slot.count]
        slot.pending.Wait()

    def answered(self):
        """Slots in the order their answers are to be handled (see below)."""
        waitany, waiting, slots, window = MPI.Request.Waitany, self.waiting, self.slots, self.window
        if not self.keep:
            while True:
                idx = waitany(waiting)
                if idx == MPI.UNDEFINED:
                    return
                yield slots[idx]
        # With kept blocks the root's cache mirror must see batches in the
        # order the worker runs them: round-robin over its live slots.  So
        # the root handles each worker's answers in that order too: an
        # answer that completes before its turn is set aside in `early`
        # (Waitany has consumed its completion) until its turn comes.
        turn = [0] * len(self.workers)
        early = set()
        while True:
            idx = next((e for e in early if e % window == turn[e // window]), -1)
            if idx >= 0:
                early.discard(idx)
            else:
                idx = waitany(waiting)
                if idx == MPI.UNDEFINED:
                    return
                if idx % window != turn[idx // window]:
                    early.add(idx)
                    waiting[idx] = MPI.REQUEST_NULL
                    continue
            yield slots[idx]
            # The worker's next slot: the next one not stopped yet.
            w_index, s = divmod(idx, window)
            for step in range(1, window + 1):
                nxt = (s + step) % window
                if not slots[w_index * window + nxt].stopped:
                    turn[w_index] = nxt
                    break

    def run(self, stats: Stats) -> np.ndarray:
        clock = time.perf_counter
        started = clock()
        t_wait = t_store = 0.0
        try:
            for slot in self.slots:
                self.send(slot)
            t_pack = clock() - started
            fast = not self.keep and self.layout.K == 1
            A, columns, n, total = self.A, self.columns, self.n, self.total
            answers = quick = 0  # counted here, not per call: this loop is the benchmark's hot path
            t0 = clock()
            for slot in self.answered():
                t1 = clock()
                self.store(slot)
                answers += 1
                t2 = clock()
                if fast and self.next_task < total:
                    # One task, full-length persistent send.
                    first = self.next_task
                    self.next_task = first + 1
                    i, j = divmod(first, n)
                    slot.row0[...] = A[i]
                    slot.col0[...] = columns[j]
                    header = slot.header
                    header[3] = first
                    header[0] = 1
                    slot.full_send.Start()
                    slot.recv.Start()
                    slot.first = first
                    quick += 1
                else:
                    self.send(slot)
                t3 = clock()
                t_wait += t1 - t0
                t_store += t2 - t1
                t_pack += t3 - t2
                t0 = t3
            MPI.Request.Waitall(self.stops)
        finally:
            for slot in self.slots:
                slot.free()
        tally = self.tally
        tally.messages += answers + quick
        tally.sent_messages += quick
        tally.bytes_out += quick * self.layout.nbytes
        tally.bytes_in += answers * self.layout.result_bytes
        if fast:
            tally.rows_sent = tally.cols_sent = total
        elapsed = clock() - started
        stats.add("distribute", t_pack)
        stats.add("compute", t_wait)
        stats.add("gather", t_store)
        stats.sent(tally.bytes_out, messages=tally.sent_messages)
        stats.received(tally.bytes_in)
        record(stats, tasks=total, messages=tally.messages, elapsed=elapsed, window=self.window,
               tasks_computed=0, **tally.rows_cols())
        if self.keep:
            stats.record(keep_cache_slots={"rows": self.cache_slots[0], "cols": self.cache_slots[1]})
        return self.C


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
