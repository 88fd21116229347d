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


def admin_get(admin_port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    """Status and body of one admin endpoint (``/readyz`` answers 503 when not ready)."""
    url = f"http://{host}:{admin_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
