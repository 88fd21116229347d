"""The two ways walproxy is deployed, wired here once instead of checked everywhere.

* **Sidecar**: beside one broker; clients connect to ``proxy.listen``, everything goes to
  ``proxy.upstream``; an offloader copies that broker's partitions.
* **Gateway**: in front of a whole cluster; a bootstrap port plus one port per broker
  (:mod:`proxy.gateway`); one offloader per broker; brokers are learnt and refreshed.

Both give the server the same things: where to listen, where a connection goes, how
endpoints are rewritten, what the probe checks, walproxy's own cluster client, the
offloaders (for trimming, readiness and ``/status``), and what to start beside the listener.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio

from offload.coverage import AnyCoverage, Coverage
from offload.offloader import Connector, Offloader
from proxy.app.supervise import run_offloader
from proxy.client.dialer import Dialer
from proxy.client.errors import UpstreamError
from proxy.client.upstream_client import Address, ClusterClient, UpstreamClient
from proxy.config import Config, parse_address
from proxy.gateway import Gateway, Targets
from proxy.gateway.offload import GatewayOffload
from proxy.gateway.refresh import BrokerRefresh
from proxy.kafka import endpoints
from proxy.ops.status import OffloadView

#: The accept loop of a listener whose connections go to ``targets()``.
Serve = Callable[[trio.SocketListener, Targets], Awaitable[None]]


class Topology(Protocol):
    mode: str
    listen: str
    upstream: str
    #: The node id the reconciler checks partitions of; None: every partition.
    reconcile_node: int | None
    resolver: endpoints.Resolver
    gateway: Gateway | None

    def listen_address(self) -> Address: ...
    def targets(self) -> list[Address]: ...
    def own_client(self) -> UpstreamClient | ClusterClient: ...
    async def preflight(self) -> None: ...
    def start_offload(self, nursery: trio.Nursery) -> Coverage | AnyCoverage | None: ...
    def offloaders(self) -> Sequence[OffloadView]: ...
    def offload_fenced(self) -> str | None: ...
    def start(self, nursery: trio.Nursery, accepting: trio.Nursery, serve: Serve) -> None: ...
    async def aclose(self) -> None: ...


def sidecar_resolver(config: Config) -> endpoints.SidecarEndpoints:
    p = config.proxy
    return endpoints.SidecarEndpoints(
        upstream=parse_address(p.upstream, "proxy.upstream"),
        advertised=parse_address(p.advertised or p.listen, "proxy.advertised"),
        node_id=p.node_id if p.node_id >= 0 else None,
        peers={int(k): parse_address(v, f"proxy.peers.{k}") for k, v in p.peers.items()},
    )


class Sidecar:
    mode = "sidecar"
    gateway = None

    def __init__(self, config: Config, dialer: Dialer) -> None:
        p = config.proxy
        self.config = config
        self.dialer = dialer
        self.listen, self.upstream = p.listen, p.upstream
        self.upstream_address = parse_address(p.upstream, "proxy.upstream")
        self.reconcile_node = p.node_id if p.node_id >= 0 else None
        self.resolver: endpoints.Resolver = sidecar_resolver(config)
        self.offloader: Offloader | None = None

    def listen_address(self) -> Address:
        return parse_address(self.config.proxy.listen, "proxy.listen")

    def targets(self) -> list[Address]:
        return [self.upstream_address]

    def own_client(self) -> UpstreamClient:
        return self.dialer.client(self.upstream_address)

    async def preflight(self) -> None:
        return

    def start_offload(self, nursery: trio.Nursery) -> Coverage | AnyCoverage | None:
        o = self.config.offload
        if not o.enabled:
            return None
        node_id = self.config.proxy.node_id
        self.offloader = Offloader(
            o,
            parse_address(o.upstream or self.config.proxy.upstream, "offload.upstream"),
            node_id if node_id >= 0 else None,
        )
        nursery.start_soon(run_offloader, self.offloader)
        return self.offloader.coverage

    def offloaders(self) -> Sequence[OffloadView]:
        return [self.offloader] if self.offloader is not None else []

    def offload_fenced(self) -> str | None:
        if self.offloader is not None and self.offloader.fenced:
            return "offload fenced by a newer writer"
        return None

    def start(self, nursery: trio.Nursery, accepting: trio.Nursery, serve: Serve) -> None:
        return

    async def aclose(self) -> None:
        return


class GatewayTopology:
    mode = "gateway"
    reconcile_node = None  # a gateway holds every broker's WAL entries: it checks them all

    def __init__(self, config: Config, dialer: Dialer) -> None:
        self.config = config
        self.dialer = dialer
        g = config.gateway
        self.listen, self.upstream = g.listen, g.bootstrap_servers
        self.gateway = Gateway(g)
        self.resolver = self.gateway.directory
        self.offload: GatewayOffload | None = None
        self.refresh = BrokerRefresh(self.gateway, self.own_client, g.metadata_refresh_s)
        self._initial_brokers: dict[int, Address] | None = None

    def listen_address(self) -> Address:
        return self.gateway.listen_host, self.gateway.listen_port

    def targets(self) -> list[Address]:
        return self.gateway.bootstrap_targets()

    def own_client(self) -> ClusterClient:
        return self.dialer.cluster(self.gateway.bootstrap)

    async def preflight(self) -> None:
        """Every broker's node id is in the ranges (a :class:`ConfigError` otherwise)."""
        self._initial_brokers = await self.refresh.fetch(startup=True)

    def _connector_for(self, node_id: int) -> Connector:
        """Connects (TLS, SASL) to broker ``node_id`` at its address as last learned."""
        directory = self.gateway.directory

        async def connect() -> UpstreamClient:
            address = directory.addresses.get(node_id)
            if address is None:
                raise UpstreamError(f"the address of broker {node_id} is not known")
            return await self.dialer.client(address).__aenter__()

        return connect

    def start_offload(self, nursery: trio.Nursery) -> Coverage | AnyCoverage | None:
        if not self.config.offload.enabled:
            return None
        self.offload = GatewayOffload(self.config.offload, self._connector_for, run_offloader)
        self.refresh.offload = self.offload
        return self.offload.coverage

    def offloaders(self) -> Sequence[OffloadView]:
        return list(self.offload.offloaders.values()) if self.offload is not None else []

    def offload_fenced(self) -> str | None:
        if self.offload is not None and self.offload.fenced:
            return f"offload fenced by a newer writer ({self.offload.fenced})"
        return None

    def start(self, nursery: trio.Nursery, accepting: trio.Nursery, serve: Serve) -> None:
        """Broker ports accept into ``accepting``; the brokers known at start-up are bound
        now, the refresh learns the rest."""
        self.gateway.attach(lambda lst, tgt: accepting.start_soon(serve, lst, tgt))
        self.refresh.learn(self._initial_brokers or {}, nursery)
        accepting.start_soon(self.refresh.run, nursery)

    async def aclose(self) -> None:
        await self.gateway.aclose()


def topology_of(config: Config, dialer: Dialer) -> Sidecar | GatewayTopology:
    return GatewayTopology(config, dialer) if config.gateway.enabled else Sidecar(config, dialer)
