"""What ``/status`` reports and how ``walproxy status`` prints it.

``/status`` is a JSON document beside ``/metrics``: readiness and why, the WAL's usage and
fenced state, and, once the offloader registers its metrics, its lag per partition. The
offload part is read from the Prometheus registry by metric name
(``walproxy_offload_lag_{offsets,bytes,seconds}{topic,partition}``,
``walproxy_offload_offloaded_offset{topic,partition}``,
``walproxy_offload_fenced``), so this module needs no import of the offloader.
Both functions here are plain: :func:`offload_from_registry` over metric families,
:func:`render` over the JSON, so they are tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
