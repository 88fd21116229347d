"""How walproxy reaches a broker: TCP, TLS when configured, SASL for its own clients.

One :class:`Dialer` per process serves both the relayed client connections (a plain stream
to the broker, the client's own SASL passes through) and walproxy's own clients (the
reconciler, broker discovery, the offloaders), which authenticate with ``[sasl]``.
"""

from __future__ import annotations

import trio

from proxy.client.sasl_client import SaslCredentials
from proxy.client.tls import Tls
from proxy.client.upstream_client import Address, ClusterClient, UpstreamClient
from proxy.config import Config


class Dialer:
    def __init__(self, tls: Tls, connect_timeout_s: float, sasl: SaslCredentials | None) -> None:
        self.tls = tls
        self.connect_timeout_s = connect_timeout_s
        self.sasl = sasl

    async def dial(self, address: Address) -> trio.abc.Stream:
        """TCP (and TLS when configured) to a broker, within the connect timeout."""
        timeout = self.connect_timeout_s
        with trio.fail_after(timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(*address)
        try:
            return await self.tls.connect(stream, address[0], timeout)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    def client(self, address: Address) -> UpstreamClient:
        """walproxy's own (unconnected) client of one broker; connects when entered."""
        return UpstreamClient.lazy(address, self.dial, self.sasl)

    def cluster(self, bootstrap: list[Address]) -> ClusterClient:
        """walproxy's own (unconnected) client of a whole cluster, by partition leader."""
        return ClusterClient(bootstrap, self.dial, self.connect_timeout_s, self.sasl)


def dialer_of(config: Config) -> Dialer:
    sa = config.sasl
    sasl = SaslCredentials(sa.mechanism, sa.username, sa.password) if sa.mechanism else None
    return Dialer(Tls(config.tls), config.proxy.upstream_connect_timeout_s, sasl)
