"""Limits a hostile or buggy client cannot exceed (issue 15, item 4), on a real walproxy
process in front of the shared broker.

Thousands of idle connections, slow-loris connections (a frame trickling in a byte at a
time) and half-sent frames from two client addresses: the proxy keeps serving a real client
(confluent-kafka produce + consume), idle connections cost it one descriptor each and the
broker nothing, its RSS stays bounded, connections over ``proxy.max_connections`` and
``proxy.max_connections_per_address`` are refused at accept and counted, and the started
frames are closed at their deadline. A second proxy with no fixed limits is the negative
control: the same crowd is all accepted and nothing is counted as refused.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from proxy.dev.cluster import DevCluster

from . import clients as c
from .proxy_process import OwnProxy

pytestmark = pytest.mark.kafka

MAX_CONNECTIONS = 2000
PER_ADDRESS = 1500
PARTIAL_FRAME_TIMEOUT_S = 12
IDLE_A = PER_ADDRESS  # from 127.0.0.2: fills its address
IDLE_B, LORIS, HALF = 200, 100, 100  # from 127.0.0.3
HOSTILE = IDLE_A + IDLE_B + LORIS + HALF
HALF_SENT_BYTES = 64 * 1024  # of a 100 000-byte frame

OPEN = "walproxy_client_connections_open"
REFUSED = "walproxy_connections_refused_total"


def _connect(n: int, source: str, port: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def _refused(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the proxy closed ``sock`` at once (an accepted idle one stays open)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _wait_metric(proxy: OwnProxy, name: str, want: float, timeout: float = 20.0) -> None:
    c.wait_until(lambda: proxy.metric(name) == want, timeout, f"{name} == {want}")


def _upstream_connections(pid: int, broker_port: int) -> int:
    return sum(
        1
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == broker_port
    )


class _Loris:
    """Sends one byte of a started frame to each socket every second, until stopped."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.socks = socks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        frame = struct.pack(">i", 1000) + b"\x00" * 1000
        sent = 0
        while not self._stop.wait(1.0) and sent < len(frame):
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.send(frame[sent : sent + 1])
            sent += 1

    def __enter__(self) -> _Loris:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def own_proxy(kafka: DevCluster, tmp_path: Path) -> Iterator[Callable[..., OwnProxy]]:
    started: list[OwnProxy] = []

    def start(**env: str) -> OwnProxy:
        proxy = OwnProxy(
            kafka,
            tmp_path / f"proxy-{len(started)}",
            WALPROXY_OFFLOAD_ENABLED="false",
            **env,
        ).start()
        started.append(proxy)
        proxy.wait_ready()
        return proxy

    yield start
    for proxy in started:
        proxy.kill()


def test_hostile_connections_are_bounded_and_a_real_client_is_served(
    kafka: DevCluster, own_proxy: Callable[..., OwnProxy], new_topic: Callable[..., str]
) -> None:
    started = time.monotonic()
    topic = new_topic()
    proxy = own_proxy(
        WALPROXY_PROXY_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        WALPROXY_PROXY_MAX_CONNECTIONS_PER_ADDRESS=str(PER_ADDRESS),
        WALPROXY_PROXY_PARTIAL_FRAME_TIMEOUT_S=str(PARTIAL_FRAME_TIMEOUT_S),
    )
    pid, broker_port = proxy.process.pid, kafka.broker_nodes[0].client_port
    proc = psutil.Process(pid)
    rss0, fds0 = proc.memory_info().rss, proc.num_fds()
    upstream0 = _upstream_connections(pid, broker_port)
    socks: list[socket.socket] = []
    try:
        # -- the crowd: idle, slow-loris, half-sent frames -----------------------------------
        socks += _connect(IDLE_A, "127.0.0.2", proxy.port)
        socks += _connect(IDLE_B, "127.0.0.3", proxy.port)
        loris = _connect(LORIS, "127.0.0.3", proxy.port)
        half = _connect(HALF, "127.0.0.3", proxy.port)
        socks += loris + half
        frame_start = time.monotonic()
        for s in half:
            s.sendall(struct.pack(">i", 100_000) + b"\x00" * HALF_SENT_BYTES)
        with _Loris(loris):
            _wait_metric(proxy, OPEN, HOSTILE)
            c.wait_until(
                lambda: proxy.metric("walproxy_buffered_request_bytes")
                >= HALF * (HALF_SENT_BYTES + 4),
                10,
                "the half-sent frames' bytes are counted",
            )
            buffered = proxy.metric("walproxy_buffered_request_bytes")
            assert buffered < HALF * (HALF_SENT_BYTES + 4) + LORIS * 1004 + 1  # nothing else
            rss1, fds1 = proc.memory_info().rss, proc.num_fds()
            upstream1 = _upstream_connections(pid, broker_port)

            # -- over the limits: refused at accept, counted ----------------------------------
            over_address = _connect(50, "127.0.0.2", proxy.port)
            socks += over_address
            assert all(_refused(s) for s in over_address)
            assert proxy.metric(f'{REFUSED}{{reason="max_connections_per_address"}}') == 50
            fill = _connect(MAX_CONNECTIONS - HOSTILE, "127.0.0.4", proxy.port)
            _wait_metric(proxy, OPEN, MAX_CONNECTIONS)
            over_total = _connect(50, "127.0.0.4", proxy.port)
            assert all(_refused(s) for s in over_total)
            assert proxy.metric(f'{REFUSED}{{reason="max_connections"}}') == 50
            assert not any(_refused(s, timeout=0.01) for s in fill[:20])  # those stay open
            for s in fill + over_total:
                s.close()
            _wait_metric(proxy, OPEN, HOSTILE)

            # -- a real client is served meanwhile --------------------------------------------
            client_start = time.monotonic()
            msgs = c.messages(200, topic)
            c.confluent_produce(proxy.bootstrap, topic, msgs, acks="all")
            seen = c.confluent_consume(proxy.bootstrap, topic, len(msgs))
            c.assert_contents(seen, msgs, "through a proxy holding 1900 hostile connections")
            client_s = time.monotonic() - client_start
            served_after_s = time.monotonic() - frame_start
            assert served_after_s < PARTIAL_FRAME_TIMEOUT_S, "too slow to see the frames open"

        # -- started frames are closed at their deadline, from their first byte ---------------
        c.wait_until(
            lambda: proxy.metric('walproxy_decode_errors_total{reason="partial_frame_timeout"}')
            == LORIS + HALF,
            PARTIAL_FRAME_TIMEOUT_S + 10,
            "slow-loris and half-sent frames closed",
        )
        assert all(_refused(s, timeout=1) for s in loris + half)
        assert time.monotonic() - frame_start >= PARTIAL_FRAME_TIMEOUT_S
        _wait_metric(proxy, OPEN, IDLE_A + IDLE_B)
        _wait_metric(proxy, "walproxy_buffered_request_bytes", 0)
        rss2, fds2 = proc.memory_info().rss, proc.num_fds()
    finally:
        for s in socks:
            s.close()
    mib = 1024 * 1024
    print(
        f"\nlimits: {HOSTILE} hostile connections held; RSS {rss0 / mib:.0f} -> "
        f"{rss1 / mib:.0f} MiB at peak ({(rss1 - rss0) / HOSTILE / 1024:.1f} KiB each), "
        f"{rss2 / mib:.0f} MiB after; fds {fds0} -> {fds1} -> {fds2}; broker connections "
        f"{upstream0} -> {upstream1}; request bytes held at peak {buffered / mib:.1f} MiB; "
        f"real client produce+consume {client_s:.1f}s (done {served_after_s:.1f}s after the "
        f"crowd's frames started); whole test "
        f"{time.monotonic() - started:.1f}s"
    )
    # one descriptor per client connection, none towards the broker for silent clients
    assert fds1 - fds0 <= HOSTILE + 10, (fds0, fds1)
    assert upstream1 <= upstream0 + 2, (upstream0, upstream1)  # none per silent connection
    assert rss1 - rss0 < 150 * mib, (rss0, rss1)


def test_negative_control_without_fixed_limits_nothing_is_refused(
    own_proxy: Callable[..., OwnProxy],
) -> None:
    """The same crowd from one address against a proxy with no fixed limits (0: fitted to
    the open-file limit; no per-address limit): all accepted, the refused counter stays 0."""
    proxy = own_proxy(
        WALPROXY_PROXY_MAX_CONNECTIONS="0", WALPROXY_PROXY_MAX_CONNECTIONS_PER_ADDRESS="0"
    )
    socks = _connect(PER_ADDRESS + 50, "127.0.0.2", proxy.port)
    try:
        _wait_metric(proxy, OPEN, PER_ADDRESS + 50)
        assert not any(_refused(s, timeout=0.01) for s in socks[-50:])
        assert proxy.metric(REFUSED) == 0
    finally:
        for s in socks:
            s.close()
