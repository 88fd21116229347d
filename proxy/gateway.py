"""Gateway mode: one walproxy in front of a whole cluster, one port per broker.

Clients get one bootstrap address. Every broker endpoint handed to them (Metadata,
FindCoordinator, DescribeCluster, the KIP-951 node endpoints of Produce and Fetch) is
rewritten to ``advertised_host:port``, where the port is fixed by the broker's node id:
``broker_port_base`` + the node id's position in ``node_id_ranges``. A broker therefore keeps
its port across restarts and address changes, and gaps in node ids cost nothing.

A node's port is bound the first time the node is seen in a response (before that response
reaches the client, so the client's connection finds the port open) and stays bound; each
connection on it goes to the broker's address as last learned from the cluster. Brokers the
ranges do not cover are withheld from clients (and logged), never handed out as they are.

:class:`NodePorts` and :class:`BrokerDirectory` are plain logic; :class:`Gateway` is the trio
shell that binds the ports and refreshes the broker list.
"""

from __future__ import annotations

import errno
import itertools
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio
from prometheus_client import Counter, Gauge

from .config import Config, ConfigError, parse_address

log = structlog.get_logger("walproxy.gateway")

Address = tuple[str, int]

PORTS_BOUND = Gauge("walproxy_gateway_broker_ports", "Broker ports the gateway has bound.")
NODES_OUTSIDE_RANGES = Counter(
    "walproxy_gateway_nodes_outside_ranges_total",
    "Broker endpoints withheld because the node id is not in gateway.node_id_ranges.",
)
BROKER_MOVES = Counter(
    "walproxy_gateway_broker_address_changes_total",
    "Times a broker node was seen at a new address (first sighting included).",
)


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


def node_ports_of(config: Config) -> NodePorts:
    g = config.gateway
    _, bootstrap_port = parse_address(g.listen, "gateway.listen")
    ranges = parse_node_id_ranges(g.node_id_ranges, "gateway.node_id_ranges")
    return NodePorts(ranges, g.broker_port_base or bootstrap_port + 1)


def bootstrap_servers_of(config: Config) -> list[Address]:
    servers = [s.strip() for s in config.gateway.bootstrap_servers.split(",") if s.strip()]
    if not servers:
        raise ConfigError("gateway.bootstrap_servers: at least one host:port is needed")
    return [parse_address(s, "gateway.bootstrap_servers") for s in servers]


def advertised_host_of(config: Config) -> str:
    g = config.gateway
    host, _ = parse_address(g.listen, "gateway.listen")
    return g.advertised_host or host


def validate_gateway(config: Config) -> None:
    """Everything that can be checked before start-up; errors name the setting."""
    g = config.gateway
    if not g.listen:
        raise ConfigError("gateway.listen: must be set when gateway.enabled is true")
    host, port = parse_address(g.listen, "gateway.listen")
    bootstrap_servers_of(config)
    if g.broker_port_base < 0 or g.broker_port_base > 65535:
        raise ConfigError(f"gateway.broker_port_base: not a port: {g.broker_port_base}")
    if port == 0:
        raise ConfigError("gateway.listen: needs a fixed port (broker ports derive from it)")
    ports = node_ports_of(config)
    if ports.last_port > 65535:
        raise ConfigError(
            f"gateway.node_id_ranges: {ports.count} node ids from port {ports.base} run past 65535"
        )
    if ports.base <= port <= ports.last_port:
        raise ConfigError(
            f"gateway.broker_port_base: broker ports {ports.base}-{ports.last_port} include "
            f"the bootstrap port of gateway.listen ({port})"
        )
    if config.admin.listen:
        _, admin_port = parse_address(config.admin.listen, "admin.listen")
        if admin_port == port or ports.base <= admin_port <= ports.last_port:
            raise ConfigError(
                f"admin.listen: port {admin_port} is one of the gateway's ports "
                f"({port}, {ports.base}-{ports.last_port})"
            )
    if host in ("0.0.0.0", "::") and not g.advertised_host:
        raise ConfigError(
            "gateway.advertised_host: must be set when gateway.listen binds every interface"
        )
    if config.offload.enabled:
        # A gateway runs one offloader per broker, each fetching from its own broker.
        for setting, value in (
            ("offload.upstream", config.offload.upstream),
            ("offload.broker_meta_properties", config.offload.broker_meta_properties),
        ):
            if value:
                raise ConfigError(
                    f"{setting}: not used in gateway mode (each broker's offloader fetches "
                    "from that broker, whose files the gateway cannot read); leave it empty"
                )
    if g.metadata_refresh_s <= 0:
        raise ConfigError(
            f"gateway.metadata_refresh_s: must be positive, got {g.metadata_refresh_s}"
        )


