"""Accepting clients: each accepted socket gets TLS (if configured) and a
:class:`~proxy.net.connection.ProxyConnection`, which dials its upstream connection on the
client's first request; draining stops them all gracefully."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any

import structlog
import trio

from proxy.client.dialer import Dialer
from proxy.gateway import Targets
from proxy.net import metrics
from proxy.net.connection import (
    ConnectionSettings,
    Gate,
    ProduceHandler,
    ProxyConnection,
    UpstreamUnavailable,
)
from proxy.net.limits import ConnectionLimits, RefusalLog

log = structlog.get_logger("walproxy.server")

_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class Connections:
    """The open client connections of one server, and the accept loops that make them."""

    def __init__(
        self,
        settings: ConnectionSettings,
        dialer: Dialer,
        *,
        produce: Callable[[], ProduceHandler[Any] | None],
        upstream_trouble: Callable[[], None],
        limits: ConnectionLimits,
        commits: Callable[[], ProduceHandler[Any] | None] = lambda: None,
        end_txn: Callable[[], ProduceHandler[Any] | None] = lambda: None,
        group_gate: Callable[[], Gate | None] = lambda: None,
        repair_gate: Callable[[], Gate | None] = lambda: None,
    ) -> None:
        """``produce()``: the produce handler (None without a WAL); ``commits()``: the offset
        commit handler (likewise); ``end_txn()``: the EndTxn handler (likewise);
        ``group_gate()``: where group APIs wait while committed offsets are restored
        (likewise); ``repair_gate()``: where OffsetForLeaderEpoch waits while lost batches are
        restored (likewise); ``upstream_trouble()``:
        a broker could not be reached or dropped a connection (the reconciler checks it);
        ``limits``: how many connections are admitted, in total and per client address."""
        self._settings = settings
        self.limits = limits
        self._refusals = RefusalLog()
        self._dialer = dialer
        self._produce = produce
        self._commits = commits
        self._end_txn = end_txn
        self._group_gate = group_gate
        self._repair_gate = repair_gate
        self._upstream_trouble = upstream_trouble
        self.open: set[ProxyConnection[Any]] = set()
        self._ids = 0
        self._none_open = trio.Event()
        self._none_open.set()
        self.draining = False

    async def accept_loop(
        self, listener: trio.SocketListener, nursery: trio.Nursery, targets: Targets
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    log.error("accept failed; retrying", error=str(exc))
                    await trio.sleep(0.1)
                    continue
                raise
            host = _peer_host(stream)
            refused = self.limits.admit(host)
            if refused is not None:
                await self._refuse(stream, host, refused)
                continue
            nursery.start_soon(self._serve_client, stream, targets, host)

    async def _refuse(self, stream: trio.SocketStream, host: str, reason: str) -> None:
        """Close a connection over a limit at once: it never costs more than this."""
        metrics.CONNECTIONS_REFUSED.labels(reason).inc()
        await trio.aclose_forcefully(stream)
        count = self._refusals.refused(reason, trio.current_time())
        if count:
            lim = self.limits
            log.warning(
                "connection refused: limit reached",
                reason=reason,
                limit=lim.max_connections if reason == "max_connections" else lim.per_address,
                setting=f"proxy.{reason}",
                peer=host,
                open=lim.open,
                from_peer=lim.from_address(host),
                refused=count,  # since the last such line (at most one a second)
            )

    async def drain(self, timeout_s: float) -> None:
        """Let every connection finish what it has in flight, at most ``timeout_s``."""
        self.draining = True
        log.info("draining", connections=len(self.open), timeout_s=timeout_s)
        for conn in list(self.open):
            conn.drain()
        with trio.move_on_after(timeout_s) as scope:
            await self._none_open.wait()
        if scope.cancelled_caught:
            log.warning(
                "drain timed out; closing remaining connections", connections=len(self.open)
            )

    async def _serve_client(
        self, socket_stream: trio.SocketStream, targets: Targets, host: str
    ) -> None:
        try:
            await self._serve_admitted(socket_stream, targets)
        finally:
            self.limits.release(host)

    async def _serve_admitted(self, socket_stream: trio.SocketStream, targets: Targets) -> None:
        try:
            peer = "%s:%d" % socket_stream.socket.getpeername()[:2]
        except OSError:
            peer = "?"
        metrics.CONNECTIONS_TOTAL.inc()
        # Every log line of this connection's tasks (trio gives each task a copy of its
        # parent's context) carries which connection it is about.
        self._ids += 1
        structlog.contextvars.bind_contextvars(conn=self._ids, peer=peer)
        client: trio.abc.Stream = socket_stream
        try:
            client = await self._dialer.tls.accept(socket_stream, self._dialer.connect_timeout_s)
        except (trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
            metrics.DECODE_ERRORS.labels("tls_handshake").inc()
            log.warning("TLS handshake with client failed", peer=peer, error=_cause(exc))
            await trio.aclose_forcefully(socket_stream)
            return
        produce = self._produce()
        conn: ProxyConnection[Any] = ProxyConnection(
            client,
            functools.partial(self._dial_upstream, targets, peer),
            self._settings,
            produce=produce,
            commits=self._commits(),
            end_txn=self._end_txn(),
            peer=peer,
            on_upstream_lost=self._upstream_trouble if produce is not None else None,
            group_gate=self._group_gate(),
            repair_gate=self._repair_gate(),
        )
        self.open.add(conn)
        self._none_open = trio.Event() if len(self.open) == 1 else self._none_open
        metrics.CONNECTIONS.inc()
        try:
            if self.draining:
                conn.drain()
            await conn.run()
        finally:
            metrics.CONNECTIONS.dec()
            self.open.discard(conn)
            if not self.open:
                self._none_open.set()

    async def _dial_upstream(self, targets: Targets, peer: str) -> trio.abc.Stream:
        """The connection's broker stream, dialled on its first request: the first of
        ``targets()`` (as known now) that answers."""
        error = "no broker address known"
        tried = targets()
        for address in tried:
            try:
                return await self._dialer.dial(address)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                error = _cause(exc)
        metrics.UPSTREAM_ERRORS.labels("connect").inc()
        self._upstream_trouble()
        log.warning(
            "cannot reach upstream broker; closing client",
            peer=peer,
            upstream=",".join("%s:%d" % a for a in tried),
            error=error,
        )
        raise UpstreamUnavailable(error)


def _peer_host(stream: trio.SocketStream) -> str:
    """The client's IP address (what the per-address limit counts)."""
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "?"


def _cause(exc: BaseException) -> str:
    """The useful part of a (TLS) connection error: trio wraps ssl errors."""
    cause = exc.__cause__ or exc.__context__
    return str(cause or exc) or type(exc).__name__
