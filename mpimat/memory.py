"""How much memory this process may still use, and how to say that it is not enough.

A product that does not fit must be refused before anything is allocated:
numpy's allocation may succeed (overcommit) and the OOM killer end the job
later, or fail with a MemoryError traceback.  What a process may use is the
least of:
- MemAvailable (/proc/meminfo): what the kernel can hand out without swapping;
- its cgroup's memory.max minus memory.current (Slurm, containers);
- RLIMIT_AS minus the address space it already maps (`ulimit -v`, prlimit).
Pure: no MPI.
"""

from __future__ import annotations

import resource
from typing import Optional, Tuple

UNLIMITED = float("inf")


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def mem_available() -> float:
    text = _read("/proc/meminfo")
    if text:
        for line in text.splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return UNLIMITED


def cgroup_room() -> float:
    """memory.max - memory.current of this process's cgroup (v2), or of v1's limit."""
    text = _read("/proc/self/cgroup")
    if not text:
        return UNLIMITED
    for line in text.splitlines():
        hierarchy, _, path = line.partition("::")
        if hierarchy == "0" and path:  # cgroup v2: "0::/path"
            base = "/sys/fs/cgroup" + path.rstrip("/")
            limit, used = _read(base + "/memory.max"), _read(base + "/memory.current")
            if limit and used and limit.strip() != "max":
                return max(0, int(limit) - int(used))
            return UNLIMITED
    limit = _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    used = _read("/sys/fs/cgroup/memory/memory.usage_in_bytes")
    if limit and used and int(limit) < 1 << 60:
        return max(0, int(limit) - int(used))
    return UNLIMITED


def address_space_room() -> float:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED
    text = _read("/proc/self/status") or ""
    mapped = 0
    for line in text.splitlines():
        if line.startswith("VmSize:"):
            mapped = int(line.split()[1]) * 1024
    return max(0, soft - mapped)


def available() -> Tuple[float, str]:
    """(bytes this process may still allocate, which limit that is)."""
    limits = [(mem_available(), "MemAvailable"), (cgroup_room(), "cgroup memory.max"),
              (address_space_room(), "RLIMIT_AS")]
    return min(limits, key=lambda x: x[0])


def fmt(nbytes: float) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


def shortfall(need: int, what: str) -> Optional[str]:
    """A one-line complaint if `need` bytes do not fit in what this process may use, else None."""
    room, limit = available()
    if need <= room:
        return None
    return f"{what} needs {fmt(need)} but this process may use only {fmt(room)} ({limit})"
