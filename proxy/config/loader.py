"""Loading the configuration: read it (:mod:`proxy.config.settings`), then validate it.

:func:`validate` checks every section, the cross-section rules and the gateway's and TLS
settings (:mod:`proxy.config.gateway`, :mod:`proxy.config.tls`) and ``[offload]``'s own
checks (:mod:`offload.config`); a misconfiguration stops start-up with a
:class:`~proxy.config.settings.ConfigError` that names the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from offload import config as offload_config
from offload.layout import LayoutError, parse_target
from proxy.config.gateway import validate_gateway
from proxy.config.settings import Config, ConfigError, WalSection, parse_address, read
from proxy.config.tls import validate_tls


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (optional), apply environment overrides, validate, return the config."""
    config = read(path, env)
    validate(config)
    return config


_LOG_LEVELS = ("debug", "info", "warning", "error")
_WILDCARDS = ("0.0.0.0", "::")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _same_socket(bind: tuple[str, int], other: tuple[str, int]) -> bool:
    """Whether ``other`` would reach (or collide with) a listener bound to ``bind``."""
    if bind[1] == 0 or bind[1] != other[1]:
        return False
    return bind[0] == other[0] or (bind[0] in _WILDCARDS and other[0] in _LOOPBACK + _WILDCARDS)


