"""What ``/status`` reports and how ``walproxy status`` prints it.

``/status`` is a JSON document beside ``/metrics``: readiness and why, the WAL's usage and
fenced state, and the offloaders' lag per partition. The offload part is read from the
offloaders themselves (:func:`offload_status`, over anything shaped like
:class:`OffloadView`, so this module imports nothing of the offloader), or, for a process
seen only through its metrics, from the Prometheus registry by metric name
(:func:`offload_from_registry`: ``walproxy_offload_lag_{offsets,bytes,seconds}``,
``walproxy_offload_offloaded_offset``, ``walproxy_offload_fenced``). All functions here are
plain, so they are tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

_LAG = {
    "walproxy_offload_lag_offsets": "lag_offsets",
    "walproxy_offload_lag_bytes": "lag_bytes",
    "walproxy_offload_lag_seconds": "lag_seconds",
    "walproxy_offload_offloaded_offset": "offloaded_offset",
}


def offload_from_registry(families: Iterable[Metric] | None = None) -> dict[str, Any] | None:
    """Offload lag per partition and the fenced flag; None when no offloader metric exists."""
    partitions: dict[tuple[str, str], dict[str, Any]] = {}
    fenced: bool | None = None
    seen = False
    for family in REGISTRY.collect() if families is None else families:
        if family.name in _LAG:
            seen = True
            for sample in family.samples:
                key = (sample.labels.get("topic", ""), sample.labels.get("partition", ""))
                row = partitions.setdefault(key, {"topic": key[0], "partition": key[1]})
                row[_LAG[family.name]] = sample.value
        elif family.name == "walproxy_offload_fenced":
            seen = True
            fenced = any(s.value for s in family.samples)
    if not seen:
        return None
    rows = sorted(partitions.values(), key=lambda r: (r["topic"], _int_or_str(r["partition"])))
    worst = max((r.get("lag_seconds", 0.0) for r in rows), default=0.0)
    return {"fenced": fenced, "max_lag_seconds": worst, "partitions": rows}


class PartitionView(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def committed_next(self) -> int: ...

    def lag(self, now: float) -> tuple[int, int, float]: ...


class OffloadView(Protocol):
    """What ``/status`` reads of one offloader."""

    @property
    def fenced(self) -> str: ...

    @property
    def partitions(self) -> Mapping[Any, PartitionView]: ...


def offload_status(offloaders: Iterable[OffloadView], now: float) -> dict[str, Any]:
    """Offload lag per partition (as its metrics name them) and whether any is fenced."""
    rows: list[dict[str, Any]] = []
    fenced = False
    for off in offloaders:
        fenced = fenced or bool(off.fenced)
        for s in off.partitions.values():
            offsets, nbytes, seconds = s.lag(now)
            rows.append(
                {
                    "topic": s.topic,
                    "partition": str(s.partition),
                    "lag_offsets": float(offsets),
                    "lag_bytes": float(nbytes),
                    "lag_seconds": float(seconds),
                    "offloaded_offset": float(s.committed_next),
                }
            )
    rows.sort(key=lambda r: (r["topic"], _int_or_str(r["partition"])))
    worst = max((r["lag_seconds"] for r in rows), default=0.0)
    return {"fenced": fenced, "max_lag_seconds": worst, "partitions": rows}


def _int_or_str(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (-1, value)


def _size(n: float | None) -> str:
    if n is None:
        return "unbounded"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def render(status: dict[str, Any], *, max_partitions: int = 20) -> str:
    """The human-readable form of a ``/status`` document."""
    who = "gateway" if status.get("mode") == "gateway" else f"node {status.get('node_id')}"
    lines = [
        f"walproxy {status.get('version', '?')}  {who}  "
        f"listen {status.get('listen')} -> upstream {status.get('upstream')}",
        f"ready:     {'yes' if status['ready'] else 'NO'} ({status['ready_reason']})",
        f"upstream:  {_reachable(status.get('upstream_reachable'))}",
        f"clients:   {status.get('connections', 0)} connection(s)"
        + ("  DRAINING" if status.get("draining") else ""),
    ]
    wal = status.get("wal") or {}
    if not wal.get("enabled"):
        lines.append("WAL:       disabled (acknowledgements are NOT durable)")
    else:
        used, cap = wal.get("used_bytes", 0), wal.get("capacity_bytes")
        share = f" ({100 * used / cap:.0f}%)" if cap else ""
        lines.append(
            f"WAL:       {_size(used)} of {_size(cap)}{share} in {wal.get('segments')} "
            f"segment(s) at {wal.get('dir')}"
        )
        flags = [
            "FENCED" if wal.get("fenced") else "not fenced",
            "Direct IO" if wal.get("direct_io") else "buffered + fdatasync (no O_DIRECT)",
        ]
        if wal.get("full"):
            flags.append("FULL: produce requests wait")
        first, last = wal.get("first_lsn"), wal.get("last_lsn")
        held = (
            f"empty (trimmed; next lsn {first})"
            if isinstance(first, int) and isinstance(last, int) and first > last
            else f"lsn {first}..{last}"
        )
        lines.append(f"           {', '.join(flags)}; {held}")
        lines.append(f"in doubt:  {wal.get('in_doubt_batches', 0)} batch(es)")
    offload = status.get("offload")
    if offload is None:
        lines.append("offload:   no offloader metrics in this process")
    else:
        rows = offload["partitions"]
        lines.append(
            f"offload:   {len(rows)} partition(s), max lag {offload['max_lag_seconds']:.1f} s"
            + ("  FENCED" if offload.get("fenced") else "")
        )
        worst = sorted(rows, key=lambda r: -r.get("lag_seconds", 0.0))[:max_partitions]
        for r in worst:
            done = r.get("offloaded_offset")
            lines.append(
                f"           {r['topic']}-{r['partition']}: "
                + ("" if done is None else f"offloaded up to {done:.0f}, ")
                + f"lag {r.get('lag_offsets', 0):.0f} offsets / "
                f"{_size(r.get('lag_bytes', 0))} / {r.get('lag_seconds', 0.0):.1f} s"
            )
        if len(rows) > max_partitions:
            lines.append(f"           ... {len(rows) - max_partitions} more")
    return "\n".join(lines)


def _reachable(value: bool | None) -> str:
    return {True: "reachable", False: "UNREACHABLE", None: "not checked yet"}[value]
