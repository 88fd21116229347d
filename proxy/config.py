"""Configuration: one TOML file, ``WALPROXY_<SECTION>_<KEY>`` environment overrides, validation.

Every setting is a dataclass field with a default and a one-line description, so the schema
is declared once and the loader, the validator and the docs read the same source. Errors
name the setting (``proxy.max_frame_bytes``) and what is wrong with it, and stop start-up.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting is missing, of the wrong type or out of range; the message names it."""


def _doc(text: str, *, secret: bool = False, **kw: Any) -> Any:
    """A setting: its one-line description (the docs print it) and whether it is a secret.

    Secret settings (passwords, keys) are masked wherever the configuration is printed.
    """
    return field(metadata={"doc": text, "secret": secret}, **kw)


@dataclass(frozen=True)
class ProxySection:
    listen: str = _doc("Address clients connect to (host:port).", default="127.0.0.1:9092")
    advertised: str = _doc(
        "Address handed to clients for this broker; defaults to `listen`.", default=""
    )
    upstream: str = _doc(
        "The Kafka broker listener this sidecar fronts (host:port).", default="127.0.0.1:19092"
    )
    node_id: int = _doc("Node id of the upstream broker; -1 if not known.", default=-1)
    max_frame_bytes: int = _doc(
        "Largest request or response frame accepted.", default=100 * 1024 * 1024
    )
    max_in_flight: int = _doc(
        "Requests per connection forwarded and not yet answered; more back-pressure the client.",
        default=64,
    )
    idle_timeout_s: float = _doc("Close a client connection idle this long.", default=600.0)
    partial_frame_timeout_s: float = _doc(
        "Close a connection whose started frame does not complete in this time.", default=30.0
    )
    upstream_connect_timeout_s: float = _doc(
        "Deadline to connect to the upstream broker.", default=10.0
    )
    drain_timeout_s: float = _doc(
        "On SIGTERM, how long in-flight requests may take before connections are closed.",
        default=30.0,
    )
    peers: dict[str, str] = _doc(
        "Node id -> walproxy address of the brokers (strict endpoint checking: a broker not "
        "listed is never handed to clients). This broker's own entry, if any, must equal "
        "`advertised`.",
        default_factory=dict,
    )


@dataclass(frozen=True)
class WalSection:
    enabled: bool = _doc(
        "Persist produce batches before forwarding. Off: a plain proxy, acks are NOT durable.",
        default=True,
    )
    dir: str = _doc(
        "Directory of the write-ahead log (its own volume in production).", default="walproxy-wal"
    )
    segment_bytes: int = _doc(
        "Size of each preallocated WAL segment file.", default=64 * 1024 * 1024
    )
    max_bytes: int = _doc(
        "Size cap of the WAL; when full, produce requests wait.", default=2 * 1024 * 1024 * 1024
    )
    retention_s: float = _doc(
        "Keep acknowledged entries this long (the broker's page cache is written back well "
        "within it); the S3 offloader will trim after upload instead.",
        default=60.0,
    )
    direct_io: str = _doc(
        "`auto` (probe O_DIRECT, fall back loudly), `on` or `off`.", default="auto"
    )
    backend: str = _doc(
        "`file` (segments in `dir`, Direct IO) or `s3` (one object per group commit under "
        "`s3_target`: no durable local state; docs/wal-format.md).",
        default="file",
    )
    s3_target: str = _doc(
        "S3 WAL: `s3://bucket/prefix`, this node's own prefix (one writer per prefix). The "
        "endpoint and region are `offload.s3_endpoint_url` / `offload.s3_region`.",
        default="",
    )
    s3_max_group_bytes: int = _doc(
        "S3 WAL: largest group commit (one object); a bigger single entry is its own object.",
        default=4 * 1024 * 1024,
    )
    s3_max_group_delay_ms: float = _doc(
        "S3 WAL: hold a group this long for company before its upload (0: upload as soon "
        "as an upload slot is free; a group is then what arrived during the previous ones).",
        default=0.0,
    )
    s3_max_inflight: int = _doc(
        "S3 WAL: uploads in flight at once (1..64); acknowledgements stay in order.",
        default=8,
    )
    s3_request_timeout_s: float = _doc(
        "S3 WAL: deadline of one request; a request past it is abandoned and retried.",
        default=5.0,
    )
    s3_put_deadline_s: float = _doc(
        "S3 WAL: a group not stored within this fences the WAL (nothing more is "
        "acknowledged; restart to recover).",
        default=10.0,
    )


