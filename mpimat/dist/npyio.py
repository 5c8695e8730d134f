"""Parallel .npy I/O with MPI-IO: every rank reads or writes only its block.

Reading: the root opens the file, parses and checks the header
(fileio.read_header: versions 1.0/2.0/3.0, C or Fortran order, either byte
order, never unpickled; 2-D, a supported dtype, not truncated) and
broadcasts it (control.agree: bad input raises the same InputError on every
rank, nothing hangs).  Every rank then reads its block collectively
(Read_all) through a subarray file view starting at the data offset, and
byte-swaps or casts it to native order afterwards.  Blocks keep the file's
memory order.  When every rank shares one node, the read is independent
(ROMIO hint romio_cb_read=disable): collective buffering would funnel the
whole file through one aggregator rank, which then sends each rank its
pieces, while each rank reading its own block through the shared page cache
is faster for every grid measured (scripts/bench_io.py, 1 GiB, cold
cache: 1.79x for column blocks on 2 ranks, 2.05x for row blocks, 3.33x for
2x2 blocks on 4 ranks, 1.30x for 4x1).  Across nodes ROMIO's default stays:
there, independent strided reads can cost far more than the aggregation.

Writing: the root writes the header (numpy pads it so the data starts at a
multiple of 64 bytes) into a fresh temp file in the target directory
(a new unique name: MPI's MODE_CREATE would not truncate an old file); every
rank writes its block collectively (Write_all through a subarray view); the
file is closed; only when every rank reports success does the root fsync it
and rename it over the target.  On one node the writes are independent too
(romio_cb_write=disable), and without data sieving (romio_ds_write=disable:
a strided block goes out piece by piece instead of as read-modify-writes of
whole extents under file locks).  scripts/bench_io.py, 1 GiB, fsync
included, medians of 3: 1.32x for column blocks on 2 ranks, 1.73x for 2x2
blocks on 4 ranks; row blocks, one contiguous extent per rank, at parity
(1.02x on 2 ranks, 0.95x for 4x1, within the runs' spread).  Any failure
removes the temp file and leaves an existing target untouched.

Counts: ROMIO's file calls assert count <= INT_MAX, so the unit of every
read and write is one row (C order) or column (Fortran order) of the block,
and the count is the number of rows or columns.
"""

from __future__ import annotations

import fcntl
import io
import os
import tempfile
from typing import Optional

import numpy as np
from mpi4py import MPI
from numpy.lib import format as npformat

from ..control import agree, gather_json, ranks_on_node
from ..errors import InputError
from .. import fileio
from ..fileio import one_line, read_header
from ..operands import check_dtype
from .layout import BlockLayout, as_grid, default_grid
from .matrix import DistMatrix, Types, check_root, raw


# The temp file of an unfinished save_npy has a name (every rank opens it),
# so it is registered with fileio, whose remove_temp_files() the CLI's
# signal and abort paths call, and which runs at exit: a job killed midway
# leaves no partial file behind (except by kill -9 of the root).


def _inspect(path: str, dtype, comm_size: int, grid) -> dict:
    """The root's checks of a file to read; the plan every rank follows."""
    try:
        fp = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fp:
        shape, fortran, file_dtype = read_header(fp, path)
        check_dtype(file_dtype, path)
        if len(shape) != 2:
            raise InputError(f"{path}: expected a 2-D matrix, got {len(shape)}-D shape {shape}")
        offset = fp.tell()
        size = os.fstat(fp.fileno()).st_size
    nbytes = shape[0] * shape[1] * file_dtype.itemsize
    if size - offset < nbytes:
        raise InputError(f"{path}: truncated .npy file: header says {shape} {file_dtype} "
                         f"({nbytes} bytes) but only {max(size - offset, 0)} bytes follow")
    target = file_dtype.newbyteorder("=") if dtype is None else np.dtype(dtype)
    check_dtype(target, "dtype=")
    g = default_grid(comm_size) if grid is None else as_grid(grid, comm_size)
    return {"shape": list(shape), "fortran": bool(fortran), "file_dtype": file_dtype.str,
            "dtype": target.str, "offset": offset, "grid": [g.rows, g.cols]}


