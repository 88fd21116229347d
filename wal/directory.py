"""Reading a WAL that no writer holds, strictly read-only (rebuild, inspection).

:func:`read_directory` (a file WAL) and :func:`read_s3_wal` (an S3 WAL's prefix) judge the
WAL as ``open_wal`` / ``open_s3_wal`` would (the same recovery analysis) and yield its
durable entries, but never truncate, repair, delete, take the lease or claim a slot: a
torn tail is left out, corruption raises.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

from .errors import WalCorruptionError, WalError
from .file_backend import LOCK_NAME, FileBackend
from .object_store import ObjectNotFound, ObjectStore
from .reader import Entry, SegmentInfo, read_segment
from .recovery import analyze
from .s3_layout import LEASE_NAME, object_name
from .s3_wal import judge, list_slots, read_all, read_lease


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


def read_s3_wal(store: ObjectStore, *, parallel: int = 8) -> Iterator[Entry]:
    """Every durable, untrimmed entry of the S3 WAL under `store`'s prefix, in LSN order.

    The same judgement as ``open_s3_wal`` (the contiguous run of objects from the lease's
    trim slot; a torn tail, never acknowledged, is left out; corruption raises
    :class:`~wal.WalCorruptionError` naming the key) without writing anything: no epoch is
    taken, so a writer that is still running is not fenced and what it acknowledges after
    the listing is not in the result. Stop the node's walproxy first (for a rebuild, the
    node is gone).

    Refuses (:class:`~wal.WalError`) when the prefix holds no WAL (no lease: every writer
    creates it on open, so a wrong bucket or prefix is not read as an empty WAL) and lets
    the store's :class:`~wal.object_store.StoreError` through once its retries are spent.
    """
    try:
        lease, etag = read_lease(store)
        sizes = list_slots(store)
    except ObjectNotFound:  # the bucket itself
        etag, sizes = None, {}
    if etag is None:
        raise WalError(
            f"no S3 WAL at {store.describe()} (no {LEASE_NAME} object; is wal.s3_target right?)"
        )
    objects = read_all(store, lease, sizes, parallel)
    plan, decoded = judge(lease, sizes, objects)
    if plan.corruption is not None:
        slot = plan.corrupt_slot
        raise WalCorruptionError(
            plan.corruption, store.describe() + (object_name(slot) if slot is not None else "")
        )
    for o in plan.run:
        d = decoded.get(o.slot)
        if d is None:  # deleted between the listing and the GET: a trim moved past it
            raise WalError(
                f"S3 WAL {store.describe()}: {object_name(o.slot)} went away while reading "
                "(is a walproxy still running on this WAL?)"
            )
        for lsn, typ, payload in d.entries:
            if lsn > lease.trim_lsn:
                yield Entry(lsn, typ, payload)
