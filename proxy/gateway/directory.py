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

The port plan (:class:`~proxy.config.gateway.NodePorts`) is checked with the configuration;
:class:`BrokerDirectory` is plain logic; :class:`Gateway` is the trio shell that binds the
ports and refreshes the broker list.
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

from proxy.config.gateway import (
    Address,
    NodePorts,
    advertised_host_of,
    bootstrap_servers_of,
    node_ports_of,
)
from proxy.config.settings import GatewaySection, parse_address

log = structlog.get_logger("walproxy.gateway")


PORTS_BOUND = Gauge("walproxy_gateway_broker_ports", "Broker ports the gateway has bound.")
NODES_OUTSIDE_RANGES = Counter(
    "walproxy_gateway_nodes_outside_ranges_total",
    "Broker endpoints withheld because the node id is not in gateway.node_id_ranges.",
)
BROKER_MOVES = Counter(
    "walproxy_gateway_broker_address_changes_total",
    "Times a broker node was seen at a new address (first sighting included).",
)


@dataclass(eq=False)
class BrokerDirectory:
    """What the gateway knows of each broker: its real address and its gateway port.

    It is the endpoint :data:`~proxy.kafka.endpoints.Resolver` of gateway mode. ``bind(node_id,
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

    def __init__(self, g: GatewaySection) -> None:
        self.listen_host, self.listen_port = parse_address(g.listen, "gateway.listen")
        self.bootstrap = bootstrap_servers_of(g)
        self._rotation = itertools.count()
        self.directory = BrokerDirectory(node_ports_of(g), advertised_host_of(g), self._bind)
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
