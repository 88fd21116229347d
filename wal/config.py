"""WAL tuning knobs (all sizes in bytes)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class WalConfig:
    #: Preallocated size of each segment file.  The largest entry is
    #: ``segment_size - 2 * block_size - 32`` (header block, seal block, record
    #: header); bigger appends raise WalEntryTooLargeError.
    segment_size: int = 64 * MiB
    #: Size cap: at most ``max_bytes // segment_size`` live segments (at least 2).
    #: When reached, appends wait (back-pressure) until `trim` frees a segment.
    #: None = unbounded.
    max_bytes: int | None = None
    #: Largest group (one write + one sync).  A single entry bigger than this
    #: is written as a group of its own.
    max_group_bytes: int = 4 * MiB
    #: Most entries per group.
    max_group_entries: int = 8192
    #: Group writes in flight at once (1..64).  With 2 the next group is written
    #: while the previous one is still syncing; acks stay in LSN order and
    #: recovery treats a hole inside this window as a torn tail (each group
    #: records its distance to the durable frontier, docs/wal-format.md).
    max_inflight_groups: int = 2
    #: Where a group's write + sync runs.  ``"inline"``: on the event loop's thread, by the
    #: task that waits for the group (the loop waits for the disk, ~0.1-0.3 ms, and nothing
    #: hops threads: each hop costs an event-loop pass and a GIL hand-off, more than the
    #: sync itself on a loaded proxy), one group at a time.  ``"thread"``: in worker
    #: threads, up to ``max_inflight_groups`` in flight (the loop goes on while the device
    #: works).  ``"auto"``: inline while nothing is in flight and the group is at most
    #: ``inline_max_bytes``, else a worker thread: small synchronous produces get the
    #: inline latency, big groups at full load overlap the disk with the loop's work
    #: (docs/benchmarks.md, bench/latency_bench.py --compare-io).
    io: str = "auto"
    #: ``io = "auto"``: the largest group written inline.
    inline_max_bytes: int = 256 * 1024
    #: Bound of the append queue (payload bytes waiting for the writer).
    max_pending_bytes: int = 64 * MiB
    #: Bound of the append queue (entries waiting for the writer).
    max_pending_entries: int = 65536
    #: Group alignment; None = max(4096, the file system's Direct IO alignment).
    block_size: int | None = None
    #: None = probe O_DIRECT and fall back to buffered + fdatasync; False = never.
    direct_io: bool | None = None
    #: Zero-fill new segment files (True) or only fallocate them.  Zero-filled
    #: space is much faster to overwrite with O_DSYNC (no extent conversion).
    zero_fill: bool = True
    #: Trimmed segment files kept (renamed to spare-*.wal) for reuse instead of
    #: deleted; the writer also prepares one spare in the background.
    spare_segments: int = 2
    #: Prepare a spare segment in the background when none is left.
    prepare_spares: bool = True
    #: At most this many bytes cut from a torn tail are saved in torn-*.bin.
    torn_save_max: int = 32 * MiB


@dataclass(frozen=True)
class S3WalConfig:
    """Knobs of the S3 WAL (``wal.backend = "s3"``, see wal.s3_wal and docs/wal-format.md)."""

    #: Largest group (= one object); a single bigger entry is an object of its own.
    max_group_bytes: int = 4 * MiB
    #: Most entries per object.
    max_group_entries: int = 8192
    #: Wait this long after a group's first append before uploading it (0: upload as soon as
    #: an upload slot is free; the group is then what arrived during the previous uploads).
    max_group_delay_ms: float = 0.0
    #: Uploads in flight at once (1..64).  One outstanding upload caps throughput at one
    #: group per S3 round trip (Little's law); acknowledgements stay in LSN order.
    max_inflight_groups: int = 8
    #: Bound of the append queue (payload bytes / entries waiting for an upload slot).
    max_pending_bytes: int = 64 * MiB
    max_pending_entries: int = 65536
    #: Size cap of live objects; when reached, uploads wait for `trim`.  None = unbounded.
    max_bytes: int | None = None
    #: Largest single entry.
    max_entry_size: int = 64 * MiB
    #: Deadline of one request (a request past it is abandoned and retried).
    request_timeout_s: float = 5.0
    #: A group whose object is not stored within this fences the WAL (never acked, and the
    #: object, should the abandoned PUT still land, is judged by recovery like any other).
    put_deadline_s: float = 10.0
    #: Recently written objects kept in memory for readers (bytes).
    read_cache_bytes: int = 64 * MiB
    #: Objects fetched at once during recovery.
    recovery_concurrency: int = 16
