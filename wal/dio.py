"""Direct IO helpers: alignment discovery, aligned buffers, the O_DIRECT probe.

Why a probe: O_DIRECT support depends on the file system (tmpfs on older
kernels, some FUSE/NFS setups refuse it with EINVAL either at open() or at the
first aligned write).  The WAL must then fall back to buffered writes +
fdatasync, which is still durable, and say so loudly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os

STATX_DIOALIGN = 0x00002000
AT_FDCWD = -100
DEFAULT_ALIGNMENT = 4096

_libc = None


def _get_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:  # pragma: no cover - exotic platforms
            return None
    return _libc


def statx_dio_align(path: str) -> tuple[int, int] | None:
    """(memory alignment, offset alignment) from statx(STATX_DIOALIGN), or None.

    Linux >= 6.1 reports the real Direct IO constraints of a file; earlier
    kernels, other file systems and libcs without statx return None and the
    caller uses DEFAULT_ALIGNMENT.
    """
    libc = _get_libc()
    if libc is None or not hasattr(libc, "statx"):
        return None
    buf = ctypes.create_string_buffer(256)
    rc = libc.statx(AT_FDCWD, os.fsencode(path), 0, STATX_DIOALIGN, buf)
    if rc != 0:
        return None
    mask = int.from_bytes(buf.raw[0:4], "little")
    if not mask & STATX_DIOALIGN:
        return None
    mem_align = int.from_bytes(buf.raw[152:156], "little")
    off_align = int.from_bytes(buf.raw[156:160], "little")
    if mem_align == 0 or off_align == 0:  # DIO not supported on this file
        return None
    return mem_align, off_align


def aligned_buffer(size: int) -> mmap.mmap:
    """A zeroed, page-aligned anonymous buffer (valid for O_DIRECT writes)."""
    return mmap.mmap(-1, max(size, mmap.PAGESIZE))


def probe_direct_io(directory: str) -> tuple[bool, int, str]:
    """Try an aligned O_DIRECT|O_DSYNC write in `directory`.

    Returns (direct_io_works, alignment, reason).  EINVAL at open or at the
    write means "not supported here"; other errors propagate.
    """
    path = os.path.join(directory, ".dio-probe.tmp")
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0) | os.O_DSYNC
    if not getattr(os, "O_DIRECT", 0):
        return False, DEFAULT_ALIGNMENT, "O_DIRECT not available on this platform"
    try:
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as e:
            if e.errno == errno.EINVAL:
                return False, DEFAULT_ALIGNMENT, "open(O_DIRECT) refused with EINVAL"
            raise
        try:
            found = statx_dio_align(path)
            align = DEFAULT_ALIGNMENT
            if found is not None:
                align = max(found)
            buf = aligned_buffer(max(align, DEFAULT_ALIGNMENT))
            try:
                with memoryview(buf) as view:
                    os.pwrite(fd, view[: max(align, DEFAULT_ALIGNMENT)], 0)
            except OSError as e:
                if e.errno == errno.EINVAL:
                    return False, align, "aligned O_DIRECT write refused with EINVAL"
                raise
            finally:
                buf.close()
            how = "statx STATX_DIOALIGN" if found is not None else "default"
            return True, align, f"O_DIRECT ok, alignment {align} ({how})"
        finally:
            os.close(fd)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
