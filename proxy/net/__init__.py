"""Client connections: one client paired with one upstream broker connection (trio).

What this package owns: :class:`ProxyConnection` (ordered response slots, bounded in-flight
requests, drain, response filters applied in place), the contract of a produce handler it
calls (:class:`ProduceHandler`) and the connection metrics (:mod:`.metrics`).
"""

from .connection import (
    ConnectionSettings,
    PreparedProduce,
    ProduceHandler,
    ProxyConnection,
    ResponseFilter,
)

__all__ = [
    "ConnectionSettings",
    "PreparedProduce",
    "ProduceHandler",
    "ProxyConnection",
    "ResponseFilter",
]
