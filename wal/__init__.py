"""walproxy's write-ahead log: durable, group-committed, crash-checked.

This package owns everything about making an entry durable on local storage
before it is acknowledged -- and nothing about Kafka: entries are opaque
bytes with a small caller-chosen integer type (e.g. the produce path's
"batch" and "outcome" entries).  See docs/wal-format.md for the on-disk format.

Public API::

    from wal import open_wal
    from wal import WalConfig

    async with open_wal("/var/lib/walproxy/wal", config=WalConfig()) as wal:
        lsn: int = await wal.append(payload, type=1)        # returns once durable
        lsns: list[int] = await wal.append_many([(1, b"a"), (2, b"b")])  # one group
        sub = await wal.submit_many([(1, b"c")])  # queue now (FIFO = LSN order) ...
        lsns = await sub.wait()                   # ... wait for durability later
        for entry in wal.read_from(lsn):                    # sync, durable entries only
            entry.lsn, entry.type, entry.payload
        async for entry in wal.follow(lsn):                  # async tail, waits for more
            ...
        await wal.trim(upto_lsn)                            # frees whole segments
        wal.first_lsn, wal.last_durable_lsn, wal.fenced, wal.direct_io, wal.epoch

    for entry in read_directory("/var/lib/walproxy/wal"):   # no writer holds it; read-only
        ...
    for entry in read_s3_wal(S3Store(bucket, prefix)):      # the same for an S3 WAL
        ...
    fsync_dir(path)                                         # a directory's entries durable

* ``append`` payloads: bytes-like, up to ``wal.max_entry_size`` (segment_size
  minus two blocks and a 32-byte header: ~64 MiB by default, so 16 MiB
  entries fit); larger raises WalEntryTooLargeError.  Types 0..239 are the
  caller's; 240..255 are reserved for the WAL (SEAL, PAD).
* Back-pressure, never drops: appends wait when the queue
  (max_pending_bytes/entries) or the size cap (max_bytes) is full.
* Errors: WalFencedError (an I/O error happened; nothing is acked any more,
  reopen to recover), WalCorruptionError (refuses to open; names file and
  offset), WalLockedError (another writer holds the directory), WalClosedError,
  WalTrimmedError.
* Operators: ``python -m wal verify DIR`` / ``python -m wal dump DIR`` (read-only),
  also as functions ``wal.cli.verify(dir) -> int`` and ``wal.cli.dump(dir) -> int``.
* Metrics: prometheus_client default registry, prefix ``walproxy_wal_``
  (see wal.metrics).

Modules: record/segment/superblock (sans-IO format), recovery (judging a
directory), backend (storage protocol), file_backend (O_DIRECT files),
writer (trio group commit), reader, directory (read-only reading of a
directory no writer holds), dio, metrics, config, cli; testing (MemoryBackend, the
crash simulator the tests use: not imported by the product).
"""

from .backend import Backend, SegmentHandle
from .config import WalConfig
from .directory import read_directory, read_s3_wal
from .errors import (
    WalClosedError,
    WalCorruptionError,
    WalDirectIoError,
    WalEntryTooLargeError,
    WalError,
    WalFencedError,
    WalLockedError,
    WalTrimmedError,
)
from .file_backend import FileBackend, fsync_dir
from .object_store import ObjectStore, S3Store
from .reader import Entry
from .record import MAX_USER_TYPE
from .writer import Wal, open_wal

__all__ = [
    "MAX_USER_TYPE",
    "Backend",
    "Entry",
    "FileBackend",
    "ObjectStore",
    "S3Store",
    "SegmentHandle",
    "Wal",
    "WalClosedError",
    "WalConfig",
    "WalCorruptionError",
    "WalDirectIoError",
    "WalEntryTooLargeError",
    "WalError",
    "WalFencedError",
    "WalLockedError",
    "WalTrimmedError",
    "fsync_dir",
    "open_wal",
    "read_directory",
    "read_s3_wal",
]
