"""The composition root: where walproxy's parts are put together, and the ``walproxy`` CLI.

What this package owns: :class:`~proxy.app.server.ProxyServer` (``walproxy run``: parts
wired, readiness, ``/status``), the two topologies (:mod:`.topology`: sidecar and gateway),
accepting and draining clients (:mod:`.accept`), offloader supervision (:mod:`.supervise`),
settings turned into parts (:mod:`.wiring`: the configured WAL, walproxy's own clients), the
``walproxy`` command (:mod:`.cli`) and its subcommands that run the offloader or a rebuild
(:mod:`.offload_command`, :mod:`.rebuild_command`). Only this package, the gateway's
offloader and the config layer (offload's own section) import :mod:`offload`.
"""

from .server import ProxyServer

__all__ = ["ProxyServer"]
