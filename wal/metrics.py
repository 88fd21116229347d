"""Prometheus metrics of the WAL (default registry, prefix ``walproxy_wal_``).

Created once at import time: prometheus_client refuses to register the same
name twice in one registry, so tests that open many WALs must share these.
With several WALs in one process the gauges describe the most recently
updated one (the proxy opens exactly one).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# From 50 us: a WAL sync on a fast disk takes about 0.1 ms.
_LATENCY_BUCKETS: tuple[float, ...] = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01)
_LATENCY_BUCKETS += (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

APPEND_LATENCY = Histogram(
    "walproxy_wal_append_latency_seconds",
    "Time from append() call to durable acknowledgement, observed once per group for its "
    "oldest append (an upper bound for every append of the group)",
    buckets=_LATENCY_BUCKETS,
)
SYNC_LATENCY = Histogram(
    "walproxy_wal_sync_latency_seconds",
    "Time of one group write + sync (several may overlap, see max_inflight_groups)",
    buckets=_LATENCY_BUCKETS,
)
GROUP_SIZE = Histogram(
    "walproxy_wal_group_size_entries",
    "Entries made durable by one write + sync (group commit size)",
    buckets=_GROUP_BUCKETS,
)
BYTES_WRITTEN = Counter("walproxy_wal_bytes_written", "Bytes written to segments (incl. padding)")
APPENDS = Counter("walproxy_wal_appends", "Entries appended durably")
SEGMENTS = Gauge("walproxy_wal_segments", "Live segment files")
USED_BYTES = Gauge("walproxy_wal_used_bytes", "Bytes of live segment files")
CAPACITY_BYTES = Gauge(
    "walproxy_wal_capacity_bytes", "Bytes of segment files the size cap allows (0: unbounded)"
)
FULL = Gauge("walproxy_wal_full", "1 while appends wait for space (the size cap is reached)")
FENCED = Gauge("walproxy_wal_fenced", "1 when the WAL is fenced after an I/O error")
DIRECT_IO = Gauge("walproxy_wal_direct_io", "1 = O_DIRECT in use, 0 = buffered + fdatasync")
TORN_TRUNCATIONS = Counter(
    "walproxy_wal_torn_tail_truncations", "Torn tails cut off during recovery"
)

# -- the S3 backend (wal.backend = "s3"); the metrics above describe it too (a "segment" is
# an object, "sync" is one PUT)
S3_PUT_LATENCY = Histogram(
    "walproxy_wal_s3_put_latency_seconds",
    "Time to store one group's object (retries included)",
    buckets=_LATENCY_BUCKETS,
)
S3_OBJECT_BYTES = Histogram(
    "walproxy_wal_s3_object_bytes",
    "Bytes per WAL object (one group commit)",
    buckets=(1024, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20, 16 << 20, 64 << 20),
)
S3_OBJECTS = Counter("walproxy_wal_s3_objects", "WAL objects stored (rate: objects per second)")
S3_RETRIES = Counter("walproxy_wal_s3_retries", "Object-store requests of the WAL retried", ["op"])
S3_STRAYS = Counter(
    "walproxy_wal_s3_stray_objects_deleted",
    "Late uploads of a superseded writer found in a slot and deleted (never acknowledged)",
)
