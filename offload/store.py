"""The offloader's object stores: :mod:`wal.object_store` (shared with the S3 WAL) plus
:func:`open_store` for an ``offload.target`` string."""

from __future__ import annotations

from wal.object_store import (
    FileStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    S3Store,
    StoredObject,
    StoreError,
    backoff_delays,
    md5_etag,
    same_etag,
)

from .layout import Target, parse_target

__all__ = [
    "FileStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "S3Store",
    "StoreError",
    "StoredObject",
    "backoff_delays",
    "md5_etag",
    "open_store",
    "same_etag",
]


def open_store(
    target: str | Target,
    *,
    endpoint_url: str = "",
    region: str = "",
    request_timeout_s: float = 10.0,
    max_attempts: int = 5,
) -> ObjectStore:
    """The store for an ``offload.target`` string (``s3://bucket/prefix`` or ``file:///dir``)."""
    t = parse_target(target) if isinstance(target, str) else target
    if t.scheme == "s3":
        return S3Store(
            t.bucket,
            t.prefix,
            endpoint_url=endpoint_url or None,
            region=region or None,
            connect_timeout_s=min(5.0, request_timeout_s),
            read_timeout_s=request_timeout_s,
            max_attempts=max_attempts,
        )
    return FileStore(t.path)