@dataclass(frozen=True)
class OffloadSection:
    enabled: bool = _doc(
        "Copy every partition this broker leads to the offload target (S3 or a directory); "
        "a gateway runs one offloader per broker it fronts.",
        default=True,
    )
    target: str = _doc(
        "`s3://bucket/prefix` or `file:///path` (relative `file://dir` is under the cwd).",
        default="file://walproxy-offload",
    )
    s3_endpoint_url: str = _doc(
        "S3 endpoint (MinIO, moto, ...); empty: the AWS default for the region.", default=""
    )
    s3_region: str = _doc("S3 region; empty: the AWS default chain.", default="")
    object_bytes: int = _doc(
        "Upload a partition's buffer once it holds this many bytes.", default=8 * 1024 * 1024
    )
    max_lag_s: float = _doc(
        "... or once its oldest buffered byte is this old (seconds).", default=1.0
    )
    request_timeout_s: float = _doc(
        "Deadline of one object-store request; a request past it is retried.", default=10.0
    )
    poll_interval_s: float = _doc(
        "Longest wait of one Fetch when every partition is caught up.", default=0.5
    )
    fetch_min_bytes: int = _doc(
        "A Fetch returns once this much is there (or after `max_lag_s` / 4, at most "
        "`poll_interval_s`): fewer, larger fetches cost the proxy's thread less.",
        default=1024 * 1024,
    )
    max_buffer_bytes: int = _doc(
        "Bytes fetched and not yet committed, all partitions together; when reached the "
        "tailer waits (the data stays in Kafka and the WAL).",
        default=64 * 1024 * 1024,
    )
    compression: str = _doc("Segment objects: `zstd` or `none`.", default="zstd")
    upload_concurrency: int = _doc("Partitions uploading at the same time.", default=4)
    metadata_interval_s: float = _doc(
        "How often to look for new, moved and deleted partitions.", default=5.0
    )
    broker_meta_properties: str = _doc(
        "Path of the broker log directory's meta.properties (read-only mount) for broker.json's "
        "directory id; empty: left out (a rebuild formats a new directory id). Sidecar only.",
        default="",
    )
    upstream: str = _doc(
        "Broker listener the offloader fetches from; empty: `proxy.upstream` (sidecar only).",
        default="",
    )


@dataclass(frozen=True)
class GatewaySection:
    enabled: bool = _doc(
        "Gateway mode: one walproxy in front of a whole cluster, a port per broker; "
        "`proxy.listen`, `proxy.upstream` and `proxy.node_id` are then unused.",
        default=False,
    )
    listen: str = _doc("The bootstrap address clients are given (host:port).", default="")
    bootstrap_servers: str = _doc(
        "The cluster's own bootstrap brokers, host:port[,host:port...].", default=""
    )
    advertised_host: str = _doc(
        "Host handed to clients for every gateway port; defaults to the host of `listen`.",
        default="",
    )
    broker_port_base: int = _doc(
        "Port of the first node id in `node_id_ranges`; 0: the bootstrap port + 1.", default=0
    )
    node_id_ranges: str = _doc(
        "Broker node ids, e.g. `0-2,100-102`; node id at position i gets broker_port_base + i.",
        default="0-15",
    )
    metadata_refresh_s: float = _doc(
        "How often the gateway asks the cluster for its brokers (new ones get a port).",
        default=30.0,
    )


@dataclass(frozen=True)
class TlsSection:
    listen_cert: str = _doc(
        "PEM certificate (chain) clients see; empty: clients connect in plaintext.", default=""
    )
    listen_key: str = _doc("PEM private key of `listen_cert`.", default="")
    listen_client_ca: str = _doc(
        "PEM CA bundle that client certificates must chain to.", default=""
    )
    listen_client_auth: str = _doc(
        "Client certificates: `none`, `optional` (checked when sent) or `required`.",
        default="none",
    )
    upstream: bool = _doc("Connect to the brokers over TLS.", default=False)
    upstream_ca: str = _doc(
        "PEM CA bundle for the brokers' certificates; empty: the system's CAs.", default=""
    )
    upstream_cert: str = _doc("PEM client certificate for brokers that ask for one.", default="")
    upstream_key: str = _doc("PEM private key of `upstream_cert`.", default="")
    upstream_check_hostname: bool = _doc(
        "Check that a broker's certificate names the host walproxy connects to.", default=True
    )
    reload_check_s: float = _doc(
        "At most this often, a new connection checks whether the certificate files changed "
        "(changed files are loaded for new connections; open ones keep theirs).",
        default=1.0,
    )


@dataclass(frozen=True)
class SaslSection:
    mechanism: str = _doc(
        "SASL mechanism of walproxy's own broker connections (reconciliation, broker "
        "discovery): empty for none, `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. Clients' "
        "own SASL exchanges pass through untouched either way.",
        default="",
    )
    username: str = _doc("User walproxy authenticates as.", default="")
    password: str = _doc("Its password (prefer `WALPROXY_SASL_PASSWORD`).", secret=True, default="")


@dataclass(frozen=True)
class AdminSection:
    listen: str = _doc(
        "Address of the admin endpoint (/metrics, /healthz, /readyz, /status); empty disables "
        "it. Loopback unless set: the endpoint has no authentication.",
        default="127.0.0.1:9644",
    )
    upstream_check_interval_s: float = _doc(
        "How often the broker's listener is probed with a TCP connect; /readyz fails while "
        "it cannot be reached.",
        default=2.0,
    )


