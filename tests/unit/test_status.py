"""/status's offload part read from a Prometheus registry, and ``walproxy status``'s text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from proxy.ops.status import offload_from_registry, render


def test_no_offloader_metrics_means_no_offload_section() -> None:
    registry = CollectorRegistry()
    Gauge("walproxy_wal_used_bytes", "x", registry=registry).set(1)
    assert offload_from_registry(registry.collect()) is None


def test_offload_lag_per_partition_from_the_offloaders_metric_names() -> None:
    registry = CollectorRegistry()
    lag = {
        unit: Gauge(f"walproxy_offload_lag_{unit}", "x", ["topic", "partition"], registry=registry)
        for unit in ("offsets", "bytes", "seconds")
    }
    fenced = Gauge("walproxy_offload_fenced", "x", registry=registry)
    for partition, (offsets, seconds) in {"10": (5, 0.5), "2": (100, 3.0)}.items():
        lag["offsets"].labels("orders", partition).set(offsets)
        lag["bytes"].labels("orders", partition).set(offsets * 100)
        lag["seconds"].labels("orders", partition).set(seconds)
    got = offload_from_registry(registry.collect())
    assert got == {
        "fenced": False,
        "max_lag_seconds": 3.0,
        "partitions": [  # numeric partition order
            {
                "topic": "orders",
                "partition": "2",
                "lag_offsets": 100,
                "lag_bytes": 10000,
                "lag_seconds": 3.0,
            },
            {
                "topic": "orders",
                "partition": "10",
                "lag_offsets": 5,
                "lag_bytes": 500,
                "lag_seconds": 0.5,
            },
        ],
    }
    fenced.set(1)
    assert offload_from_registry(registry.collect())["fenced"] is True  # type: ignore[index]


def _status(**over: object) -> dict:
    base = {
        "version": "0.1.0",
        "node_id": 0,
        "listen": "0.0.0.0:9092",
        "upstream": "127.0.0.1:19092",
        "ready": True,
        "ready_reason": "ready",
        "draining": False,
        "upstream_reachable": True,
        "connections": 3,
        "wal": {
            "enabled": True,
            "dir": "/var/lib/walproxy/wal",
            "used_bytes": 512 << 20,
            "capacity_bytes": 2 << 30,
            "segments": 8,
            "fenced": False,
            "full": False,
            "direct_io": True,
            "first_lsn": 10,
            "last_lsn": 99,
            "in_doubt_batches": 0,
        },
        "offload": None,
    }
    return base | over


def test_render_ready_instance() -> None:
    text = render(_status())
    assert "ready:     yes (ready)" in text
    assert "WAL:       512.0 MiB of 2.0 GiB (25%) in 8 segment(s) at /var/lib/walproxy/wal" in text
    assert "not fenced, Direct IO; lsn 10..99" in text
    assert "offload:   no offloader metrics in this process" in text


def test_render_names_a_gateway_by_its_mode() -> None:
    text = render(_status(mode="gateway", listen="0.0.0.0:19000", upstream="b1:9092,b2:9092"))
    assert text.splitlines()[0] == (
        "walproxy 0.1.0  gateway  listen 0.0.0.0:19000 -> upstream b1:9092,b2:9092"
    )
    assert render(_status(mode="sidecar")).startswith("walproxy 0.1.0  node 0  listen")


def test_render_a_wal_trimmed_to_empty() -> None:
    wal = _status()["wal"] | {"first_lsn": 100, "last_lsn": 99}
    assert "Direct IO; empty (trimmed; next lsn 100)" in render(_status(wal=wal))


def test_render_shows_trouble_loudly() -> None:
    wal = _status()["wal"] | {"fenced": True, "full": True, "direct_io": False}
    text = render(
        _status(
            ready=False,
            ready_reason="WAL fenced after an I/O error",
            upstream_reachable=False,
            draining=True,
            wal=wal,
            offload={
                "fenced": True,
                "max_lag_seconds": 42.0,
                "partitions": [
                    {
                        "topic": "t",
                        "partition": str(p),
                        "lag_offsets": p,
                        "lag_bytes": 0,
                        "lag_seconds": float(p),
                    }
                    for p in range(30)
                ],
            },
        )
    )
    assert "ready:     NO (WAL fenced after an I/O error)" in text
    assert "upstream:  UNREACHABLE" in text and "DRAINING" in text
    assert "FENCED, buffered + fdatasync (no O_DIRECT), FULL: produce requests wait" in text
    assert "offload:   30 partition(s), max lag 42.0 s  FENCED" in text
    assert "t-29: lag 29 offsets / 0 B / 29.0 s" in text.splitlines()[8]  # worst first
    assert "... 10 more" in text


def test_render_labels_the_lag_and_shows_the_offloaded_end_offset() -> None:
    # Right after five records were offloaded: nothing lags, and the line says how far S3 is.
    row = {"topic": "demo", "partition": "0", "lag_offsets": 0.0, "lag_bytes": 0.0}
    offload = {"fenced": False, "max_lag_seconds": 0.0, "partitions": [row]}
    text = render(_status(offload=offload | {"partitions": [row | {"offloaded_offset": 5.0}]}))
    assert "           demo-0: offloaded up to 5, lag 0 offsets / 0 B / 0.0 s" in text.splitlines()
    # An older process exports no offloaded offset: the lag alone, still labelled.
    text = render(_status(offload=offload | {"partitions": [row | {"lag_seconds": 1.25}]}))
    assert "           demo-0: lag 0 offsets / 0 B / 1.2 s" in text.splitlines()


def test_offloaded_offset_is_read_beside_the_lag() -> None:
    registry = CollectorRegistry()
    Gauge("walproxy_offload_lag_offsets", "x", ["topic", "partition"], registry=registry).labels(
        "demo", "0"
    ).set(0)
    Gauge(
        "walproxy_offload_offloaded_offset", "x", ["topic", "partition"], registry=registry
    ).labels("demo", "0").set(5)
    got = offload_from_registry(registry.collect())
    assert got is not None
    assert got["partitions"] == [
        {"topic": "demo", "partition": "0", "lag_offsets": 0, "offloaded_offset": 5}
    ]


def test_render_without_wal() -> None:
    assert "WAL:       disabled (acknowledgements are NOT durable)" in render(
        _status(wal={"enabled": False})
    )
