"""Reading and writing .npy files, safely.

- Never unpickles: object arrays are refused from the header, before any data.
- Truncated and corrupt files are input errors with a one-line message.
- C or Fortran order, either byte order; the array comes back in native byte
  order (MPI moves raw bytes, and BLAS wants native), cast to `dtype` if asked,
  converting chunk by chunk so the peak stays one array plus one chunk.
- Output is written to a temp file in the target directory and renamed into
  place at the end, so a failed run leaves no file and never damages one.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Tuple

import numpy as np
from numpy.lib import format as npformat

from .errors import InputError
from .operands import check_dtype

CHUNK_BYTES = 64 << 20  # conversion buffer for byte swapping / casting

def read_header(fp, path: str) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    try:
        version = npformat.read_magic(fp)
        # The header is a literal dict, parsed without running code and
        # without unpickling.  Version 3.0 differs from 2.0 only by allowing
        # UTF-8 field names, which only structured dtypes (refused) use.
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npformat.read_array_header_2_0(fp)
        else:
            raise InputError(f"{path}: unsupported .npy format version {version[0]}.{version[1]}")
    except InputError:
        raise
    except Exception as exc:  # numpy raises ValueError for most corruptions
        raise InputError(f"{path}: not a valid .npy file ({one_line(exc)})") from None
    return shape, fortran, dtype


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_npy(path: str, dtype: Optional[np.dtype] = None, what: str = "") -> np.ndarray:
    """Load a 2-D numeric .npy file into native byte order (cast to dtype)."""
    label = what or path
    try:
        fp = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{label}: no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{label}: is a directory: {path}") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
    with fp:
        shape, fortran, file_dtype = read_header(fp, path)
        check_dtype(file_dtype, label)
        if len(shape) != 2:
            raise InputError(f"{label}: expected a 2-D matrix, got {len(shape)}-D shape {shape}")
        target = np.dtype(dtype) if dtype is not None else file_dtype.newbyteorder("=")
        check_dtype(target, label)
        count = shape[0] * shape[1]
        nbytes = count * file_dtype.itemsize
        offset = fp.tell()
        size = os.fstat(fp.fileno()).st_size
        if size - offset < nbytes:
            raise InputError(
                f"{path}: truncated .npy file: header says {shape} {file_dtype} "
                f"({nbytes} bytes) but only {max(size - offset, 0)} bytes follow"
            )
        out = np.empty(shape, dtype=target, order="F" if fortran else "C")
        # The file holds the elements in memory order of `out`: fill its flat
        # view chunk by chunk, converting each chunk from the file's dtype.
        flat = out.reshape(-1, order="F" if fortran else "C")
        per_chunk = max(1, CHUNK_BYTES // max(file_dtype.itemsize, 1))
        same = target == file_dtype
        raw = flat.view(np.uint8) if same else None
        done = 0
        while done < count:
            todo = min(per_chunk, count - done)
            want = todo * file_dtype.itemsize
            if same:
                got = fp.readinto(memoryview(raw[done * file_dtype.itemsize:][:want]))
            else:
                data = fp.read(want)
                got = len(data)
            if got != want:
                raise InputError(f"{path}: truncated .npy file (ended after {done + got // max(file_dtype.itemsize, 1)} of {count} elements)")
            if not same:
                flat[done:done + todo] = np.frombuffer(data, dtype=file_dtype)
            done += todo
    return out


class AtomicWriter:
    """Writes a file atomically: a temp file in the same directory, renamed.

    Constructed at validation time, it checks that the directory exists and
    that a file can be created there (the real test, also for root on a
    read-only mount), then removes its probe: nothing exists on disk until
    `write_npy`/`write_text` runs at the end, so a job killed midway leaves
    nothing behind, and an existing file is replaced only by a complete one.
    """

    def __init__(self, path: str, flag: str = "--out"):
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise InputError(f"{flag} {path}: is a directory")
        if not os.path.isdir(self.directory):
            raise InputError(f"{flag} {path}: directory {self.directory} does not exist")
        try:
            fd, probe = tempfile.mkstemp(prefix=".mpimat-", suffix=".tmp", dir=self.directory)
        except OSError as exc:
            raise InputError(f"{flag} {path}: cannot write in {self.directory}: {exc.strerror or exc}") from None
        os.close(fd)
        os.unlink(probe)

    def _commit(self, write) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".mpimat-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def write_npy(self, array: np.ndarray) -> None:
        self._commit(lambda f: npformat.write_array(f, array, allow_pickle=False))

    def write_text(self, text: str) -> None:
        self._commit(lambda f: f.write(text.encode()))