@dataclass(frozen=True)
class LogSection:
    format: str = _doc("`console` or `json`.", default="console")
    level: str = _doc("debug, info, warning or error.", default="info")


@dataclass(frozen=True)
class Config:
    proxy: ProxySection = field(default_factory=ProxySection)
    wal: WalSection = field(default_factory=WalSection)
    offload: OffloadSection = field(default_factory=OffloadSection)
    gateway: GatewaySection = field(default_factory=GatewaySection)
    tls: TlsSection = field(default_factory=TlsSection)
    sasl: SaslSection = field(default_factory=SaslSection)
    admin: AdminSection = field(default_factory=AdminSection)
    log: LogSection = field(default_factory=LogSection)


def parse_address(value: str, setting: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{setting}: expected host:port, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _coerce(setting: str, typ: Any, value: Any) -> Any:
    if typ in ("bool", bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "1",
            "yes",
            "on",
            "false",
            "0",
            "no",
            "off",
        ):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{setting}: expected true or false, got {value!r}")
    if typ in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{setting}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{setting}: expected an integer, got {value!r}") from None
    if typ in ("float", float):
        if isinstance(value, bool):
            raise ConfigError(f"{setting}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{setting}: expected a number, got {value!r}") from None
        if not math.isfinite(number):  # "nan" and "inf" parse, and would pass every bound
            raise ConfigError(f"{setting}: expected a finite number, got {value!r}")
        return number
    if typ in ("str", str):
        if not isinstance(value, str):
            raise ConfigError(f"{setting}: expected a string, got {value!r}")
        return value
    if typ in ("dict[str, str]",):
        if isinstance(value, str):  # from the environment: "1=host:9092,2=host:9093"
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError(f"{setting}: expected id=host:port,... got {value!r}")
            value = {k.strip(): v.strip() for k, v in pairs}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{setting}: expected a table, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    raise AssertionError(f"unhandled type {typ!r} for {setting}")


def _build_section(name: str, cls: type, raw: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    # A sub-table (``[wal.s3]`` with ``max_group_bytes``) spells the ``s3_*`` settings.
    raw = dict(raw)
    for key, value in list(raw.items()):
        if isinstance(value, Mapping) and key not in known:
            del raw[key]
            for sub, v in value.items():
                raw[f"{key}_{sub}"] = v
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown setting")
    values = {k: _coerce(f"{name}.{k}", known[k].type, v) for k, v in raw.items()}
    return cls(**values)


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    sections = {f.name for f in dataclasses.fields(Config)}
    for key, value in env.items():
        if not key.startswith("WALPROXY_"):
            continue
        section, _, name = key[len("WALPROXY_") :].lower().partition("_")
        if section in sections and name:
            out.setdefault(section, {})[name] = value
    return out


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (optional), apply environment overrides, validate, return the config."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, values in _env_overrides(os.environ if env is None else env).items():
        raw.setdefault(section, {}).update(values)
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section")
    built = {}
    for name, f in sections.items():
        section_raw = raw.get(name, {})
        if not isinstance(section_raw, Mapping):
            raise ConfigError(f"{name}: expected a table")
        built[name] = _build_section(name, f.default_factory, section_raw)  # type: ignore[misc]
    config = Config(**built)
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


def masked(config: Config) -> dict[str, dict[str, Any]]:
    """The configuration as plain data, secret settings (``_doc(secret=True)``) masked."""
    out: dict[str, dict[str, Any]] = {}
    for section in dataclasses.fields(config):
        values = dataclasses.asdict(getattr(config, section.name))
        for f in dataclasses.fields(getattr(config, section.name)):
            if f.metadata.get("secret") and values[f.name]:
                values[f.name] = "***"
        out[section.name] = values
    return out


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
    _validate_offload(config.offload)
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
        from .gateway import validate_gateway

        validate_gateway(config)
    from .tls import validate_tls

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
    from offload.layout import LayoutError, parse_target

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


def _validate_offload(o: OffloadSection) -> None:
    from offload.layout import LayoutError, parse_target

    try:
        parse_target(o.target)
    except LayoutError as exc:
        raise ConfigError(str(exc)) from None
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
            raise ConfigError(f"{name}: must be positive, got {value}")
    if o.object_bytes > 1 << 30:
        raise ConfigError(f"offload.object_bytes: at most 1 GiB, got {o.object_bytes}")
    if o.max_buffer_bytes < 2 * o.object_bytes:
        raise ConfigError(
            f"offload.max_buffer_bytes: must hold two objects ({2 * o.object_bytes}), "
            f"got {o.max_buffer_bytes}"
        )
    if o.compression not in ("zstd", "none"):
        raise ConfigError(f"offload.compression: expected zstd or none, got {o.compression!r}")
    if o.upstream:
        parse_address(o.upstream, "offload.upstream")
    if o.s3_endpoint_url and not o.s3_endpoint_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"offload.s3_endpoint_url: expected http(s)://host:port, got {o.s3_endpoint_url!r}"
        )
