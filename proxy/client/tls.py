"""TLS on both sides: terminated for clients, originated to brokers, reloaded on change.

:class:`ReloadingContext` builds an :class:`ssl.SSLContext` from certificate files and
rebuilds it when any of them changes (checked at most every ``reload_check_s``, when a new
connection asks for the context). Open connections keep the context they started with; a
file that does not load is logged and the previous context stays in use.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable

import structlog
import trio

from proxy.config.settings import TlsSection
from proxy.config.tls import client_context, server_context

log = structlog.get_logger("walproxy.tls")


def _stamp(paths: list[str]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class ReloadingContext:
    def __init__(
        self, build: Callable[[], ssl.SSLContext], paths: list[str], check_every_s: float
    ) -> None:
        self._build = build
        self._paths = [p for p in paths if p]
        self._every = check_every_s
        self._stamp = _stamp(self._paths)
        self._context = build()
        self._checked = time.monotonic()
        self.reloads = 0

    def get(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked >= self._every:
            self._checked = now
            try:
                stamp = _stamp(self._paths)
                if stamp != self._stamp:
                    self._context = self._build()
                    self._stamp = stamp
                    self.reloads += 1
                    log.info("TLS files changed; new connections use them", files=self._paths)
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.error("cannot reload TLS files; keeping the previous ones", error=str(exc))
        return self._context


class Tls:
    """The TLS halves a server needs; either may be absent (plaintext on that side)."""

    def __init__(self, t: TlsSection) -> None:
        self.for_clients = (
            ReloadingContext(
                lambda: server_context(t),
                [t.listen_cert, t.listen_key, t.listen_client_ca],
                t.reload_check_s,
            )
            if t.listen_cert
            else None
        )
        self.to_brokers = (
            ReloadingContext(
                lambda: client_context(t),
                [t.upstream_ca, t.upstream_cert, t.upstream_key],
                t.reload_check_s,
            )
            if t.upstream
            else None
        )

    async def accept(self, stream: trio.abc.Stream, timeout: float) -> trio.abc.Stream:
        """The client stream, TLS-terminated when configured (handshake done)."""
        if self.for_clients is None:
            return stream
        tls = trio.SSLStream(stream, self.for_clients.get(), server_side=True)
        with trio.fail_after(timeout):
            await tls.do_handshake()
        return tls

    async def connect(self, stream: trio.abc.Stream, host: str, timeout: float) -> trio.abc.Stream:
        """The upstream stream, TLS-originated when configured (handshake done)."""
        if self.to_brokers is None:
            return stream
        tls = trio.SSLStream(stream, self.to_brokers.get(), server_hostname=host)
        with trio.fail_after(timeout):
            await tls.do_handshake()
        return tls
