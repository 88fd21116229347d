"""What an operator sees of a running walproxy: /healthz, /readyz, /status, ``walproxy status``,
the readiness metrics, and JSON log lines that say which connection and request they are about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.dev.cluster import DevCluster, ManagedProcess, free_port
from proxy.kafka.record_batch import build_batch

from .proxy_process import OwnProxy
from .rawkafka import RawConnection, metadata_frame, now_ms, produce_frame


def _status_cli(admin_port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "status",
            "--admin",
            f"http://127.0.0.1:{admin_port}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _wait_for_log(path: Path, event: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in _log_lines(path):
            if line.get("event") == event:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no {event!r} log line in {path}")


def test_status_of_a_ready_proxy(
    kafka: DevCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic()
    proxy = OwnProxy(kafka, tmp_path).start()
    try:
        proxy.wait_ready()
        with RawConnection(proxy.bootstrap) as conn:
            conn.send(produce_frame(topic, 0, [b"x" * 1000], acks=-1, correlation_id=7))
            body = conn.recv_response(0, 9)[1]
            assert body.responses[0].partition_responses[0].error_code == 0
        assert proxy.get("/healthz") == (200, "ok\n")
        assert proxy.get("/readyz") == (200, "ready\n")
        code, body = proxy.get("/status")
        assert code == 200
        status = json.loads(body)
        assert status["ready"] is True and status["upstream_reachable"] is True
        wal = status["wal"]
        assert wal["enabled"] and not wal["fenced"] and not wal["full"]
        assert wal["used_bytes"] >= 64 << 20  # one preallocated segment at least
        assert wal["capacity_bytes"] == 2 << 30  # wal.max_bytes, a whole number of segments
        assert wal["last_lsn"] >= 2  # the batch and its outcome
        offload = status["offload"]  # the sidecar offloads by default
        assert offload is not None and offload["fenced"] is False, offload
        assert isinstance(offload["partitions"], list)
        assert proxy.metric("walproxy_ready") == 1
        assert proxy.metric("walproxy_upstream_up") == 1
        assert proxy.metric("walproxy_wal_capacity_bytes") == 2 << 30

        out = _status_cli(proxy.admin_port)
        assert out.returncode == 0, out.stderr
        assert "ready:     yes (ready)" in out.stdout
        assert "upstream:  reachable" in out.stdout
        assert "of 2.0 GiB" in out.stdout and "not fenced" in out.stdout
        raw = json.loads(_status_cli(proxy.admin_port, "--json").stdout)
        assert raw.keys() == status.keys() and raw["wal"]["dir"] == str(proxy.wal_dir)

        # A corrupt batch: the log line names the connection, the peer, the API and request.
        batch = bytearray(build_batch([b"y"], timestamp_ms=now_ms()))
        batch[-1] ^= 0xFF
        with RawConnection(proxy.bootstrap) as conn:
            conn.send(metadata_frame(1))
            conn.recv_response(3, 12)
            conn.send(produce_frame(topic, 0, [], acks=-1, correlation_id=41, batch=bytes(batch)))
            conn.recv_response(0, 9)
            local_port = conn.sock.getsockname()[1]
        line = _wait_for_log(proxy.process.log_path, "refusing corrupt record batch")
        assert line["api"] == "Produce" and line["correlation_id"] == 41
        assert line["peer"] == f"127.0.0.1:{local_port}"
        assert isinstance(line["conn"], int) and line["level"] == "warning"
        assert "timestamp" in line
    finally:
        proxy.stop()


def _port_outside(*taken: int) -> int:
    """A free port p with p..p+2 clear of ``taken`` (a gateway's broker ports for 3 nodes)."""
    while True:
        p = free_port()
        if p < 65533 and not any(p <= t <= p + 2 for t in taken):
            return p


@pytest.mark.parametrize("mode", ["sidecar", "gateway"])
def test_not_ready_while_the_broker_is_unreachable(tmp_path: Path, mode: str) -> None:
    port, admin, nothing = free_port(), free_port(), free_port()  # nothing listens on `nothing`
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALPROXY_")}
    env["WALPROXY_OFFLOAD_TARGET"] = f"file://{tmp_path / 'offload'}"
    argv = [sys.executable, "-m", "proxy", "run", "--admin-listen", f"127.0.0.1:{admin}"]
    argv += ["--wal-dir", str(tmp_path / "wal"), "--log-format", "json"]
    if mode == "sidecar":
        argv += ["--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{nothing}"]
    else:  # the gateway probes its bootstrap brokers (two here, both down)
        env |= {
            "WALPROXY_GATEWAY_ENABLED": "true",
            "WALPROXY_GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "WALPROXY_GATEWAY_BROKER_PORT_BASE": str(_port_outside(port, admin)),
            "WALPROXY_GATEWAY_NODE_ID_RANGES": "1-3",
            "WALPROXY_GATEWAY_BOOTSTRAP_SERVERS": f"127.0.0.1:{nothing},127.0.0.1:{nothing}",
        }
    proc = ManagedProcess(f"walproxy-no-broker-{mode}", argv, tmp_path / "walproxy.log", env=env)
    proc.start()
    try:
        deadline = time.monotonic() + 30
        out = None
        while time.monotonic() < deadline:
            out = _status_cli(admin)
            if out.returncode != 3:  # 3: the endpoint is not up yet
                break
            time.sleep(0.2)
        assert out is not None and out.returncode == 1, (out, proc.tail())
        assert "ready:     NO (upstream broker unreachable" in out.stdout
        assert "upstream:  UNREACHABLE" in out.stdout
        # A client is closed, and the log line says which connection it was.
        with RawConnection(f"127.0.0.1:{port}") as conn:
            local_port = conn.sock.getsockname()[1]
            conn.send(metadata_frame(1))
            assert conn.closed_by_peer(timeout=15)
        line = _wait_for_log(proc.log_path, "cannot reach upstream broker; closing client")
        assert line["peer"] == f"127.0.0.1:{local_port}" and line["conn"] == 1
        assert proc.alive
    finally:
        proc.kill()
    assert _status_cli(admin).returncode == 3  # nothing answers now: exit 3, not a traceback