def _view(fh: MPI.File, types: Types, offset: int, layout: BlockLayout, rank: int, order: str):
    """Set this rank's file view; return (unit datatype, count) for its block."""
    b = layout.block_of(rank)
    if b.empty:
        fh.Set_view(offset, types.element, types.element)
        return types.element, 0
    filetype = types.region(layout.shape, *b.shape, (b.row0, b.col0), order)
    fh.Set_view(offset, types.element, filetype)
    rows, cols = b.shape
    unit = types.keep(types.element.Create_contiguous(cols if order == "C" else rows))
    return unit, rows if order == "C" else cols


def _agree_ok(comm: MPI.Comm, error: Optional[str], root: int) -> None:
    """Raise the first rank's error on every rank if any rank failed."""
    errors = gather_json(comm, error, root)

    def decide():
        bad = [(r, e) for r, e in enumerate(errors) if e]
        if bad:
            rank, message = bad[0]
            raise InputError(message if rank == root else f"rank {rank}: {message}")
        return True

    agree(comm, root, decide if comm.rank == root else None)


# ROMIO hints for a file every rank of the communicator opens from one node (see the module's doc).
ONE_NODE_HINTS = {
    "read": {"romio_cb_read": "disable"},
    # Strided pieces written as they are: no read-modify-write of whole
    # extents under file locks (data sieving) either.
    "write": {"romio_cb_write": "disable", "romio_ds_write": "disable"},
}


def _hints(comm: MPI.Comm, op: str) -> MPI.Info:
    """Independent I/O (op "read" or "write") when every rank of `comm` shares one node;
    ROMIO's defaults (INFO_NULL) across nodes.  The caller frees what is not INFO_NULL."""
    if ranks_on_node(comm) != comm.size:
        return MPI.INFO_NULL
    info = MPI.Info.Create()
    for key, value in ONE_NODE_HINTS[op].items():
        info.Set(key, value)
    return info


def _open(comm: MPI.Comm, path: str, amode: int, op: str) -> MPI.File:
    """MPI.File.Open with the hints for `op` (collective)."""
    info = _hints(comm, op)
    try:
        return MPI.File.Open(comm, path, amode, info)
    finally:
        if info != MPI.INFO_NULL:
            info.Free()


def load_npy(path: str, comm: MPI.Comm, root: int = 0, grid=None, dtype=None) -> DistMatrix:
    """Read a 2-D .npy file into blocks; each rank reads only its own block.

    dtype: cast to it after reading (default: the file's, in native byte
    order).  grid: as for dist.matmul (default: near-square).
    """
    check_root(comm, root)
    path = os.fspath(path)
    work = comm.Dup()
    try:
        plan = agree(work, root, (lambda: _inspect(path, dtype, work.size, grid)) if work.rank == root else None)
        shape = tuple(plan["shape"])
        order = "F" if plan["fortran"] else "C"
        file_dtype = np.dtype(plan["file_dtype"])
        layout = BlockLayout(shape, as_grid(plan["grid"], work.size))
        local = np.empty(layout.block_of(work.rank).shape, dtype=file_dtype.newbyteorder("="), order=order)
        types = Types(file_dtype.itemsize)
        error = None
        fh = None
        try:
            fh = _open(work, path, MPI.MODE_RDONLY, "read")
            unit, count = _view(fh, types, plan["offset"], layout, work.rank, order)
            fh.Read_all([raw(local), count, unit])
        except MPI.Exception as exc:
            error = f"{path}: MPI-IO read failed: {one_line(exc)}"
        finally:
            if fh is not None:
                fh.Close()
            types.free()
        _agree_ok(work, error, root)
    finally:
        work.Free()
    if not file_dtype.isnative:
        local.byteswap(inplace=True)  # the bytes were the file's; now the values are native
    target = np.dtype(plan["dtype"])
    if target != local.dtype:
        local = local.astype(target, order=order)
    return DistMatrix(local, layout, comm, order)


