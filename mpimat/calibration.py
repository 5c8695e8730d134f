"""The machine file: where `calibrate` saves its figures and the model reads them.

    $MPIMAT_CALIBRATION, else $XDG_CONFIG_HOME/mpimat/calibration.json
    (~/.config/mpimat/calibration.json)

Written atomically (fileio.AtomicWriter: temp file, fsync, rename), so a
reader never sees half a file.  Pure: no MPI.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Dict, Optional, Tuple

from .errors import InputError
from .fileio import AtomicWriter, open_regular
from .model import Machine

MAX_FILE_BYTES = 1 << 20  # a calibration is a few hundred bytes; never read without bound
# Rates must be positive; times may be zero (0 means "use beta" for the dispatch costs).
POSITIVE = {"bandwidth", "gflops", "gflops_noblas", "dot_gflops", "bandwidth_intra"}
# Figures a file may leave null (or out: files from before two-level calibration):
# the intra-node link then defaults to latency / bandwidth, one level.
OPTIONAL = {"latency_intra", "bandwidth_intra"}
COUNTS = {"cores", "ranks_per_node"}


def default_path() -> Path:
    env = os.environ.get("MPIMAT_CALIBRATION")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mpimat" / "calibration.json"


def load(path: Optional[str] = None) -> Optional[Machine]:
    """The saved calibration, or None when there is none (InputError if unreadable).

    path: a file to read (it must exist); default: default_path(), which may not.
    """
    found = document(path)
    if found is None:
        return None
    p, data = found
    return Machine(**{**Machine.from_dict(data["machine"]).as_dict(), "source": f"calibration {p}"})


def kernel_table(path: Optional[str] = None) -> Dict[str, str]:
    """calibrate's faster local kernel per dtype ({"float64": "numpy", ...}); {} if none was measured."""
    found = document(path)
    return dict(found[1].get("kernels") or {}) if found else {}


def document(path: Optional[str] = None) -> Optional[Tuple[Path, dict]]:
    """(path, the checked calibration document), or None when there is none."""
    p = Path(path).expanduser() if path else default_path()
    if not os.path.lexists(p):
        if path:
            raise InputError(f"no calibration file at {p} (run: mpiexec -n 2 python -m mpimat calibrate)")
        return None
    with open_regular(str(p), "calibration") as f:
        text = f.read(MAX_FILE_BYTES + 1)
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"{p}: not a valid mpimat calibration (larger than {MAX_FILE_BYTES} bytes)")
    try:
        data = json.loads(text)
        machine = data["machine"]
        if not isinstance(machine, dict):
            raise TypeError(f"'machine' is a {type(machine).__name__}, not an object")
        check_figures(machine)
        kernels = data.get("kernels") or {}
        if not isinstance(kernels, dict) or not all(v in ("numpy", "torch") for v in kernels.values()):
            raise ValueError(f"'kernels' must map dtypes to 'numpy' or 'torch', not {kernels!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{p}: not a valid mpimat calibration ({exc}); run calibrate again") from None
    return p, data


def check_figures(machine: dict) -> None:
    """Every known figure a finite number, rates positive, times not negative, counts counts."""
    for f in fields(Machine):
        if f.name == "source" or f.name not in machine:
            continue
        value = machine[f.name]
        if f.name in COUNTS:
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{f.name} must be a whole number of at least 1 or null, not {value!r}")
            continue
        if f.name in OPTIONAL and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, not {value!r}")
        if f.name in POSITIVE and value <= 0:
            raise ValueError(f"{f.name} must be positive, not {value!r}")
        if value < 0:
            raise ValueError(f"{f.name} must not be negative, not {value!r}")


def load_or_defaults() -> Machine:
    """The saved calibration, or the defaults if there is none (InputError if it is unusable)."""
    return load() or Machine()


def save(path: Path, document: dict) -> None:
    """Write the calibration document (its "machine" entry is what load() reads)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = AtomicWriter(str(path), "calibration")
        writer.write_text(json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"cannot save the calibration to {path}: {exc.strerror or exc}") from None
    except InputError as exc:
        raise InputError(f"cannot save the calibration to {path}: {exc}") from None
