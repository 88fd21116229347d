"""Configuration: one TOML file, ``WALPROXY_<SECTION>_<KEY>`` environment overrides.

Every setting is a dataclass field with a default and a one-line description
(``_doc``), so the schema is declared once and the reader, the validator
(:mod:`proxy.config.loader`) and the docs read the same source. ``[offload]`` is declared
by :mod:`offload.config` the same way. Errors name the setting (``proxy.max_frame_bytes``)
and what is wrong with it, and stop start-up.
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

from offload.config import OffloadSection


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
    max_connections: int = _doc(
        "Most client connections open at once, over every listener (gateway ports too); "
        "more are refused at accept: closed at once, logged, counted in "
        "`walproxy_connections_refused_total`. Each costs up to two file descriptors (the "
        "client's and, from its first request, its broker connection); the soft open-file "
        "limit is raised to fit. 0: as many as the hard open-file limit allows, at most "
        "10000; a number it cannot hold stops start-up.",
        default=0,
    )
    max_connections_per_address: int = _doc(
        "Most client connections from one IP address; more are refused like those over "
        "`max_connections`. 0: no per-address limit (behind a load balancer or NAT that "
        "hides client addresses).",
        default=1000,
    )
    max_buffered_bytes: int = _doc(
        "Request bytes read from clients and not yet forwarded (or answered), over every "
        "connection; when reached, connections stop reading their sockets (TCP "
        "back-pressure) until requests move on. At least "
        "`max_buffered_bytes_per_connection`.",
        default=256 * 1024 * 1024,
    )
    max_buffered_bytes_per_connection: int = _doc(
        "The same bound for one connection; at least `max_frame_bytes` + 4 (one whole frame). "
        "Responses read from the broker and not yet written to the client are held to it "
        "too (apart from the total): a client that does not read stops its broker connection.",
        default=128 * 1024 * 1024,
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
        "within it); with the offloader on, an entry is trimmed once S3 covers it and it is "
        "this old (S3 does not put a batch back into a broker that lost its page cache).",
        default=60.0,
    )
    direct_io: str = _doc(
        "`auto` (probe O_DIRECT, fall back loudly to buffered writes + fdatasync), `on` "
        "(refuse to start where the WAL's file system refuses O_DIRECT) or `off`.",
        default="auto",
    )
    io: str = _doc(
        "File WAL: where a group's write + sync runs. `auto`: on the event loop's thread "
        "while nothing is in flight and the group is small (no thread hand-offs: the lowest "
        "latency and CPU for synchronous produces), big groups in worker threads (the loop "
        "goes on while the disk works, for throughput); `inline` or `thread`: always the "
        "one (docs/benchmarks.md).",
        default="auto",
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


def read(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (optional) and apply environment overrides; :func:`~proxy.config.load`
    also validates."""
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
        built[name] = _build_section(name, f.default_factory, section_raw)  # type: ignore[arg-type]
    return Config(**built)


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
