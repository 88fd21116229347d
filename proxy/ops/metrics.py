"""Prometheus metrics of the process as a whole: readiness, draining, build, offloader restarts.

Connections (:mod:`proxy.net.metrics`), the produce path (:mod:`proxy.durable.metrics`), the
WAL (:mod:`wal.metrics`) and the offloader (:mod:`offload.metrics`) own theirs.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Info

READY = Gauge(
    "walproxy_ready", "1 when /readyz answers 200: WAL open and not fenced, broker reachable."
)
DRAINING = Gauge("walproxy_draining", "1 while draining after SIGTERM.")
UPSTREAM_UP = Gauge(
    "walproxy_upstream_up", "1 when the last TCP connect to the upstream broker succeeded."
)
BUILD = Info("walproxy_build", "walproxy version.")

OFFLOAD_RESTARTS = Counter(
    "walproxy_offload_restarts_total",
    "Offloader runs that failed unexpectedly and were restarted (the proxy went on).",
)
