"""Leaving nothing behind when a job ends badly (a signal, an abort).

An orderly MPI_Finalize removes MPICH's shared-memory segments
(/dev/shm/mpich_shm_*, about 1-3 MiB per node and job); a job that is
aborted or killed skips it, and the segments stay until reboot.  No MPICH
setting avoids them, but every process of a node maps all of its node's
segments from MPI_Init on, so any one of them can unlink them: the mapping
lives on until the processes end, and nothing new attaches during an abort.
We unlink exactly the segments the ending processes map (read from
/proc/PID/maps), never anything else in /dev/shm.  Ranks killed with
SIGKILL, or while still inside MPI_Init (where no Python handler runs),
cannot, and their node's segments stay.
"""

from __future__ import annotations

import os

SEGMENT_PREFIX = "/dev/shm/mpich_shm_"


def mapped_segments(pid="self") -> set:
    """MPICH shared-memory segment files process `pid` has mapped."""
    found = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
                if path.startswith(SEGMENT_PREFIX):
                    found.add(path.removesuffix(" (deleted)"))
    except OSError:
        pass
    return found


def unlink_segments(paths=None) -> None:
    """Unlink MPICH segments (default: this process's), only when their job is ending abnormally."""
    for path in mapped_segments() if paths is None else paths:
        try:
            os.unlink(path)
        except OSError:  # another rank of the node was first
            pass
