"""The CPU a benchmark ran on, for its printout (the machines change between sessions)."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """/proc/cpuinfo's model name with its family and model (one "AMD EPYC" name covers
    several generations), else what platform knows."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name