def validate(config: Config) -> None:
    p = config.proxy
    listen = parse_address(p.listen, "proxy.listen")
    upstream = parse_address(p.upstream, "proxy.upstream")
    if p.advertised:
        advertised = parse_address(p.advertised, "proxy.advertised")
        if advertised[0] in _WILDCARDS or advertised[1] == 0:
            raise ConfigError(
                f"proxy.advertised: {p.advertised!r} is not an address clients can connect to"
            )
    elif listen[0] in _WILDCARDS:
        raise ConfigError(
            f"proxy.advertised: must be set when proxy.listen binds every interface "
            f"({p.listen!r}); clients would be handed {listen[0]!r}"
        )
    if _same_socket(listen, upstream):
        raise ConfigError(
            f"proxy.upstream: {p.upstream!r} is proxy.listen itself; name the broker's listener"
        )
    if p.node_id < -1:
        raise ConfigError(f"proxy.node_id: must be -1 (unknown) or a node id >= 0, got {p.node_id}")
    for node, addr in p.peers.items():
        if not node.lstrip("-").isdigit():
            raise ConfigError(f"proxy.peers: node id {node!r} is not an integer")
        peer = parse_address(addr, f"proxy.peers.{node}")
        # One peers table may serve every broker (a chart's ConfigMap); its own entry must
        # then be the address this sidecar advertises, or clients get two answers.
        own = parse_address(p.advertised or p.listen, "proxy.advertised")
        if p.node_id >= 0 and int(node) == p.node_id and peer != own:
            raise ConfigError(
                f"proxy.peers.{node}: is this broker's own node id (proxy.node_id) but "
                f"{addr!r} is not its advertised address {p.advertised or p.listen!r}"
            )
    positive = {
        "proxy.max_frame_bytes": p.max_frame_bytes,
        "proxy.max_in_flight": p.max_in_flight,
        "proxy.idle_timeout_s": p.idle_timeout_s,
        "proxy.partial_frame_timeout_s": p.partial_frame_timeout_s,
        "proxy.upstream_connect_timeout_s": p.upstream_connect_timeout_s,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name}: must be positive, got {value}")
    if p.drain_timeout_s < 0:
        raise ConfigError(f"proxy.drain_timeout_s: must not be negative, got {p.drain_timeout_s}")
    if p.max_frame_bytes > 2**31 - 1:
        raise ConfigError("proxy.max_frame_bytes: must fit a Kafka int32 frame size")
    for name, value in {
        "proxy.max_connections": p.max_connections,
        "proxy.max_connections_per_address": p.max_connections_per_address,
    }.items():
        if value < 0:
            raise ConfigError(f"{name}: must not be negative (0: no fixed limit), got {value}")
    if p.max_buffered_bytes_per_connection < p.max_frame_bytes + 4:
        raise ConfigError(
            "proxy.max_buffered_bytes_per_connection: must hold one whole frame, at least "
            f"proxy.max_frame_bytes + 4 ({p.max_frame_bytes + 4}), "
            f"got {p.max_buffered_bytes_per_connection}"
        )
    if p.max_buffered_bytes < p.max_buffered_bytes_per_connection:
        raise ConfigError(
            "proxy.max_buffered_bytes: must be at least "
            f"proxy.max_buffered_bytes_per_connection ({p.max_buffered_bytes_per_connection}), "
            f"got {p.max_buffered_bytes}"
        )
    w = config.wal
    if w.backend not in ("file", "s3"):
        raise ConfigError(f"wal.backend: expected file or s3, got {w.backend!r}")
    if w.enabled and w.backend == "file" and not w.dir:
        raise ConfigError("wal.dir: must name a directory when wal.enabled is true")
    if w.enabled and w.backend == "s3":
        _validate_s3_wal(w)
    if w.segment_bytes < 1024 * 1024 or w.segment_bytes % 4096:
        raise ConfigError(
            "wal.segment_bytes: must be a multiple of 4096 and at least 1 MiB, "
            f"got {w.segment_bytes}"
        )
    if w.max_bytes < 2 * w.segment_bytes:
        raise ConfigError(
            f"wal.max_bytes: must hold at least two segments ({2 * w.segment_bytes}), "
            f"got {w.max_bytes}"
        )
    if w.retention_s < 0:
        raise ConfigError(f"wal.retention_s: must not be negative, got {w.retention_s}")
    if w.direct_io not in ("auto", "on", "off"):
        raise ConfigError(f"wal.direct_io: expected auto, on or off, got {w.direct_io!r}")
    if w.io not in ("auto", "inline", "thread"):
        raise ConfigError(f"wal.io: expected auto, inline or thread, got {w.io!r}")
    try:
        offload_config.validate(config.offload)
    except offload_config.OffloadConfigError as exc:
        raise ConfigError(str(exc)) from None
    if config.offload.upstream:
        parse_address(config.offload.upstream, "offload.upstream")
    if config.admin.listen:
        admin = parse_address(config.admin.listen, "admin.listen")
        if _same_socket(admin, listen) or _same_socket(listen, admin):
            raise ConfigError(
                f"admin.listen: {config.admin.listen!r} collides with proxy.listen {p.listen!r}"
            )
    if config.admin.upstream_check_interval_s <= 0:
        raise ConfigError(
            "admin.upstream_check_interval_s: must be positive, "
            f"got {config.admin.upstream_check_interval_s}"
        )
    if config.gateway.enabled:
        o = config.offload
        # A gateway runs one offloader per broker, each fetching from its own broker.
        sidecar_only = (
            {
                "offload.upstream": o.upstream,
                "offload.broker_meta_properties": o.broker_meta_properties,
            }
            if o.enabled
            else {}
        )
        validate_gateway(config.gateway, config.admin.listen, sidecar_only)
    validate_tls(config.tls)
    s = config.sasl
    if s.mechanism and s.mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise ConfigError(
            f"sasl.mechanism: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got {s.mechanism!r}"
        )
    if s.mechanism and not s.username:
        raise ConfigError("sasl.username: needed when sasl.mechanism is set")
    if config.log.format not in ("console", "json"):
        raise ConfigError(f"log.format: expected console or json, got {config.log.format!r}")
    if config.log.level.lower() not in _LOG_LEVELS:
        raise ConfigError(f"log.level: expected debug/info/warning/error, got {config.log.level!r}")


def _validate_s3_wal(w: WalSection) -> None:
    try:
        target = parse_target(w.s3_target, "wal.s3_target") if w.s3_target else None
    except LayoutError as exc:
        raise ConfigError(str(exc)) from None
    if target is None or target.scheme != "s3":
        raise ConfigError(
            f"wal.s3_target: wal.backend = s3 needs s3://bucket/prefix, got {w.s3_target!r}"
        )
    if not 1 <= w.s3_max_inflight <= 64:
        raise ConfigError(f"wal.s3_max_inflight: must be in 1..64, got {w.s3_max_inflight}")
    if w.s3_max_group_bytes < 4096:
        raise ConfigError(
            f"wal.s3_max_group_bytes: must be at least 4096, got {w.s3_max_group_bytes}"
        )
    if w.s3_max_group_delay_ms < 0:
        raise ConfigError(
            f"wal.s3_max_group_delay_ms: must not be negative, got {w.s3_max_group_delay_ms}"
        )
    for name in ("s3_request_timeout_s", "s3_put_deadline_s"):
        if getattr(w, name) <= 0:
            raise ConfigError(f"wal.{name}: must be positive, got {getattr(w, name)}")