def _header(X: DistMatrix) -> bytes:
    d = {"descr": npformat.dtype_to_descr(X.dtype), "fortran_order": X.order == "F", "shape": tuple(X.shape)}
    buf = io.BytesIO()
    try:
        npformat.write_array_header_1_0(buf, d)
    except ValueError:  # header longer than 1.0 allows
        buf = io.BytesIO()
        npformat.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _prepare(path: str, X: DistMatrix) -> dict:
    """The root's part before any data: checks, temp file, header."""
    if os.path.isdir(path):
        raise InputError(f"path={path}: is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"path={path}: directory {directory} does not exist")
    header = _header(X)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mpimat-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InputError(f"path={path}: cannot write in {directory}: {exc.strerror or exc}") from None
    fileio.named_temp(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.flush()
            # MPI-IO on a file system that needs locks (NFS) fails if they do
            # not work: say so now instead of failing inside the collective.
            try:
                fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(f.fileno(), fcntl.LOCK_UN)
            except OSError as exc:
                raise InputError(f"path={path}: the file system of {directory} does not support file "
                                 f"locks, which MPI-IO needs (NFS without lockd?): {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise
    return {"tmp": tmp, "offset": len(header)}


def _remove(path: str) -> None:
    fileio.forget_temp(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_all(fh: MPI.File, buf) -> None:
    fh.Write_all(buf)


def _commit(tmp: str, path: str) -> None:
    """fsync and rename into place (root only); remove the temp file on failure."""
    try:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        fileio.forget_temp(tmp)
    except OSError as exc:
        _remove(tmp)
        raise InputError(f"path={path}: cannot write: {exc.strerror or exc}") from None


def save_npy(path: str, X: DistMatrix, root: int = 0) -> None:
    """Write X as one .npy file, collectively and atomically.

    The file appears, complete, only if every rank wrote its block; any
    failure raises the same InputError on every rank, removes the temp file
    and leaves an existing file at `path` as it was.
    """
    tmp = write_npy(path, X, root)
    work = X.comm.Dup()
    try:
        agree(work, root, (lambda: commit_npy(tmp, os.fspath(path)) or True) if work.rank == root else None)
    finally:
        work.Free()


def write_npy(path: str, X: DistMatrix, root: int = 0) -> Optional[str]:
    """The writing half of save_npy: X, complete, in a temp file beside `path`.

    Returns the temp file's path on the root (None elsewhere); the caller
    puts it in place with commit_npy (root) once everything else has
    succeeded, or drops it with discard_npy.  A failure raises the same
    InputError on every rank and removes the temp file.
    """
    if not isinstance(X, DistMatrix):
        raise TypeError(f"X must be a DistMatrix, got {type(X).__name__}")
    check_root(X.comm, root)
    path = os.fspath(path)
    work = X.comm.Dup()
    try:
        plan = agree(work, root, (lambda: _prepare(path, X)) if work.rank == root else None)
        tmp = plan["tmp"]
        local = X.local
        if not (local.flags.f_contiguous if X.order == "F" else local.flags.c_contiguous):
            local = np.array(local, order=X.order)  # every rank must reach Write_all
        types = Types(X.dtype.itemsize)
        error = None
        fh = None
        try:
            try:
                fh = _open(work, tmp, MPI.MODE_WRONLY, "write")
                unit, count = _view(fh, types, plan["offset"], X.layout, work.rank, X.order)
                _write_all(fh, [raw(local), count, unit])
            except Exception as exc:  # reported below, collectively
                error = f"path={path}: write failed: {one_line(exc)}"
            finally:
                if fh is not None:
                    fh.Close()
                types.free()
        finally:
            errors = gather_json(work, error, root)

        def decide():
            bad = [(r, e) for r, e in enumerate(errors) if e]
            if bad:
                _remove(tmp)
                rank, message = bad[0]
                raise InputError(message if rank == root else f"rank {rank}: {message}")
            return True

        agree(work, root, decide if work.rank == root else None)
        return tmp if work.rank == root else None
    finally:
        work.Free()


def commit_npy(tmp: str, path: str) -> None:
    """Root: fsync the written temp file and rename it over `path` (InputError on failure)."""
    _commit(tmp, path)


def discard_npy(tmp: Optional[str]) -> None:
    """Root: drop a written temp file instead of committing it."""
    if tmp:
        _remove(tmp)
