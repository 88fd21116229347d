"""Reading a walproxy's Prometheus endpoint from tests."""

from __future__ import annotations

import urllib.request


def metric(admin_port: int, name: str, host: str = "127.0.0.1") -> float:
    """The sum of every sample whose line starts with ``name`` (a metric, or one series)."""
    url = f"http://{host}:{admin_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )
