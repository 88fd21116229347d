"""Connection and memory limits: the sans-IO decisions (proxy/net/limits.py, memory.py), the
settings' checks, and the memory budget's back-pressure on a real ProxyConnection."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from proxy.config import ConfigError, load
from proxy.net import metrics
from proxy.net.budget import MemoryBudget
from proxy.net.connection import ConnectionSettings, ProxyConnection
from proxy.net.limits import (
    AUTO_MAX_CONNECTIONS,
    MAX_CONNECTIONS,
    MAX_PER_ADDRESS,
    ConnectionLimits,
    RefusalLog,
    plan_descriptors,
)
from proxy.net.memory import MemoryLedger


def test_connection_limits_total_and_per_address() -> None:
    limits = ConnectionLimits(max_connections=3, per_address=2)
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") == MAX_PER_ADDRESS  # refused: not counted
    assert limits.admit("10.0.0.2") is None
    assert limits.admit("10.0.0.3") == MAX_CONNECTIONS
    assert limits.open == 3
    limits.release("10.0.0.1")
    assert limits.from_address("10.0.0.1") == 1
    assert limits.admit("10.0.0.3") is None  # room again
    assert limits.open == 3


def test_per_address_zero_means_no_per_address_limit() -> None:
    limits = ConnectionLimits(max_connections=5, per_address=0)
    assert [limits.admit("h") for _ in range(6)] == [None] * 5 + [MAX_CONNECTIONS]


def test_refusal_log_is_rate_limited() -> None:
    log = RefusalLog(interval_s=1.0)
    assert log.refused(MAX_PER_ADDRESS, 0.0) == 1  # the first is logged at once
    assert [log.refused(MAX_PER_ADDRESS, 0.1 * i) for i in range(1, 10)] == [0] * 9
    assert log.refused(MAX_CONNECTIONS, 0.5) == 1  # another reason has its own line
    assert log.refused(MAX_PER_ADDRESS, 1.0) == 10  # then one line counting the quiet ones


def test_descriptor_plan_raises_the_soft_limit_or_names_the_setting() -> None:
    plan = plan_descriptors(1000, reserved=300, soft=1024, hard=65536)
    assert (plan.max_connections, plan.needed, plan.raise_soft_to) == (1000, 2300, 2300)
    assert plan_descriptors(100, reserved=300, soft=1024, hard=4096).raise_soft_to is None
    with pytest.raises(ConfigError, match=r"proxy.max_connections: 5000 connections need 10300"):
        plan_descriptors(5000, reserved=300, soft=1024, hard=4096)
    # 0: as many as the hard limit holds, capped
    assert plan_descriptors(0, reserved=300, soft=1024, hard=4096).max_connections == 1898
    assert plan_descriptors(0, reserved=300, soft=-1, hard=-1).max_connections == (
        AUTO_MAX_CONNECTIONS
    )
    with pytest.raises(ConfigError, match=r"proxy.max_connections: the open-file limit"):
        plan_descriptors(0, reserved=300, soft=256, hard=256)


def test_memory_ledger_room() -> None:
    ledger = MemoryLedger(total_limit=1000, per_connection_limit=600)
    assert ledger.room(held=0, read_size=256) == 256
    assert ledger.room(held=500, read_size=256) == 100  # up to the connection's bound
    ledger.take(900)
    assert ledger.room(held=0, read_size=256) == 100  # up to the total
    ledger.take(100)
    assert ledger.room(held=0, read_size=256) == 0  # wait
    ledger.give(1000)
    assert ledger.used == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WALPROXY_PROXY_MAX_CONNECTIONS": "-1"}, "proxy.max_connections: must not be negative"),
        (
            {"WALPROXY_PROXY_MAX_CONNECTIONS_PER_ADDRESS": "-5"},
            "proxy.max_connections_per_address: must not be negative",
        ),
        (
            {"WALPROXY_PROXY_MAX_BUFFERED_BYTES_PER_CONNECTION": "1048576"},
            r"proxy.max_buffered_bytes_per_connection: must hold one whole frame, at least "
            r"proxy.max_frame_bytes \+ 4 \(104857604\)",
        ),
        (
            {"WALPROXY_PROXY_MAX_BUFFERED_BYTES": "1048576"},
            r"proxy.max_buffered_bytes: must be at least proxy.max_buffered_bytes_per_connection",
        ),
    ],
)
def test_bad_limits_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, env=env)


# -- the budget on a real connection ---------------------------------------------------------


def _frame(correlation_id: int, body: int) -> bytes:
    """A request frame of ``body`` bytes after its header (an API key nobody knows)."""
    payload = struct.pack(">hhih", 31000, 0, correlation_id, -1) + b"x" * body
    return struct.pack(">i", len(payload)) + payload


def _settings(
    max_frame_bytes: int, budget: MemoryBudget | None = None, partial_frame_timeout_s: float = 30
) -> ConnectionSettings:
    return ConnectionSettings(
        max_frame_bytes=max_frame_bytes,
        max_in_flight=8,
        idle_timeout_s=30,
        partial_frame_timeout_s=partial_frame_timeout_s,
        memory=budget or MemoryBudget.unbounded(),
    )


async def _no_broker() -> trio.abc.Stream:
    raise AssertionError("nothing may be forwarded")


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = await stream.receive_some(n - len(got))
        assert chunk, "closed early"
        got += chunk
    return got


async def test_reads_stop_while_the_total_is_used_up_and_resume_when_forwarded() -> None:
    """Two connections share a total of 64 KiB: while one holds it all (its broker is not
    reading), the other reads nothing; once the first is forwarded, the second goes on."""
    frame_size = 40_000
    budget = MemoryBudget(total_limit=64 * 1024, per_connection_limit=64 * 1024)
    settings = _settings(60_000, budget)
    clients, brokers, conns = [], [], []
    for _ in range(2):
        # a real socket: the connection waits for bytes before taking room for them
        client_sock, proxy_sock = trio.socket.socketpair()
        client, proxy_side = trio.SocketStream(client_sock), trio.SocketStream(proxy_sock)
        upstream, broker = trio.testing.lockstep_stream_pair()  # nothing buffered upstream

        async def connect(upstream: trio.abc.Stream = upstream) -> trio.abc.Stream:
            return upstream

        clients.append(client)
        brokers.append(broker)
        conns.append(ProxyConnection(proxy_side, connect, settings))  # type: ignore[var-annotated]
    waits_before = metrics.READ_WAITS.labels("total")._value.get()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(conn.run)
            first = _frame(1, frame_size)
            await clients[0].send_all(first)
            await trio.sleep(0.2)
            assert budget.ledger.used == len(first)  # held: its broker reads nothing
            second = _frame(2, frame_size)
            await clients[1].send_all(second)
            await trio.sleep(0.2)
            # only what fits the total was read of the second frame, then reading stopped
            assert budget.ledger.used == 64 * 1024
            assert metrics.READ_WAITS.labels("total")._value.get() == waits_before + 1
            assert await _read_exactly(brokers[0], len(first)) == first  # forwarded
            assert await _read_exactly(brokers[1], len(second)) == second  # the other goes on
            await trio.sleep(0.1)
            assert budget.ledger.used == 0
            nursery.cancel_scope.cancel()
    assert budget.ledger.used == 0  # every connection gave back what it held


async def test_a_frame_over_max_frame_bytes_is_refused_and_holds_nothing() -> None:
    budget = MemoryBudget(total_limit=1 << 20, per_connection_limit=1 << 20)
    settings = _settings(1000, budget)
    client, proxy_side = trio.testing.memory_stream_pair()

    before = metrics.DECODE_ERRORS.labels("frame_too_large")._value.get()
    conn: ProxyConnection[object] = ProxyConnection(proxy_side, _no_broker, settings)  # type: ignore[type-var]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await client.send_all(struct.pack(">i", 1001) + b"x" * 100)
            assert await client.receive_some(1024) == b""  # closed
    assert metrics.DECODE_ERRORS.labels("frame_too_large")._value.get() == before + 1
    assert budget.ledger.used == 0


async def test_a_trickling_frame_is_closed_at_its_deadline_from_the_first_byte() -> None:
    """Slow loris: one byte at a time keeps each read short, but the frame's deadline runs
    from its first byte."""
    settings = _settings(1000, partial_frame_timeout_s=0.5)
    client, proxy_side = trio.testing.memory_stream_pair()
    before = metrics.DECODE_ERRORS.labels("partial_frame_timeout")._value.get()
    conn: ProxyConnection[object] = ProxyConnection(proxy_side, _no_broker, settings)  # type: ignore[type-var]
    frame = _frame(1, 100)
    start = trio.current_time()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            for byte in frame[:-1]:
                try:
                    await client.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    break
                await trio.sleep(0.05)  # ten times faster than the timeout, every time
            assert await client.receive_some(1024) == b""
    assert 0.5 <= trio.current_time() - start < 2.0
    assert metrics.DECODE_ERRORS.labels("partial_frame_timeout")._value.get() == before + 1


def test_a_connection_limit_the_descriptors_cannot_hold_stops_start_up(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--admin-listen", ""],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "WALPROXY_PROXY_MAX_CONNECTIONS": str(2**31),
            "WALPROXY_WAL_DIR": str(tmp_path / "wal"),
        },
    )
    assert out.returncode == 2, out.stderr
    assert "configuration error: proxy.max_connections: 2147483648 connections need" in out.stderr
    assert not (tmp_path / "wal").exists()  # stopped before opening anything


async def test_answers_a_client_does_not_read_stop_the_broker_reads_at_the_bound() -> None:
    """Responses read from the broker and not yet written are held to the per-connection
    bound: past it the proxy stops reading the broker, and goes on once the client reads."""
    bound = 64 * 1024
    settings = _settings(60_000, MemoryBudget(total_limit=bound, per_connection_limit=bound))
    client, proxy_side = trio.testing.lockstep_stream_pair()  # no buffer: a send waits
    upstream, broker = trio.testing.lockstep_stream_pair()

    async def connect() -> trio.abc.Stream:
        return upstream

    requests = [_frame(i, 10) for i in (1, 2, 3)]
    answers = [struct.pack(">ii", 4 + 40_000, i) + b"r" * 40_000 for i in (1, 2, 3)]
    waits_before = metrics.READ_WAITS.labels("responses")._value.get()
    conn: ProxyConnection[object] = ProxyConnection(proxy_side, connect, settings)  # type: ignore[type-var]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await client.send_all(b"".join(requests))
            assert await _read_exactly(broker, sum(map(len, requests))) == b"".join(requests)
            await broker.send_all(answers[0])  # read; waits to be written: the client is busy
            await broker.send_all(answers[1])  # read: 40 000 bytes held, under the bound
            third_read = trio.Event()

            async def send_third() -> None:
                await broker.send_all(answers[2])
                third_read.set()

            nursery.start_soon(send_third)
            await trio.sleep(0.5)
            assert not third_read.is_set(), "the proxy kept reading answers past the bound"
            assert metrics.READ_WAITS.labels("responses")._value.get() == waits_before + 1
            got = await _read_exactly(client, sum(map(len, answers)))  # the client reads
            assert got == b"".join(answers)  # all of them, in order
            nursery.cancel_scope.cancel()
