"""walproxy's user-facing namespace (the proxy itself lives in ``proxy``, ``wal``, ``offload``).

:mod:`walproxy.testing` runs Kafka with a walproxy sidecar in containers for integration
tests (testcontainers).
"""
