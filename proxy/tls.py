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
from pathlib import Path

import structlog
import trio

from .config import ConfigError, TlsSection

log = structlog.get_logger("walproxy.tls")

_CLIENT_AUTH = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


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


def server_context(t: TlsSection) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(t.listen_cert, t.listen_key)
    ctx.verify_mode = _CLIENT_AUTH[t.listen_client_auth]
    if t.listen_client_ca:
        ctx.load_verify_locations(cafile=t.listen_client_ca)
    return ctx


def client_context(t: TlsSection) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=t.upstream_ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = t.upstream_check_hostname
    if t.upstream_cert:
        ctx.load_cert_chain(t.upstream_cert, t.upstream_key or None)
    return ctx


def validate_tls(t: TlsSection) -> None:
    """Missing files, half-configured pairs, files that do not load: a ConfigError naming it."""
    if t.listen_client_auth not in _CLIENT_AUTH:
        raise ConfigError(
            f"tls.listen_client_auth: expected none, optional or required, got "
            f"{t.listen_client_auth!r}"
        )
    if t.reload_check_s <= 0:
        raise ConfigError(f"tls.reload_check_s: must be positive, got {t.reload_check_s}")
    files = {
        "tls.listen_cert": t.listen_cert,
        "tls.listen_key": t.listen_key,
        "tls.listen_client_ca": t.listen_client_ca,
        "tls.upstream_ca": t.upstream_ca,
        "tls.upstream_cert": t.upstream_cert,
        "tls.upstream_key": t.upstream_key,
    }
    for setting, path in files.items():
        if path and not Path(path).is_file():
            raise ConfigError(f"{setting}: file {path} does not exist")
    if bool(t.listen_cert) != bool(t.listen_key):
        raise ConfigError("tls.listen_key: tls.listen_cert and tls.listen_key go together")
    if t.listen_client_auth != "none" and not t.listen_client_ca:
        raise ConfigError("tls.listen_client_ca: needed when tls.listen_client_auth is not none")
    if (t.listen_client_ca or t.listen_client_auth != "none") and not t.listen_cert:
        raise ConfigError("tls.listen_cert: client certificates need TLS for clients")
    if t.upstream_key and not t.upstream_cert:
        raise ConfigError("tls.upstream_cert: tls.upstream_key is set without a certificate")
    if not t.upstream and (t.upstream_ca or t.upstream_cert):
        raise ConfigError("tls.upstream: upstream certificates are set but tls.upstream is false")
    try:
        if t.listen_cert:
            server_context(t)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls.listen_cert: cannot load certificate and key: {exc}") from None
    try:
        if t.upstream:
            client_context(t)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls.upstream_ca: cannot load the upstream TLS files: {exc}") from None


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
