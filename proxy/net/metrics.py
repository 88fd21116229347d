"""Prometheus metrics of client connections (the WAL, produce path, offloader own theirs).

Metric objects live at module level in the default registry, created once per process.
API keys are labelled by Kafka's API name (:func:`proxy.kafka.protocol.api_name`); keys kio
does not know share the label ``unknown`` so a client cannot blow up label cardinality.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Up to 30 s: a request's latency includes the broker's (a Fetch waits up to its max wait).
_LATENCY_BUCKETS: tuple[float, ...] = (5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.025, 0.05, 0.1)
_LATENCY_BUCKETS += (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "walproxy_requests_total", "Requests received from clients, per Kafka API.", ["api"]
)
REQUEST_LATENCY = Histogram(
    "walproxy_request_latency_seconds",
    "Time from a request's arrival to its response being written to the client.",
    ["api"],
    buckets=_LATENCY_BUCKETS,
)
BYTES_IN = Counter("walproxy_client_bytes_received_total", "Bytes received from clients.")
BYTES_OUT = Counter("walproxy_client_bytes_sent_total", "Bytes sent to clients.")
CONNECTIONS = Gauge("walproxy_client_connections_open", "Open client connections.")
CONNECTIONS_TOTAL = Counter(
    "walproxy_client_connections_accepted_total", "Client connections accepted."
)
IN_FLIGHT = Gauge("walproxy_in_flight_requests", "Requests forwarded and not yet answered.")
DECODE_ERRORS = Counter(
    "walproxy_decode_errors_total",
    "Connections closed because of bad bytes or protocol violations, by reason.",
    ["reason"],
)
UPSTREAM_ERRORS = Counter(
    "walproxy_upstream_errors_total", "Failures talking to the upstream broker, by kind.", ["kind"]
)
ENDPOINTS_WITHHELD = Counter(
    "walproxy_endpoints_withheld_total",
    "Broker endpoints withheld from clients because no walproxy address is known for them.",
)
CONNECTIONS_REFUSED = Counter(
    "walproxy_connections_refused_total",
    "Client connections refused at accept, by the limit they hit (max_connections, "
    "max_connections_per_address).",
    ["reason"],
)
BUFFERED_BYTES = Gauge(
    "walproxy_buffered_request_bytes",
    "Bytes read from clients and not yet forwarded (bounded by proxy.max_buffered_bytes).",
)
READ_WAITS = Counter(
    "walproxy_client_read_waits_total",
    "Times a connection stopped reading because a memory bound was used up (limit: "
    "connection or total, reading its client; responses, reading the broker's answers "
    "while its client does not read them).",
    ["limit"],
)
