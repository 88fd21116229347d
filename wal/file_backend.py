"""The local-file backend (local disk, NFS/EFS mounts).

Durability recipe, and why:

* Segments are written with ``O_DIRECT`` from page-aligned buffers, and with
  ``O_DSYNC`` so that one ``pwrite`` is one durable group (Direct IO alone
  only bypasses the page cache; it does not flush the device cache or the
  file's metadata).  When O_DIRECT is refused we fall back to buffered writes
  + ``fdatasync`` per group.
* Files are created as ``*.tmp``, filled, fsynced, renamed, and then the
  directory is fsynced: otherwise a crash can lose the new name.
* Segments are preallocated by writing zeros (not just fallocate): overwriting
  already-written blocks avoids the unwritten-extent conversion that would
  make every O_DSYNC write also commit a file-system journal transaction.
* One writer per directory: ``fcntl.flock`` on ``LOCK``.  flock conflicts
  between two open file descriptions even inside one process.
"""

from __future__ import annotations

import errno
import fcntl
import os

import structlog

from .dio import DEFAULT_ALIGNMENT, aligned_buffer, probe_direct_io
from .errors import WalDirectIoError, WalLockedError
from .segment import SEG_PREFIX, SEG_SUFFIX
from .superblock import SLOT_SIZE

log = structlog.get_logger("wal.file_backend")

SUPERBLOCK_NAME = "superblock"
LOCK_NAME = "LOCK"
SPARE_PREFIX = "spare-"
TMP_SUFFIX = ".tmp"
ZERO_CHUNK = 1 << 20


def fsync_dir(path: str) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        done += n


class FileSegment:
    """An open segment file; see SegmentHandle."""

    def __init__(self, path: str, fd: int, dsync: bool):
        self.path = path
        self._fd = fd
        self._dsync = dsync  # writes are synchronous: sync() has nothing left to do

    def write_at(self, offset: int, data: memoryview) -> None:
        _write_all(self._fd, data, offset)

    def sync(self) -> None:
        if not self._dsync:
            os.fdatasync(self._fd)

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FileBackend:
    """Segments as files in one directory."""

    def __init__(self, directory: str, *, direct_io: bool | None = None, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        self._lock_fd: int | None = None
        self.direct_io = False
        self.alignment = DEFAULT_ALIGNMENT
        self.probe_reason = "read-only"
        if not read_only:
            os.makedirs(self.directory, exist_ok=True)
            if direct_io is False:
                self.probe_reason = "O_DIRECT disabled by configuration"
            else:
                ok, align, reason = probe_direct_io(self.directory)
                self.direct_io, self.alignment, self.probe_reason = ok, align, reason
                if not ok and direct_io:
                    raise WalDirectIoError(
                        f"wal.direct_io = on, but {self.directory} refuses O_DIRECT "
                        f"({reason}): put the WAL on a file system that supports it (ext4, "
                        "xfs), or set wal.direct_io = auto to fall back to buffered writes "
                        "+ fdatasync"
                    )
                if not ok:
                    log.warning(
                        "wal_direct_io_unavailable",
                        directory=self.directory,
                        reason=reason,
                        fallback="buffered writes + fdatasync per group",
                    )

    # -- helpers --------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def describe(self, name: str) -> str:
        return self._path(name)

    def _seg_flags(self) -> int:
        flags = os.O_RDWR
        if self.direct_io:
            flags |= os.O_DIRECT | os.O_DSYNC
        return flags

    def _write_header(self, fd: int, header: bytes) -> None:
        buf = aligned_buffer(len(header))
        try:
            buf[: len(header)] = header
            with memoryview(buf) as view:
                _write_all(fd, view[: len(header)], 0)
        finally:
            buf.close()

    # -- lock -----------------------------------------------------------------
    def lock(self) -> None:
        fd = os.open(self._path(LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WalLockedError(
                f"WAL directory {self.directory} is locked by another writer "
                f"(flock on {self._path(LOCK_NAME)})"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- listing ----------------------------------------------------------------
    def list_segments(self) -> list[str]:
        return [
            n
            for n in os.listdir(self.directory)
            if n.startswith(SEG_PREFIX) and n.endswith(SEG_SUFFIX)
        ]

    def list_spares(self) -> list[str]:
        return [
            n
            for n in os.listdir(self.directory)
            if n.startswith(SPARE_PREFIX) and n.endswith(SEG_SUFFIX)
        ]

    def used_bytes(self) -> int:
        total = 0
        for n in self.list_segments():
            try:
                total += os.stat(self._path(n)).st_size
            except FileNotFoundError:
                pass
        return total

    # -- segment life cycle ---------------------------------------------------
    def _preallocate(self, fd: int, size: int, zero_fill: bool) -> None:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(fd, size)
        if zero_fill:
            zeros = aligned_buffer(ZERO_CHUNK)
            try:
                view = memoryview(zeros)
                off = 0
                while off < size:
                    n = min(ZERO_CHUNK, size - off)
                    _write_all(fd, view[:n], off)
                    off += n
                view.release()
            finally:
                zeros.close()

    def create_segment(self, name: str, size: int, header: bytes, zero_fill: bool) -> None:
        tmp = self._path(name + TMP_SUFFIX)
        fd = os.open(
            tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if self.direct_io else 0), 0o644
        )
        try:
            self._preallocate(fd, size, zero_fill)
            self._write_header(fd, header)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self._path(name))
        fsync_dir(self.directory)

    def create_spare(self, name: str, size: int) -> None:
        tmp = self._path(name + TMP_SUFFIX)
        fd = os.open(
            tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if self.direct_io else 0), 0o644
        )
        try:
            self._preallocate(fd, size, True)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self._path(name))
        fsync_dir(self.directory)

    def recycle_segment(self, spare: str, name: str, header: bytes) -> None:
        # Write the new header first (while the file still has its spare name),
        # then rename: a crash leaves either a spare or a valid new segment.
        fd = os.open(self._path(spare), self._seg_flags())
        try:
            self._write_header(fd, header)
            if not self.direct_io:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(self._path(spare), self._path(name))
        fsync_dir(self.directory)

    def open_segment(self, name: str, *, write: bool) -> FileSegment:
        path = self._path(name)
        if write:
            fd = os.open(path, self._seg_flags())
            return FileSegment(path, fd, dsync=self.direct_io)
        return FileSegment(path, os.open(path, os.O_RDONLY), dsync=True)

    def truncate_segment(self, name: str, size: int) -> None:
        fd = os.open(self._path(name), os.O_RDWR)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def retire_segment(self, name: str, spare_name: str | None) -> None:
        if spare_name is None:
            os.unlink(self._path(name))
        else:
            os.rename(self._path(name), self._path(spare_name))
        fsync_dir(self.directory)

    # -- superblock and misc --------------------------------------------------
    def read_superblock(self) -> bytes | None:
        try:
            with open(self._path(SUPERBLOCK_NAME), "rb") as f:
                return f.read(2 * SLOT_SIZE)
        except FileNotFoundError:
            return None

    def write_superblock(self, slot: int, data: bytes) -> None:
        path = self._path(SUPERBLOCK_NAME)
        created = not os.path.exists(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _write_all(fd, data, slot * SLOT_SIZE)
            os.fdatasync(fd) if not created else os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.directory)

    def save_aside(self, name: str, data: bytes) -> None:
        fd = os.open(self._path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.directory)

    def remove_temporaries(self) -> None:
        for n in os.listdir(self.directory):
            if n.endswith(TMP_SUFFIX):
                os.unlink(self._path(n))
        fsync_dir(self.directory)
