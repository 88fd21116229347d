"""The composition root: where walproxy's parts are put together, and the ``walproxy`` CLI.

What this package owns: :class:`~proxy.app.server.ProxyServer` (the sidecar and gateway
topologies, accept and drain), the ``walproxy`` command (:mod:`.cli`) and its subcommands
that run the offloader or a rebuild (:mod:`.offload_command`, :mod:`.rebuild_command`).
Only this package and the gateway's offloader import :mod:`offload`.
"""
