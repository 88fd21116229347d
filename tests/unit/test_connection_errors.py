"""An unexpected error in one connection closes that connection only (never the server),
and what it had not answered is never answered: no acknowledgement."""

from __future__ import annotations

import trio
import trio.testing

from proxy.net.connection import ConnectionSettings, ProxyConnection
from tests.integration.rawkafka import produce_frame

SETTINGS = ConnectionSettings(
    max_frame_bytes=1 << 20, max_in_flight=8, idle_timeout_s=30, partial_frame_timeout_s=30
)


class BrokenHandler:
    """A produce handler with a bug: ``prepare`` raises what no except clause expects."""

    async def prepare(self, version, correlation_id, frame, payload):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the produce path")

    def abandoned(self, prepared):  # type: ignore[no-untyped-def]
        pass


async def test_an_unexpected_error_closes_only_that_connection() -> None:
    client, proxy_side = trio.testing.memory_stream_pair()
    upstream_side, _broker = trio.testing.memory_stream_pair()

    dialled: list[trio.abc.Stream] = []

    async def connect() -> trio.abc.Stream:
        dialled.append(upstream_side)
        return upstream_side

    conn = ProxyConnection(proxy_side, connect, SETTINGS, produce=BrokenHandler())  # type: ignore[arg-type]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:  # stands for the server's accept nursery
            nursery.start_soon(conn.run)
            await client.send_all(produce_frame("t", 0, [b"v"], acks=-1, correlation_id=1))
            # the connection is closed, with no answer, and nothing went upstream (the
            # broker was never even dialled: the request failed before it was forwarded)
            assert await client.receive_some(1024) == b""
            assert dialled == []
        # the nursery ended normally: the error did not escape the connection


class _StorageFailed(Exception):
    pass


class StorageFailedHandler(BrokenHandler):
    async def prepare(self, version, correlation_id, frame, payload):  # type: ignore[no-untyped-def]
        raise _StorageFailed("WAL fenced")


async def test_a_failed_wal_closes_the_connection_as_expected_not_as_a_bug() -> None:
    from structlog.testing import capture_logs

    settings = ConnectionSettings(
        max_frame_bytes=1 << 20,
        max_in_flight=8,
        idle_timeout_s=30,
        partial_frame_timeout_s=30,
        storage_errors=(_StorageFailed,),
    )
    for handler, level in ((StorageFailedHandler(), "warning"), (BrokenHandler(), "error")):
        client, proxy_side = trio.testing.memory_stream_pair()
        upstream_side, _broker = trio.testing.memory_stream_pair()

        async def connect(side: trio.abc.Stream = upstream_side) -> trio.abc.Stream:
            return side

        conn = ProxyConnection(proxy_side, connect, settings, produce=handler)  # type: ignore[arg-type]
        with capture_logs() as logs, trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.run)
                await client.send_all(produce_frame("t", 0, [b"v"], acks=-1, correlation_id=1))
                assert await client.receive_some(1024) == b""  # closed, nothing acknowledged
        closing = [e for e in logs if e["event"].startswith("closing connection")]
        assert [e["log_level"] for e in closing] == [level], closing
        if level == "warning":  # the storage failure is named, without a traceback
            assert closing[0]["reason"] == "storage_failed" and "exc_info" not in closing[0]
