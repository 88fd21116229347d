"""Reading a WAL directory that no writer holds, strictly read-only (rebuild, inspection).

:func:`read_directory` judges the directory as ``open_wal`` would (recovery's analysis) and
yields its durable entries, but never truncates, repairs or locks it for writing: a torn
tail is left out, corruption raises.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

from .errors import WalError
from .file_backend import LOCK_NAME, FileBackend
from .reader import Entry, SegmentInfo, read_segment
from .recovery import analyze


def read_directory(directory: str) -> Iterator[Entry]:
    """Every durable, untrimmed entry of a WAL directory, in LSN order, strictly read-only.

    Refuses (:class:`~wal.WalError`) when a walproxy holds the directory (its lock), or when
    the WAL is corrupt; a torn tail (never acknowledged) is left out, as ``open_wal`` would.
    """
    if not os.path.isdir(directory):
        raise WalError(f"WAL directory {directory} does not exist")
    lock_path = os.path.join(directory, LOCK_NAME)
    lock_fd = os.open(lock_path, os.O_RDONLY) if os.path.exists(lock_path) else None
    try:
        if lock_fd is not None:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WalError(
                    f"WAL directory {directory} is in use by a running walproxy; stop it "
                    "before a rebuild (the rebuild reads the WAL as it is on disk)"
                ) from None
        backend = FileBackend(directory, read_only=True)
        a = analyze(backend)
        if a.corruption is not None:
            raise a.corruption
        if a.fresh or a.superblock is None:
            return
        trim = a.superblock.trim_lsn
        for st in a.segments:
            scan = st.scan
            assert scan is not None and st.header is not None
            info = SegmentInfo(
                name=st.name,
                header=st.header,
                size=st.size,
                end=scan.end_offset,
                next_lsn=scan.next_lsn,
                group_lsns=scan.group_lsns,
                group_offsets=scan.group_offsets,
            )
            lsn = max(trim + 1, st.header.first_lsn)
            while lsn < scan.next_lsn:
                got = read_segment(backend, info, lsn, scan.next_lsn - 1, 16 << 20)
                if not got:
                    break
                yield from got
                lsn = got[-1].lsn + 1
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
