"""Reading and writing .npy files, safely.

- Never unpickles: object arrays are refused from the header, before any data.
- Truncated and corrupt files are input errors with a one-line message.
- C or Fortran order, either byte order; the array comes back in native byte
  order (MPI moves raw bytes, and BLAS wants native), cast to `dtype` if asked,
  converting chunk by chunk so the peak stays one array plus one chunk.
- Only regular files are read (a FIFO would block forever, a device never
  end), and the header's every field is checked before anything is allocated.
- Output goes to an unnamed file in the target directory (O_TMPFILE), which
  the kernel removes if the process dies, even by kill -9, and is linked into
  place only at the end (fallback where the file system has no O_TMPFILE: a
  named temp file, removed on failure and on SIGTERM/SIGINT/SIGHUP).  A failed
  run leaves no file and never damages an existing one.
"""

from __future__ import annotations

import atexit
import errno
import os
import stat
import tempfile
from typing import Callable, Optional, Set, Tuple

import numpy as np
from numpy.lib import format as npformat

from . import memory, tempguard
from .errors import InputError
from .operands import check_dtype

CHUNK_BYTES = 64 << 20  # conversion buffer for byte swapping / casting
MAX_BYTES = 1 << 62  # no file, array or message is larger; keeps size arithmetic exact


class OutputError(Exception):
    """Writing an output failed late (disk full, I/O error): one line, exit 1, no partial file."""


def printable(text: str) -> str:
    """`text` with control characters escaped, so a message stays on one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def open_regular(path: str, label: str, mode: str = "rb"):
    """Open an existing regular file for reading, or raise InputError.

    The type is checked before opening: opening a FIFO blocks until a
    writer appears, and a device (/dev/zero) never ends.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{label}: no such file: {path}") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{label}: is a directory: {path}")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{label}: not a regular file ({kind_of(info.st_mode)}): {path}")
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, do not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InputError(f"{label}: not a regular file: {path}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except IsADirectoryError:
        raise InputError(f"{label}: is a directory: {path}") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None


def kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def check_header(shape, fortran, dtype: np.dtype, path: str) -> None:
    """Every field of a parsed header: a tuple of non-negative ints (not bools) of a size that fits."""
    if not isinstance(shape, tuple) or not all(type(d) is int for d in shape):
        raise InputError(f"{path}: not a valid .npy file (shape {shape!r} is not a tuple of integers)")
    if any(d < 0 for d in shape):
        raise InputError(f"{path}: not a valid .npy file (negative dimension in shape {shape})")
    if type(fortran) is not bool:
        raise InputError(f"{path}: not a valid .npy file (fortran_order {fortran!r} is not True or False)")
    count = 1
    for d in shape:
        count *= d
    if count * max(dtype.itemsize, 1) > MAX_BYTES:
        raise InputError(f"{path}: not a valid .npy file (shape {shape} of {dtype} is larger than any memory)")

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
    check_header(shape, fortran, dtype, path)
    return shape, fortran, dtype


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_npy(path: str, dtype: Optional[np.dtype] = None, what: str = "") -> np.ndarray:
    """Load a numeric vector or matrix (.npy, 1-D or 2-D) into native byte order (cast to dtype)."""
    label = what or path
    fp = open_regular(path, label)
    with fp:
        shape, fortran, file_dtype = read_header(fp, path)
        check_dtype(file_dtype, label)
        if len(shape) not in (1, 2):
            raise InputError(f"{label}: expected a 1-D vector or a 2-D matrix, got {len(shape)}-D shape {shape}")
        target = np.dtype(dtype) if dtype is not None else file_dtype.newbyteorder("=")
        check_dtype(target, label)
        count = int(np.prod(shape))
        nbytes = count * file_dtype.itemsize
        offset = fp.tell()
        size = os.fstat(fp.fileno()).st_size
        if size - offset < nbytes:
            raise InputError(
                f"{path}: truncated .npy file: header says {shape} {file_dtype} "
                f"({nbytes} bytes) but only {max(size - offset, 0)} bytes follow"
            )
        short = memory.shortfall(count * target.itemsize, f"{label} ({'x'.join(map(str, shape))} {target})")
        if short:
            raise InputError(short)
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


def npy_bytes(shape, dtype) -> int:
    """Size of the .npy file of an array of this shape and dtype (header of at most 4 KiB)."""
    count = 1
    for d in shape:
        count *= d
    return count * np.dtype(dtype).itemsize + 4096


# Named temp files that exist right now (the fallback path): removed on a fatal signal.
_NAMED: Set[str] = set()


def named_temp(path: str) -> None:
    """Register a named temp file that must not outlive a failed run.

    remove_temp_files() removes it on a signal, an abort or at exit; a guard
    process (tempguard.py) removes it should this process be killed outright.
    """
    _NAMED.add(path)
    tempguard.watch(path)


def forget_temp(path: str) -> None:
    """The temp file was renamed into place or removed: nothing to clean up any more."""
    if path in _NAMED:
        _NAMED.discard(path)
        tempguard.forget(path)


def remove_temp_files() -> None:
    """Remove every named temp file this process has open (signal handlers and exit call this)."""
    for path in list(_NAMED):
        try:
            os.unlink(path)
        except OSError:
            pass
        _NAMED.discard(path)


atexit.register(remove_temp_files)


def check_output(path: str, flag: str) -> str:
    """Refuse at validation an output path that is not, or cannot become, a regular file."""
    if not path:
        raise InputError(f"{flag}: empty path")
    if path.endswith(os.sep) or path.endswith("/."):
        raise InputError(f"{flag} {path}: names a directory (trailing slash)")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise InputError(f"{flag} {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{flag} {path}: is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{flag} {path}: is {kind_of(info.st_mode)}, not a regular file: refusing to replace it")
    return path


def same_file(a: str, b: str) -> bool:
    """True if paths a and b name the same file (also through symlinks or hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


_AT_FDCWD, _AT_SYMLINK_FOLLOW = -100, 0x400


def link_fd(fd: int, path: str) -> None:
    """Give the (O_TMPFILE) file open as `fd` the name `path`.

    linkat(2) of /proc/self/fd/N with AT_SYMLINK_FOLLOW, as open(2)
    documents for O_TMPFILE (os.link does not follow the /proc link: EXDEV).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(_AT_FDCWD, f"/proc/self/fd/{fd}".encode(), _AT_FDCWD, os.fsencode(path),
                   _AT_SYMLINK_FOLLOW) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)


