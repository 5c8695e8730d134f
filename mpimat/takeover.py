"""Late ranks hand the end of their tile to the root.

Tiles are balanced (partition.py), but the ranks do not start together:
the root holds A and B and computes at once, while every other rank first
waits for its rows and columns and faults in fresh buffers (n=8192 on two
ranks: about 0.5 s).  With a static split the root would then sit idle at
the end, waiting for the last result panels.  It need not: the root holds
all of A and B, so it can compute any panel of C without moving any data.

So the root asks every other rank for work, and a rank answers at its
next panel boundary (or at once, if it is done) with the number of its
panels it will still compute itself; the root computes the rest, straight
into C.  A rank gives away only panels of its tail (PanelPlan cuts a
tile's last panel into halves, quarters, ...), from the end, worth at most
(R - W) / P, where R is the work it has left and W the root's: the share
that lets P equally fast ranks finish together, so that the root, helping
P-1 ranks at once, does not become the last one to finish.

The root asks twice (once if its own tile is a single panel).  Early,
as it starts its own last panel, telling when it expects to be free, so that the answer is waiting for it when it
is (a rank on the root's machine reads the same monotonic clock; elsewhere
it assumes the root has not started, W = the whole panel, and gives
less).  Then again, once done (W = 0), for whatever is still worth
handing over.  A rank expects exactly `rounds` questions, derived from
the plan on every rank alike.  Every rank with a non-empty tile takes
part, whatever the problem size: a few small messages, so the protocol
runs in every test.
"""

from __future__ import annotations

import socket
import time
import zlib
from typing import List, Optional, Tuple

import numpy as np
from mpi4py import MPI

TAG_ASK, TAG_ANSWER = 104, 105


def clock_id() -> int:
    """Which monotonic clock this process reads: one per boot of a machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:  # Linux
            return zlib.crc32(f.read())
    except OSError:
        return zlib.crc32(socket.gethostname().encode())


CLOCK = clock_id()  # the clock a question's times are read on

Panel = Tuple[int, int, int, int]


def area(panel: Panel) -> int:
    r0, r1, c0, c1 = panel
    return (r1 - r0) * (c1 - c0)


def handed_over(panels: List[Panel], next_panel: int, tail_start: int, ranks: int, root_left: int = 0) -> int:
    """How many of `panels` a rank keeps when asked before computing panel `next_panel`.

    It gives away a suffix of the tail (indices >= tail_start), as long as
    that suffix is worth at most 1/ranks of (the work it has left minus
    `root_left`, the root's own work still to do), in dot products.
    """
    budget = max(0, sum(area(p) for p in panels[next_panel:]) - root_left) // max(1, ranks)
    keep, given = len(panels), 0
    while keep - 1 >= max(next_panel, tail_start) and given + area(panels[keep - 1]) <= budget:
        keep -= 1
        given += area(panels[keep])
    return keep


def root_left(question: np.ndarray, now_ns: int) -> int:
    """The root's own work (dot products) still to do when a rank reads `question` at now_ns.

    question = [sent, free, left, clock]: at `sent` the root had `left` to do
    and expected to be done at `free` (monotonic ns, on the machine whose clock_id is `clock`).
    """
    sent, free, left, clock = (int(x) for x in question)
    if left <= 0:
        return 0
    if clock != CLOCK or free <= sent:
        return left  # no shared clock: assume the worst
    return int(left * min(1.0, max(0.0, (free - now_ns) / (free - sent))))


class Offer:
    """A non-root rank's side: answer each of the root's `rounds` questions once."""

    def __init__(self, comm: MPI.Comm, root: int, panels: List[Panel], tail_start: int, rounds: int):
        self.comm, self.root, self.panels, self.tail_start = comm, root, panels, tail_start
        self.count = len(panels)  # panels this rank computes
        self.rounds = rounds      # questions still to come
        self.question = np.zeros(4, np.int64)
        self.request = comm.Irecv(self.question, source=root, tag=TAG_ASK)

    def keep(self, i: int) -> bool:
        """Called before panel i: False if the root computes panel i."""
        if self.rounds and self.request.Test():
            self.answer(i)
        return i < self.count

    def close(self) -> None:
        """After this rank's last panel: answer what is still to come, handing over nothing."""
        while self.rounds:
            self.request.Wait()
            self.answer(self.count)

    def answer(self, i: int) -> None:
        left = root_left(self.question, time.monotonic_ns())
        self.count = handed_over(self.panels[:self.count], i, self.tail_start, self.comm.size, left)
        self.comm.Send(np.array([self.count], np.int64), dest=self.root, tag=TAG_ANSWER)
        self.rounds -= 1
        if self.rounds:
            self.request = self.comm.Irecv(self.question, source=self.root, tag=TAG_ASK)


class Ask:
    """The root's side: questions to each rank, answers taken as they come."""

    def __init__(self, comm: MPI.Comm, ranks: List[int], counts: List[int], rounds: int):
        self.comm, self.ranks, self.rounds = comm, ranks, rounds
        self.kept = list(counts)      # panels each rank has said it keeps (at first: all)
        self.asked = [0] * len(ranks)
        self.answers = [np.zeros(1, np.int64) for _ in ranks]
        self.receives: List[MPI.Request] = [MPI.REQUEST_NULL] * len(ranks)
        self.sends: List[MPI.Request] = []
        self.idle = 0.0               # seconds spent waiting for answers

    def ask(self, i: int, free_ns: Optional[int] = None, left: int = 0) -> None:
        now = time.monotonic_ns()
        question = np.array([now, now if free_ns is None else free_ns, left, CLOCK], np.int64)
        self.sends.append(self.comm.Isend(question, dest=self.ranks[i], tag=TAG_ASK))
        self.receives[i] = self.comm.Irecv(self.answers[i], source=self.ranks[i], tag=TAG_ANSWER)
        self.asked[i] += 1

    def early(self, free_ns: int, left: int) -> None:
        """The first question, as the root starts its last panel (only when rounds == 2)."""
        for i in range(len(self.ranks)):
            self.ask(i, free_ns, left)

    def __iter__(self):
        """(i, keep, kept before, final) per answer, as they arrive; the root is done.

        After a non-final answer (and after the caller has computed what it
        gave) the rank is asked again.
        """
        for i in range(len(self.ranks)):
            if not self.asked[i]:
                self.ask(i)
        while True:
            started = time.perf_counter()
            i = MPI.Request.Waitany(self.receives)
            self.idle += time.perf_counter() - started
            if i == MPI.UNDEFINED:
                break
            keep, before = int(self.answers[i][0]), self.kept[i]
            self.kept[i] = keep
            final = self.asked[i] == self.rounds
            yield i, keep, before, final
            if not final:
                self.ask(i)
        MPI.Request.Waitall(self.sends)
