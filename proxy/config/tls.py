"""The TLS settings' checks and the SSL contexts they describe (plain functions, no I/O loop).

:func:`validate_tls` runs when the configuration loads, so a missing or unloadable file stops
start-up naming the setting; :mod:`proxy.client.tls` builds (and reloads) the same contexts
for connections.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from proxy.config.settings import ConfigError, TlsSection

_CLIENT_AUTH = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


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