@dataclass(eq=False)
class BrokerDirectory:
    """What the gateway knows of each broker: its real address and its gateway port.

    It is the endpoint :data:`~proxy.endpoints.Resolver` of gateway mode. ``bind(node_id,
    port)`` is called (synchronously, before the rewritten response goes out) the first time
    a node is seen; it returns False when the port cannot be bound, and the node is then
    withheld until a later sighting binds it.
    """

    ports: NodePorts
    advertised_host: str
    bind: Callable[[int, int], bool]
    addresses: dict[int, Address] = field(default_factory=dict)
    bound: set[int] = field(default_factory=set)
    _outside_logged: set[int] = field(default_factory=set)

    def __call__(self, node_id: int, host: str, port: int) -> Address | None:
        gw_port = self.ports.port_of(node_id)
        if gw_port is None:
            NODES_OUTSIDE_RANGES.inc()
            if node_id not in self._outside_logged:
                self._outside_logged.add(node_id)
                log.error(
                    "broker node id outside gateway.node_id_ranges; withheld from clients",
                    node_id=node_id,
                    broker=f"{host}:{port}",
                    node_id_ranges=self.ports.describe(),
                )
            return None
        address = (host, int(port))
        if self.addresses.get(node_id) != address:
            BROKER_MOVES.inc()
            log.info(
                "broker address learned",
                node_id=node_id,
                broker=f"{host}:{port}",
                previous="%s:%d" % self.addresses[node_id] if node_id in self.addresses else None,
                gateway_port=gw_port,
            )
            self.addresses[node_id] = address
        if node_id not in self.bound:
            if not self.bind(node_id, gw_port):
                return None
            self.bound.add(node_id)
        return (self.advertised_host, gw_port)

    def outside_ranges(self, brokers: dict[int, Address]) -> list[int]:
        return sorted(n for n in brokers if self.ports.port_of(n) is None)


def _listen_socket(host: str, port: int) -> trio.SocketListener:
    """Bind and listen now (synchronously): connections queue before accept() runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


#: Where a connection accepted on some port is to go: the upstream addresses to try in order.
Targets = Callable[[], list[Address]]


class Gateway:
    """The trio shell: binds broker ports on demand and keeps the broker list fresh."""

    def __init__(self, config: Config) -> None:
        self.config = config
        g = config.gateway
        self.listen_host, self.listen_port = parse_address(g.listen, "gateway.listen")
        self.bootstrap = bootstrap_servers_of(config)
        self._rotation = itertools.count()
        self.directory = BrokerDirectory(
            node_ports_of(config), advertised_host_of(config), self._bind
        )
        self.listeners: dict[int, trio.SocketListener] = {}
        self._serve: Callable[[trio.SocketListener, Targets], None] | None = None

    def attach(self, serve: Callable[[trio.SocketListener, Targets], None]) -> None:
        """``serve(listener, targets)`` starts an accept loop (in the server's nursery)."""
        self._serve = serve

    def bootstrap_targets(self) -> list[Address]:
        """The upstream bootstrap brokers, starting with the next one in turn."""
        n = next(self._rotation) % len(self.bootstrap)
        return self.bootstrap[n:] + self.bootstrap[:n]

    def node_targets(self, node_id: int) -> Targets:
        def targets() -> list[Address]:
            address = self.directory.addresses.get(node_id)
            return [address] if address is not None else []

        return targets

    def _bind(self, node_id: int, port: int) -> bool:
        if self._serve is None:
            return False
        try:
            listener = _listen_socket(self.listen_host, port)
        except OSError as exc:
            log.error(
                "cannot bind broker port; the broker is withheld until it can be",
                node_id=node_id,
                port=port,
                error=exc.strerror or str(exc),
                in_use=exc.errno == errno.EADDRINUSE,
            )
            return False
        self.listeners[node_id] = listener
        PORTS_BOUND.set(len(self.listeners))
        log.info("broker port bound", node_id=node_id, listen=f"{self.listen_host}:{port}")
        self._serve(listener, self.node_targets(node_id))
        return True

    def learn(self, brokers: dict[int, Address]) -> None:
        for node_id, (host, port) in brokers.items():
            self.directory(node_id, host, port)

    async def aclose(self) -> None:
        for listener in self.listeners.values():
            await listener.aclose()
