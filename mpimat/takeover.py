"""Late ranks hand the end of their tile to the root.

Tiles are balanced (partition.py), but the ranks do not start together:
the root holds A and B and computes at once, while every other rank first
waits for its rows and columns and faults in fresh buffers (n=8192 on two
ranks: about 0.5 s).  With a static split the root would then sit idle at
the end, waiting for the last result panels.  It need not: the root holds
all of A and B, so it can compute any panel of C without moving any data.

So, once the root has finished its own tile, it asks every other rank for
work.  A rank answers at its next panel boundary (or at once, if it is
done) with the number of its panels it will still compute itself; the
root computes the rest, straight into C.  A rank gives away only panels of
its tail (PanelPlan cuts a tile's last panel into halves, quarters, ...),
from the end, worth at most 1/P of the work it has left: the share that
lets P equally fast ranks finish together, so that the root, helping P-1
ranks at once, does not become the last one to finish.

Every rank with a non-empty tile takes part, whatever the problem size:
one small message each way, so the protocol runs in every test.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
from mpi4py import MPI

TAG_ASK, TAG_ANSWER = 104, 105

Panel = Tuple[int, int, int, int]


def area(panel: Panel) -> int:
    r0, r1, c0, c1 = panel
    return (r1 - r0) * (c1 - c0)


def handed_over(panels: List[Panel], next_panel: int, tail_start: int, ranks: int) -> int:
    """How many of `panels` a rank keeps when asked before computing panel `next_panel`.

    It gives away a suffix of the tail (indices >= tail_start), as long as
    that suffix is worth at most 1/ranks of the panels it has left.
    """
    budget = sum(area(p) for p in panels[next_panel:]) // max(1, ranks)
    keep, given = len(panels), 0
    while keep - 1 >= max(next_panel, tail_start) and given + area(panels[keep - 1]) <= budget:
        keep -= 1
        given += area(panels[keep])
    return keep


class Offer:
    """A non-root rank's side: answer the root's one question, once."""

    def __init__(self, comm: MPI.Comm, root: int, panels: List[Panel], tail_start: int):
        self.comm, self.root, self.panels, self.tail_start = comm, root, panels, tail_start
        self.count = len(panels)  # panels this rank computes
        self.ask = np.zeros(1, np.int64)
        self.request = comm.Irecv(self.ask, source=root, tag=TAG_ASK)
        self.answered = False

    def keep(self, i: int) -> bool:
        """Called before panel i: False if the root computes panel i."""
        if not self.answered and self.request.Test():
            self.answer(i)
        return i < self.count

    def close(self) -> None:
        """After this rank's last panel: wait for the question, hand over nothing."""
        if not self.answered:
            self.request.Wait()
            self.answer(self.count)

    def answer(self, i: int) -> None:
        self.count = handed_over(self.panels[:self.count], i, self.tail_start, self.comm.size)
        self.comm.Send(np.array([self.count], np.int64), dest=self.root, tag=TAG_ANSWER)
        self.answered = True


class Ask:
    """The root's side: one question to each rank, answers taken as they come."""

    def __init__(self, comm: MPI.Comm, ranks: List[int]):
        self.ranks = ranks
        self.answers = [np.zeros(1, np.int64) for _ in ranks]
        self.sends = [comm.Isend(np.ones(1, np.int64), dest=r, tag=TAG_ASK) for r in ranks]
        self.receives = [comm.Irecv(a, source=r, tag=TAG_ANSWER) for a, r in zip(self.answers, ranks)]

    def __iter__(self):
        """(index into ranks, panels that rank keeps), in the order the answers arrive."""
        for _ in self.ranks:
            i = MPI.Request.Waitany(self.receives)
            yield i, int(self.answers[i][0])
        MPI.Request.Waitall(self.sends)
