"""The upstream (broker) connection is dialled on the client's first request, not at accept:
an idle or slow client costs the broker nothing."""

from __future__ import annotations

import struct

import trio
import trio.testing

from proxy.net.connection import ConnectionSettings, PreparedProduce, ProxyConnection
from tests.integration.rawkafka import metadata_frame

SETTINGS = ConnectionSettings(
    max_frame_bytes=1 << 20, max_in_flight=8, idle_timeout_s=0.5, partial_frame_timeout_s=0.5
)


class Broker:
    """Stands for the dialler: counts dials and hands out one in-memory broker stream."""

    def __init__(self) -> None:
        self.dials = 0
        self.proxy_side, self.broker_side = trio.testing.memory_stream_pair()

    async def connect(self) -> trio.abc.Stream:
        self.dials += 1
        return self.proxy_side


def _proxied() -> tuple[Broker, trio.StapledStream, ProxyConnection[PreparedProduce]]:
    """A dialler, the client's end, and the connection between them (not yet running)."""
    broker = Broker()
    client, proxy_side = trio.testing.memory_stream_pair()
    conn: ProxyConnection[PreparedProduce] = ProxyConnection(proxy_side, broker.connect, SETTINGS)
    return broker, client, conn


async def test_an_idle_client_is_closed_without_ever_dialling_the_broker() -> None:
    broker, client, conn = _proxied()
    with trio.fail_after(5):
        await conn.run()  # returns at the idle timeout
    assert await client.receive_some(1024) == b""
    assert broker.dials == 0


async def test_a_half_sent_frame_never_dials_the_broker() -> None:
    broker, client, conn = _proxied()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await client.send_all(metadata_frame(1)[:10])  # size and part of the header
            assert await client.receive_some(1024) == b""  # closed at the partial-frame timeout
    assert broker.dials == 0


async def test_the_first_request_dials_once_and_is_forwarded() -> None:
    broker, client, conn = _proxied()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await trio.sleep(0.1)
            assert broker.dials == 0
            for correlation_id in (1, 2):
                request = metadata_frame(correlation_id)
                await client.send_all(request)
                got = b""
                while len(got) < len(request):
                    got += await broker.broker_side.receive_some(65536)
                assert got == request  # forwarded unchanged
                response = struct.pack(">ii", 4, correlation_id)
                await broker.broker_side.send_all(response)
                assert await client.receive_some(1024) == response
            assert broker.dials == 1
            await client.aclose()
