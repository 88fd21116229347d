"""Gateway mode's broker discovery: ask the cluster for its brokers, at start and periodically.

Each answer binds the ports of new brokers (:class:`~proxy.gateway.directory.Gateway`) and
starts or stops their offloaders (:class:`~proxy.gateway.offload.GatewayOffload`).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

from proxy.client.errors import UpstreamError
from proxy.client.upstream_client import Address, ClusterClient
from proxy.config import ConfigError
from proxy.gateway.directory import Gateway
from proxy.gateway.offload import GatewayOffload

log = structlog.get_logger("walproxy.server")


class BrokerRefresh:
    def __init__(
        self,
        gateway: Gateway,
        clients: Callable[[], ClusterClient],
        interval_s: float,
        offload: GatewayOffload | None = None,
    ) -> None:
        self.gateway = gateway
        self._clients = clients
        self._interval_s = interval_s
        self.offload = offload

    async def fetch(self, *, startup: bool = False) -> dict[int, Address]:
        """Ask the cluster for its brokers ({} when it cannot be reached yet).

        At start-up a broker outside ``gateway.node_id_ranges`` is a configuration error;
        later it is withheld from clients and logged. An unreachable cluster is not fatal:
        the next refresh (or the first client's Metadata) learns the brokers.
        """
        try:
            async with self._clients() as client:
                brokers = await client.brokers()
        except (UpstreamError, OSError, trio.TooSlowError) as exc:
            log.warning("cannot learn the cluster's brokers yet", error=str(exc) or "timeout")
            return {}
        outside = self.gateway.directory.outside_ranges(brokers)
        if startup and outside:
            raise ConfigError(
                f"gateway.node_id_ranges: broker node id(s) {outside} are outside "
                f"{self.gateway.directory.ports.describe()}"
            )
        return brokers

    def learn(self, brokers: dict[int, Address], nursery: trio.Nursery) -> None:
        self.gateway.learn(brokers)
        if self.offload is not None and brokers:  # {}: the cluster was unreachable
            ports = self.gateway.directory.ports
            fronted = {n for n in brokers if ports.port_of(n) is not None}
            self.offload.sync(nursery, fronted)

    async def run(self, nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(self._interval_s)
            self.learn(await self.fetch(), nursery)
