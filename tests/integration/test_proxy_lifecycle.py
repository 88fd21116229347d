"""Process-level behaviour of ``walproxy run``: graceful drain, unreachable upstream, bad config."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kio.index import load_request_schema
from kio.static.primitive import i32, i64

from proxy.dev.cluster import DevCluster, ManagedProcess, free_port

from .rawkafka import RawConnection, metadata_frame, request_frame


@pytest.fixture
def extra_proxy(
    kafka: DevCluster, tmp_path: Path
) -> Iterator[Callable[..., tuple[ManagedProcess, str]]]:
    """Start another ``walproxy run`` in front of the shared broker (or any upstream)."""
    started: list[ManagedProcess] = []

    def start(upstream: str | None = None, *extra: str) -> tuple[ManagedProcess, str]:
        node = kafka.broker_nodes[0]
        port = free_port()
        proc = ManagedProcess(
            "walproxy-extra",
            [
                sys.executable,
                "-m",
                "proxy",
                "run",
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                upstream or f"127.0.0.1:{node.client_port}",
                "--admin-listen",
                "",
                *extra,
            ],
            tmp_path / f"walproxy-{port}.log",
            env={
                **os.environ,
                "WALPROXY_WAL_DIR": str(tmp_path / f"wal-{port}"),
                "WALPROXY_OFFLOAD_TARGET": f"file://{tmp_path / f'offload-{port}'}",
            },
        )
        proc.start()
        started.append(proc)
        kafka.wait_port(port)
        return proc, f"127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.kill()


def _slow_fetch(topic: str, correlation_id: int, wait_ms: int) -> bytes:
    """A Fetch the broker holds for ``wait_ms``: nothing to read, min_bytes not met."""
    schema = load_request_schema(1, 12)
    m = __import__(schema.__module__, fromlist=["x"])
    part = m.FetchPartition(partition=i32(0), fetch_offset=i64(0), partition_max_bytes=i32(1 << 20))
    return request_frame(
        1,
        12,
        correlation_id,
        max_wait=datetime.timedelta(milliseconds=wait_ms),
        min_bytes=i32(1 << 20),
        topics=(m.FetchTopic(topic=topic, partitions=(part,)),),
        forgotten_topics_data=(),
    )


def test_sigterm_drains_in_flight_requests(
    extra_proxy: Callable[..., tuple[ManagedProcess, str]], new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    proc, address = extra_proxy()
    with RawConnection(address, timeout=20) as conn:
        conn.send(metadata_frame(1))
        conn.recv_response(3, 12)
        conn.send(_slow_fetch(topic, 2, wait_ms=2000))
        time.sleep(0.3)  # the fetch is now parked in the broker
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        header, body = conn.recv_response(1, 12)  # still answered during the drain
        assert header.correlation_id == 2 and body.error_code == 0
        assert time.monotonic() - started > 1.0, "the fetch was not really in flight"
        assert conn.closed_by_peer(timeout=10)
    assert proc.proc is not None and proc.proc.wait(15) == 0
    with pytest.raises(OSError):
        RawConnection(address, timeout=2)


def test_unreachable_upstream_closes_clients_not_the_proxy(
    extra_proxy: Callable[..., tuple[ManagedProcess, str]],
) -> None:
    proc, address = extra_proxy(f"127.0.0.1:{free_port()}")  # nothing listens there
    for _ in range(3):
        with RawConnection(address) as conn:
            conn.send(metadata_frame(1))
            assert conn.closed_by_peer(timeout=15)
    assert proc.alive
    assert "cannot reach upstream broker" in proc.log_path.read_text()


def test_bad_configuration_stops_start_up(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[proxy]\nmax_in_flight = 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "proxy.max_in_flight: must be positive" in out.stderr
