"""walproxy's configuration: the schema of every section, loading, validation, the reference.

This package owns the TOML file's shape and its checks, and nothing that runs: sections are
frozen dataclasses whose fields carry their one-line docs (:mod:`.settings`; ``[offload]``
is declared by :mod:`offload.config`), :func:`load` reads a file, applies
``WALPROXY_<SECTION>_<KEY>`` overrides and validates (:mod:`.loader`), a
misconfiguration raises :class:`ConfigError` naming the setting. Also here: the gateway's
port plan that its settings imply (:mod:`.gateway`), the TLS files' checks and contexts
(:mod:`.tls`), the flags of ``walproxy run`` (:mod:`.flags`) and the generated reference
``docs/configuration.md`` (:mod:`.doc`: ``python -m proxy.config.doc``).
"""

from offload.config import OffloadSection

from .flags import RUN_FLAGS
from .loader import load, validate
from .settings import (
    AdminSection,
    Config,
    ConfigError,
    GatewaySection,
    LogSection,
    ProxySection,
    SaslSection,
    TlsSection,
    WalSection,
    masked,
    parse_address,
)
from .settings import _doc as setting

__all__ = [
    "RUN_FLAGS",
    "AdminSection",
    "Config",
    "ConfigError",
    "GatewaySection",
    "LogSection",
    "OffloadSection",
    "ProxySection",
    "SaslSection",
    "TlsSection",
    "WalSection",
    "load",
    "masked",
    "parse_address",
    "setting",
    "validate",
]
