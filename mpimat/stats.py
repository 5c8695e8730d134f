"""Per-rank measurements: seconds per phase, payload bytes, peak memory, recorded figures.

What each figure means, and who records it, is in report.py.
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc
from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple

from .report import FIELDS, PHASES

_FIELD_NAMES = frozenset(FIELDS)


class Stats:
    """What one rank measured.  `phase` times a named phase (accumulating)."""

    def __init__(self):
        self.phases: Dict[str, float] = {}
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages = 0
        self.current: Optional[str] = None
        self.phase_started = 0.0
        self.extra: Dict[str, object] = {}  # recorded figures (record); read-only elsewhere
        self.traced_floor = 0   # see untraced()
        self.untraced_live = 0
        # The run's picture: (name, start, end, bytes) on this rank's perf_counter,
        # reported relative to `origin` (the CLI sets it after a barrier, so
        # ranks on one machine share it; see report.py "events").
        self.events: List[Tuple[str, float, float, int]] = []
        self.origin = time.perf_counter()

    def phase(self, name: str) -> "Phase":
        """`with stats.phase(name):` times the block into phase `name` (and the timeline)."""
        return Phase(self, name)

    def event(self, name: str, start: float, end: float, nbytes: int = 0) -> None:
        """Record one span (a panel, a wait) for the timeline: a tuple append, nothing more."""
        self.events.append((name, start, end, nbytes))

    def record(self, **figures) -> None:
        """Record named figures for the report; only names report.FIELDS documents."""
        unknown = figures.keys() - _FIELD_NAMES
        if unknown:
            raise KeyError(f"undocumented report field(s) {sorted(unknown)}: add them to report.FIELDS")
        self.extra.update(figures)

    def add(self, name: str, seconds: float) -> None:
        """Book time measured outside `phase()` (e.g. split by hand in a loop)."""
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def reassign(self, seconds: float, source: str, target: str) -> None:
        """Move time measured inside phase `source` to phase `target`."""
        self.add(source, -seconds)
        self.add(target, seconds)

    @contextmanager
    def untraced(self, allocates: int = 0):
        """Pause tracemalloc inside the block, keeping the reported peak an upper bound.

        tracemalloc slows tight Python loops about tenfold (a traceback per
        allocation).  Memory allocated inside the block is not traced, so
        the caller states what its arrays take (`allocates`); afterwards the
        peak is reported as the larger of the peak before and (memory traced
        at the start + allocates + what is traced after the block).
        """
        if not tracemalloc.is_tracing():
            yield
            return
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        try:
            yield
        finally:
            tracemalloc.start()
            self.traced_floor = max(self.traced_floor, peak)
            self.untraced_live += current + allocates
            self.record(tracemalloc_paused=True)

    def sent(self, nbytes: int, messages: int = 1) -> None:
        self.bytes_sent += int(nbytes)
        self.messages += messages

    def received(self, nbytes: int) -> None:
        self.bytes_received += int(nbytes)

    def memory(self) -> Dict[str, int]:
        """Peak resident set and, when tracing, the peak of traced allocations.

        numpy registers its array buffers with tracemalloc, so the traced
        peak is the array memory this rank held at its worst moment,
        without the interpreter's and MPI's own baseline.
        """
        scale = 1 if sys.platform == "darwin" else 1024
        out = {"max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale}
        if tracemalloc.is_tracing():
            peak = self.untraced_live + tracemalloc.get_traced_memory()[1]
            out["peak_traced_bytes"] = max(self.traced_floor, peak)
        return out

    def as_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {
            "phases": {name: round(self.phases.get(name, 0.0), 6) for name in PHASES},
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "messages_sent": self.messages,
        }
        out.update(self.memory())
        out.update(self.extra)
        out["events"] = [[name, round(t0 - self.origin, 6), round(t1 - self.origin, 6), nbytes]
                         for name, t0, t1, nbytes in self.events]
        return out


class Phase:
    """Stats.phase's context manager: a class, not a generator, because a solver's loop of
    small products enters several per call (a generator's context costs ~4x more)."""

    __slots__ = ("stats", "name")

    def __init__(self, stats: Stats, name: str):
        self.stats, self.name = stats, name

    def __enter__(self) -> None:
        self.stats.current, self.stats.phase_started = self.name, time.perf_counter()

    def __exit__(self, *exc) -> None:
        stats = self.stats
        end = time.perf_counter()
        stats.add(self.name, end - stats.phase_started)
        stats.events.append((self.name, stats.phase_started, end, 0))
        stats.current = None
