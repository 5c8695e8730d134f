"""The machine file: where `calibrate` saves its figures and the model reads them.

    $MPIMAT_CALIBRATION, else $XDG_CONFIG_HOME/mpimat/calibration.json
    (~/.config/mpimat/calibration.json)

Written atomically (fileio.AtomicWriter: temp file, fsync, rename), so a
reader never sees half a file.  Pure: no MPI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from .errors import InputError
from .fileio import AtomicWriter
from .model import Machine


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
    p = Path(path).expanduser() if path else default_path()
    if not p.exists():
        if path:
            raise InputError(f"no calibration file at {p} (run: mpiexec -n 2 python -m mpimat calibrate)")
        return None
    try:
        data = json.loads(p.read_text())
        mach = Machine.from_dict(data["machine"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{p}: not a valid mpimat calibration ({exc}); run calibrate again") from None
    return Machine(**{**mach.as_dict(), "source": f"calibration {p}"})


def load_or_defaults() -> Machine:
    """The saved calibration, or the defaults if there is none or it is unreadable."""
    try:
        return load() or Machine()
    except InputError:
        return Machine(source="defaults (calibration unreadable)")


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
