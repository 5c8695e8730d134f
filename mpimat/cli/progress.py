"""A one-line phase display on rank 0's terminal (or with --progress)."""

from __future__ import annotations

import sys
import threading
import time

from ..stats import Stats


class Progress:
    """A one-line phase display on rank 0's terminal for runs over half a second."""

    def __init__(self, stats: Stats, enabled: bool):
        self.stats, self.enabled = stats, enabled
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True) if enabled else None
        self.shown = False

    def __enter__(self):
        if self.thread:
            self.thread.start()
        return self

    def loop(self):
        start = time.perf_counter()
        while not self.done.wait(0.25):
            phase = self.stats.current
            if phase and time.perf_counter() - start > 0.5:
                spent = time.perf_counter() - self.stats.phase_started
                sys.stderr.write(f"\rmpimat: {phase:<10} {spent:7.1f} s   ")
                sys.stderr.flush()
                self.shown = True

    def __exit__(self, *exc):
        if self.thread:
            self.done.set()
            self.thread.join()
            if self.shown:
                sys.stderr.write("\r" + " " * 40 + "\r")
                sys.stderr.flush()
