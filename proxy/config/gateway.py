"""The gateway's settings: the port plan they imply and the checks run at start-up.

A broker's gateway port is ``broker_port_base`` + the position of its node id in
``node_id_ranges``. Plain functions over the configuration; :mod:`proxy.gateway` binds the
ports. They live here, beside the settings, because :func:`validate_gateway` runs when the
configuration loads (errors name the setting).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.config.settings import ConfigError, GatewaySection, parse_address

Address = tuple[str, int]


def parse_node_id_ranges(text: str, setting: str) -> tuple[tuple[int, int], ...]:
    """``"0-2,100-102"`` -> ``((0, 2), (100, 102))``; inclusive, non-overlapping."""
    ranges: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo_s, sep, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise ConfigError(f"{setting}: {part!r} is not a node id or range like 0-2") from None
        if lo < 0 or hi < lo:
            raise ConfigError(f"{setting}: {part!r} is not a range of node ids >= 0")
        for a, b in ranges:
            if lo <= b and a <= hi:
                raise ConfigError(f"{setting}: {a}-{b} and {lo}-{hi} overlap")
        ranges.append((lo, hi))
    if not ranges:
        raise ConfigError(f"{setting}: no node id range given")
    return tuple(ranges)


@dataclass(frozen=True, slots=True)
class NodePorts:
    """Node id -> gateway port: ``base`` + the node id's position in ``ranges``."""

    ranges: tuple[tuple[int, int], ...]
    base: int

    @property
    def count(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    @property
    def last_port(self) -> int:
        return self.base + self.count - 1

    def port_of(self, node_id: int) -> int | None:
        position = 0
        for lo, hi in self.ranges:
            if lo <= node_id <= hi:
                return self.base + position + node_id - lo
            position += hi - lo + 1
        return None

    def describe(self) -> str:
        return ",".join(f"{lo}-{hi}" if hi != lo else str(lo) for lo, hi in self.ranges)


def node_ports_of(g: GatewaySection) -> NodePorts:
    _, bootstrap_port = parse_address(g.listen, "gateway.listen")
    ranges = parse_node_id_ranges(g.node_id_ranges, "gateway.node_id_ranges")
    return NodePorts(ranges, g.broker_port_base or bootstrap_port + 1)


def bootstrap_servers_of(g: GatewaySection) -> list[Address]:
    servers = [s.strip() for s in g.bootstrap_servers.split(",") if s.strip()]
    if not servers:
        raise ConfigError("gateway.bootstrap_servers: at least one host:port is needed")
    return [parse_address(s, "gateway.bootstrap_servers") for s in servers]


def advertised_host_of(g: GatewaySection) -> str:
    host, _ = parse_address(g.listen, "gateway.listen")
    return g.advertised_host or host


def validate_gateway(g: GatewaySection, admin_listen: str, sidecar_only: Mapping[str, str]) -> None:
    """Everything that can be checked before start-up; errors name the setting.

    ``sidecar_only``: settings of other sections (setting -> value) that a gateway must not
    be given (the offloader's ``offload.upstream``, ...).
    """
    if not g.listen:
        raise ConfigError("gateway.listen: must be set when gateway.enabled is true")
    host, port = parse_address(g.listen, "gateway.listen")
    bootstrap_servers_of(g)
    if g.broker_port_base < 0 or g.broker_port_base > 65535:
        raise ConfigError(f"gateway.broker_port_base: not a port: {g.broker_port_base}")
    if port == 0:
        raise ConfigError("gateway.listen: needs a fixed port (broker ports derive from it)")
    ports = node_ports_of(g)
    if ports.last_port > 65535:
        raise ConfigError(
            f"gateway.node_id_ranges: {ports.count} node ids from port {ports.base} run past 65535"
        )
    if ports.base <= port <= ports.last_port:
        raise ConfigError(
            f"gateway.broker_port_base: broker ports {ports.base}-{ports.last_port} include "
            f"the bootstrap port of gateway.listen ({port})"
        )
    if admin_listen:
        _, admin_port = parse_address(admin_listen, "admin.listen")
        if admin_port == port or ports.base <= admin_port <= ports.last_port:
            raise ConfigError(
                f"admin.listen: port {admin_port} is one of the gateway's ports "
                f"({port}, {ports.base}-{ports.last_port})"
            )
    if host in ("0.0.0.0", "::") and not g.advertised_host:
        raise ConfigError(
            "gateway.advertised_host: must be set when gateway.listen binds every interface"
        )
    for name, value in sidecar_only.items():
        if value:
            raise ConfigError(
                f"{name}: not used in gateway mode (each broker's offloader fetches "
                "from that broker, whose files the gateway cannot read); leave it empty"
            )
    if g.metadata_refresh_s <= 0:
        raise ConfigError(
            f"gateway.metadata_refresh_s: must be positive, got {g.metadata_refresh_s}"
        )