class AtomicWriter:
    """Writes a file atomically: all of it or nothing, an existing file replaced only by a complete one.

    Constructed at validation time, it checks the path (check_output), that
    the directory exists and that a file can be created there (the real
    test, also for root on a read-only mount), then removes its probe.
    `prepare_npy`/`prepare_text` write and fsync the content into an unnamed
    file (O_TMPFILE: it vanishes if the process dies); `commit()` links it
    into place (a hard link under a temp name, then rename over the target);
    `discard()` drops it.  `write_npy`/`write_text` do both steps at once.
    """

    def __init__(self, path: str, flag: str = "--out"):
        self.path, self.flag = check_output(path, flag), flag
        self.directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(self.directory):
            raise InputError(f"{flag} {path}: directory {self.directory} does not exist")
        try:
            fd, probe = tempfile.mkstemp(prefix=".mpimat-", suffix=".tmp", dir=self.directory)
        except OSError as exc:
            raise InputError(f"{flag} {path}: cannot write in {self.directory}: {exc.strerror or exc}") from None
        os.close(fd)
        os.unlink(probe)
        self.fd: Optional[int] = None
        self.named: Optional[str] = None  # the fallback's temp file

    def check_space(self, nbytes: int) -> None:
        """Refuse (InputError) when the file system has less than `nbytes` free for us."""
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return
        free = st.f_bavail * st.f_frsize
        if nbytes > free:
            raise InputError(f"{self.flag} {self.path}: needs {memory.fmt(nbytes)} but only "
                             f"{memory.fmt(free)} is free in {self.directory}")

    def _open(self) -> int:
        flags = getattr(os, "O_TMPFILE", 0)
        if flags:
            try:
                return os.open(self.directory, flags | os.O_WRONLY, 0o666)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    raise
        fd, self.named = tempfile.mkstemp(prefix=".mpimat-", suffix=".tmp", dir=self.directory)
        named_temp(self.named)
        return fd

    def prepare(self, write: Callable) -> None:
        """Write the whole content (write(file)) and fsync it, out of sight (OutputError on failure)."""
        self.discard()
        try:
            self.fd = self._open()
            with os.fdopen(os.dup(self.fd), "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(self.fd, 0o666 & ~umask)
        except OSError as exc:
            self.discard()
            raise OutputError(f"{self.flag} {self.path}: cannot write: {exc.strerror or exc}") from None
        except BaseException:
            self.discard()
            raise

    def prepare_npy(self, array: np.ndarray) -> None:
        self.prepare(lambda f: npformat.write_array(f, array, allow_pickle=False))

    def prepare_text(self, text: str) -> None:
        self.prepare(lambda f: f.write(text.encode()))

    def commit(self) -> None:
        """Put the prepared content in place of `path` (OutputError on failure)."""
        try:
            if self.named is None:
                # Give the unnamed file a temp name beside the target, then rename it over.
                tmp = tempfile.mktemp(prefix=".mpimat-", suffix=".tmp", dir=self.directory)
                link_fd(self.fd, tmp)
                self.named = tmp
                named_temp(tmp)
            os.replace(self.named, self.path)
            forget_temp(self.named)
            self.named = None
            dirfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dirfd)  # the rename itself survives a crash
            except OSError:
                pass
            finally:
                os.close(dirfd)
        except OSError as exc:
            raise OutputError(f"{self.flag} {self.path}: cannot write: {exc.strerror or exc}") from None
        finally:
            self.discard()

    def discard(self) -> None:
        """Forget the prepared content (nothing of it stays on disk)."""
        if self.named is not None:
            try:
                os.unlink(self.named)
            except OSError:
                pass
            forget_temp(self.named)
            self.named = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def write_npy(self, array: np.ndarray) -> None:
        self.prepare_npy(array)
        self.commit()

    def write_text(self, text: str) -> None:
        self.prepare_text(text)
        self.commit()
