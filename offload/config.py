"""The ``[offload]`` section: its settings and their checks (the offloader's own config).

Declared like walproxy's other sections (a frozen dataclass whose fields carry ``doc`` and
``secret`` metadata), so the proxy's loader, ``walproxy config check`` and the generated
reference read it; :func:`validate` runs when the configuration loads and raises
:class:`OffloadConfigError` naming the setting that is wrong. Like :mod:`wal.config`, this
module imports nothing of the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .layout import LayoutError, parse_target


class OffloadConfigError(ValueError):
    """An ``offload.*`` setting is out of range; the message names it."""


def setting(text: str, **kw: Any) -> Any:
    """A setting and its one-line description (the generated reference prints it)."""
    return field(metadata={"doc": text, "secret": False}, **kw)


@dataclass(frozen=True)
class OffloadSection:
    enabled: bool = setting(
        "Copy every partition this broker leads to the offload target (S3 or a directory); "
        "a gateway runs one offloader per broker it fronts.",
        default=True,
    )
    target: str = setting(
        "`s3://bucket/prefix` or `file:///path` (relative `file://dir` is under the cwd).",
        default="file://walproxy-offload",
    )
    s3_endpoint_url: str = setting(
        "S3 endpoint (MinIO, moto, ...); empty: the AWS default for the region.", default=""
    )
    s3_region: str = setting("S3 region; empty: the AWS default chain.", default="")
    object_bytes: int = setting(
        "Upload a partition's buffer once it holds this many bytes.", default=8 * 1024 * 1024
    )
    max_lag_s: float = setting(
        "... or once its oldest buffered byte is this old (seconds).", default=1.0
    )
    request_timeout_s: float = setting(
        "Deadline of one object-store request; a request past it is retried.", default=10.0
    )
    poll_interval_s: float = setting(
        "Longest wait of one Fetch when every partition is caught up.", default=0.5
    )
    fetch_min_bytes: int = setting(
        "A Fetch returns once this much is there (or after `max_lag_s` / 4, at most "
        "`poll_interval_s`): fewer, larger fetches cost the proxy's thread less.",
        default=1024 * 1024,
    )
    max_buffer_bytes: int = setting(
        "Bytes fetched and not yet committed, all partitions together; when reached the "
        "tailer waits (the data stays in Kafka and the WAL).",
        default=64 * 1024 * 1024,
    )
    compression: str = setting("Segment objects: `zstd` or `none`.", default="zstd")
    upload_concurrency: int = setting("Partitions uploading at the same time.", default=4)
    metadata_interval_s: float = setting(
        "How often to look for new, moved and deleted partitions.", default=5.0
    )
    broker_meta_properties: str = setting(
        "Path of the broker log directory's meta.properties (read-only mount) for broker.json's "
        "directory id; empty: left out (a rebuild formats a new directory id). Sidecar only.",
        default="",
    )
    upstream: str = setting(
        "Broker listener the offloader fetches from; empty: `proxy.upstream` (sidecar only).",
        default="",
    )


def validate(o: OffloadSection) -> None:
    """The offload settings alone (offload.upstream, an address, and a gateway's limits
    on them are checked by the proxy's loader)."""
    try:
        parse_target(o.target)
    except LayoutError as exc:
        raise OffloadConfigError(str(exc)) from None
    positive = {
        "offload.object_bytes": o.object_bytes,
        "offload.max_lag_s": o.max_lag_s,
        "offload.request_timeout_s": o.request_timeout_s,
        "offload.poll_interval_s": o.poll_interval_s,
        "offload.fetch_min_bytes": o.fetch_min_bytes,
        "offload.upload_concurrency": o.upload_concurrency,
        "offload.metadata_interval_s": o.metadata_interval_s,
    }
    for name, value in positive.items():
        if value <= 0:
            raise OffloadConfigError(f"{name}: must be positive, got {value}")
    if o.object_bytes > 1 << 30:
        raise OffloadConfigError(f"offload.object_bytes: at most 1 GiB, got {o.object_bytes}")
    if o.max_buffer_bytes < 2 * o.object_bytes:
        raise OffloadConfigError(
            f"offload.max_buffer_bytes: must hold two objects ({2 * o.object_bytes}), "
            f"got {o.max_buffer_bytes}"
        )
    if o.compression not in ("zstd", "none"):
        raise OffloadConfigError(
            f"offload.compression: expected zstd or none, got {o.compression!r}"
        )
    if o.s3_endpoint_url and not o.s3_endpoint_url.startswith(("http://", "https://")):
        raise OffloadConfigError(
            f"offload.s3_endpoint_url: expected http(s)://host:port, got {o.s3_endpoint_url!r}"
        )
