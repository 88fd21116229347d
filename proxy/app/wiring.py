"""Settings turned into parts: the WAL the configuration names, walproxy's own clients.

Shared by ``walproxy run`` (:mod:`proxy.app.server`), ``walproxy repair`` and ``walproxy
offload verify``, which need the same WAL and the same way to reach the cluster without a
server around them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from offload.layout import parse_target
from proxy.client.dialer import dialer_of
from proxy.client.upstream_client import ClusterClient, UpstreamClient
from proxy.config import Config, parse_address
from proxy.config.gateway import bootstrap_servers_of
from wal import Backend, Wal, WalConfig, open_wal
from wal.config import S3WalConfig
from wal.object_store import S3Store
from wal.s3_wal import S3Wal, open_s3_wal


def own_clients(config: Config) -> Callable[[], UpstreamClient | ClusterClient]:
    """walproxy's own (unconnected) clients: of ``proxy.upstream``, or in gateway mode of
    the whole cluster (TLS and SASL as configured)."""
    dialer = dialer_of(config)
    if config.gateway.enabled:
        bootstrap = bootstrap_servers_of(config.gateway)
        return lambda: dialer.cluster(bootstrap)
    upstream = parse_address(config.proxy.upstream, "proxy.upstream")
    return lambda: dialer.client(upstream)


def wal_config_of(config: Config) -> WalConfig:
    w = config.wal
    return WalConfig(
        segment_size=w.segment_bytes,
        max_bytes=w.max_bytes,
        # Group commit needs a few MiB in the queue; more would only hold clients' bytes.
        max_pending_bytes=16 * 1024 * 1024,
        direct_io={"auto": None, "on": True, "off": False}[w.direct_io],
        io=w.io,
    )


def s3_wal_config_of(config: Config) -> S3WalConfig:
    w = config.wal
    return S3WalConfig(
        max_group_bytes=w.s3_max_group_bytes,
        max_group_delay_ms=w.s3_max_group_delay_ms,
        max_inflight_groups=w.s3_max_inflight,
        max_pending_bytes=16 * 1024 * 1024,
        max_bytes=w.max_bytes,
        request_timeout_s=w.s3_request_timeout_s,
        put_deadline_s=w.s3_put_deadline_s,
    )


def s3_wal_store(config: Config) -> S3Store:
    """The S3 WAL's store: its own prefix; botocore does not retry (the WAL does, within
    ``wal.s3_put_deadline_s``)."""
    w, o = config.wal, config.offload
    t = parse_target(w.s3_target, "wal.s3_target")
    return S3Store(
        t.bucket,
        t.prefix,
        endpoint_url=o.s3_endpoint_url or None,
        region=o.s3_region or None,
        connect_timeout_s=min(5.0, w.s3_request_timeout_s),
        read_timeout_s=w.s3_request_timeout_s,
        max_attempts=1,
        max_pool_connections=max(16, 2 * w.s3_max_inflight),
    )


def open_configured_wal(
    config: Config, backend: Backend | None = None
) -> AbstractAsyncContextManager[Wal | S3Wal]:
    """The WAL `config` names: the file backend in ``wal.dir`` (or `backend`, a test's
    injected storage) or the S3 backend under ``wal.s3_target``."""
    if config.wal.backend == "s3" and backend is None:
        return open_s3_wal(s3_wal_store(config), s3_wal_config_of(config))
    return open_wal(backend or config.wal.dir, wal_config_of(config))
