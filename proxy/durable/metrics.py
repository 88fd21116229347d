"""Prometheus metrics of the durable produce path and of reconciliation."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

WAL_SECONDS = Histogram(
    "walproxy_produce_wal_seconds",
    "Produce request arrival until its WAL entries are durable.",
    buckets=_BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "walproxy_produce_upstream_seconds",
    "Produce request forwarded until the broker answered.",
    buckets=_BUCKETS,
)
FORWARD_SECONDS = Histogram(
    "walproxy_produce_forward_seconds",
    "Produce request's WAL entries durable until it is sent to the broker (the forwarder's "
    "turn, the repair gate).",
    buckets=_BUCKETS,
)
OUTCOME_SECONDS = Histogram(
    "walproxy_produce_outcome_seconds",
    "Broker's answer until its OUTCOME entries are durable (the response may then go out).",
    buckets=_BUCKETS,
)
PERSISTED = Counter(
    "walproxy_produce_batches_persisted_total",
    "Partition batches made durable in the WAL before forwarding.",
)
REFUSED = Counter(
    "walproxy_produce_batches_refused_total",
    "Partition batches refused without reaching WAL or broker, by reason.",
    ["reason"],
)
IN_DOUBT = Gauge(
    "walproxy_in_doubt_batches",
    "Batches forwarded whose outcome is unknown, waiting for reconciliation.",
)
RECONCILIATIONS = Counter(
    "walproxy_reconciliations_total", "Reconciliation runs, by result.", ["result"]
)
FOUND = Counter("walproxy_reconcile_found_total", "In-doubt batches found in the broker's log.")
REPLAYED = Counter(
    "walproxy_replayed_batches_total",
    "Batches produced again by reconciliation, by kind (in_doubt, lost_acked).",
    ["kind"],
)
REPAIRED = Counter(
    "walproxy_repaired_batches_total",
    "Acknowledged batches the broker had lost, restored at their offsets.",
)
OFFSET_MISMATCHES = Counter(
    "walproxy_offset_mismatches_total",
    "Acknowledged batches that could not be restored at their original offset.",
)
ABANDONED = Counter(
    "walproxy_abandoned_batches_total",
    "Batches reconciliation gave up on, by whether they had been acknowledged.",
    ["acked"],
)
# Both series from the start, at 0: the first abandoned acknowledged batch is then an
# increase() an alert sees, not a new series starting at 1.
for _acked in ("true", "false"):
    ABANDONED.labels(_acked)
COMMITS_PERSISTED = Counter(
    "walproxy_commits_persisted_total",
    "Offset commit requests (OffsetCommit, TxnOffsetCommit) made durable in the WAL before "
    "forwarding.",
)
COMMITTED_OFFSETS_ACKED = Counter(
    "walproxy_committed_offsets_acknowledged_total",
    "Partition offsets the broker committed whose outcome is durable in the WAL (the client "
    "was then told).",
)
COMMITS_REFUSED = Counter(
    "walproxy_commits_refused_total",
    "Offset commit requests answered COORDINATOR_NOT_AVAILABLE because the WAL could not "
    "persist them.",
)
COMMITS_RESTORED = Counter(
    "walproxy_committed_offsets_restored_total",
    "Acknowledged partition offsets a group coordinator had lost (it served an older or no "
    "offset after a restart), committed again from the WAL by reconciliation.",
)
COMMITS_UNRESTORED = Counter(
    "walproxy_committed_offsets_unrestored_total",
    "Acknowledged partition offsets reconciliation found behind and could not commit again "
    "(the group kept members past the wait, or the coordinator refused).",
)
END_TXNS_PERSISTED = Counter(
    "walproxy_end_txns_persisted_total",
    "EndTxn requests made durable in the WAL before forwarding.",
)
END_TXNS_ACKED = Counter(
    "walproxy_end_txns_acknowledged_total",
    "EndTxn requests the coordinator answered whose outcome is durable in the WAL (the client "
    "was then told), by the transaction's end and whether the coordinator accepted it.",
    ["result", "error"],
)
END_TXNS_REFUSED = Counter(
    "walproxy_end_txns_refused_total",
    "EndTxn requests answered COORDINATOR_NOT_AVAILABLE because the WAL could not persist them.",
)
