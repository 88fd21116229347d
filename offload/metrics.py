"""Prometheus metrics of the offloader (names fixed: the dashboard uses them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LAG_OFFSETS = Gauge(
    "walproxy_offload_lag_offsets",
    "High watermark minus the next offset the S3 copy needs, per partition.",
    ["topic", "partition"],
)
LAG_BYTES = Gauge(
    "walproxy_offload_lag_bytes",
    "Bytes fetched from the broker and not yet committed to S3, per partition.",
    ["topic", "partition"],
)
LAG_SECONDS = Gauge(
    "walproxy_offload_lag_seconds",
    "Age of the oldest offset the broker had that S3 has not committed, per partition.",
    ["topic", "partition"],
)
MAX_LAG_SECONDS = Gauge(
    "walproxy_offload_max_lag_seconds",
    "The setting offload.max_lag_s: a partition's lag_seconds should drop below it after each "
    "upload (the WalproxyOffloadLagging alert compares the two).",
)
OFFLOADED_OFFSET = Gauge(
    "walproxy_offload_offloaded_offset",
    "Next offset the S3 copy needs: offsets below it are committed to S3, per partition.",
    ["topic", "partition"],
)
S3_REQUESTS = Counter(
    "walproxy_offload_s3_requests_total", "Object-store requests, by operation.", ["op"]
)
S3_ERRORS = Counter(
    "walproxy_offload_s3_errors_total",
    "Object-store requests that failed, by operation and kind (timeout, deadline, "
    "connection, throttled, http_5xx, http_4xx, precondition_failed).",
    ["op", "kind"],
)
BYTES_UPLOADED = Counter(
    "walproxy_offload_bytes_uploaded_total", "Segment object bytes stored (after compression)."
)
OBJECTS_UPLOADED = Counter("walproxy_offload_objects_uploaded_total", "Segment objects stored.")
COMMITS = Counter("walproxy_offload_commits_total", "Manifest commits.")
FENCED = Gauge(
    "walproxy_offload_fenced", "1 once a writer with a newer epoch took this node's offload."
)
DIVERGED = Gauge(
    "walproxy_offload_diverged_partitions",
    "Partitions whose broker log ends below the S3 copy (not offloaded until resolved).",
)
SKIPPED_OFFSETS = Counter(
    "walproxy_offload_skipped_offsets_total",
    "Offsets the broker deleted (retention) before they were offloaded.",
)
WAL_TRIMMED_LSN = Gauge(
    "walproxy_offload_wal_trimmed_lsn",
    "WAL entries up to this LSN are trimmed: settled and covered by committed manifests.",
)
WAL_LAST_LSN = Gauge("walproxy_offload_wal_last_lsn", "Last durable WAL LSN (sampled by trimming).")
