"""Kafka with a walproxy sidecar in containers, for your integration tests (testcontainers).

    from walproxy.testing import KafkaWithWalproxy

    with KafkaWithWalproxy().with_wal_dir(tmp_path / "wal") as kafka:
        producer = Producer({"bootstrap.servers": kafka.get_bootstrap_server()})

The pair is laid out as in deploy/docker-compose.yml and the Helm chart: walproxy shares the
broker container's network namespace, the broker's client listener is on loopback there, and
the only published Kafka port is walproxy's, so every client connection (bootstrap, metadata,
coordinators) goes through the sidecar and every acknowledged produce is in its WAL first.
``start()`` returns once walproxy answers a Kafka ApiVersions request from the host and its
``/readyz`` says 200 (a TCP connect alone proves nothing behind Docker's port forwarder).

Needs ``pip install walproxy[testing]`` (testcontainers) and a Docker engine. On machines
that cannot pull testcontainers' reaper image or that run the tests inside a container,
set ``TESTCONTAINERS_RYUK_DISABLED=true`` / ``TESTCONTAINERS_CONNECTION_MODE=docker_host``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from walproxy.testing.probe import wait_for_kafka

__all__ = ["KafkaWithWalproxy"]

KAFKA_IMAGE = "apache/kafka:4.1.1"
WALPROXY_IMAGE = "walproxy:0.1.0"
WALPROXY_UID = 10001  # deploy/Dockerfile's user
_WAL_IN_CONTAINER = "/var/lib/walproxy/wal"
_OFFLOAD_IN_CONTAINER = "/var/lib/walproxy/offload"
_UPSTREAM = "127.0.0.1:19092"  # the broker's loopback-only client listener


def _kafka_env() -> dict[str, str]:
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENERS": f"CLIENT://{_UPSTREAM},CONTROLLER://:9093",
        # walproxy hands clients its own (published) address in place of this one
        "KAFKA_ADVERTISED_LISTENERS": f"CLIENT://{_UPSTREAM}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "CLIENT",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        # One partition each, as testcontainers' own Kafka modules set it: a test's first
        # group or transaction does not wait for 50 coordinator partitions to load.
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


def _writable_by_walproxy(directory: Path) -> Path:
    """The image runs as uid 10001; as root, hand it the directory (else run as the user)."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.chown(directory, WALPROXY_UID, WALPROXY_UID)
    return directory


class KafkaWithWalproxy:
    """A single-node KRaft Kafka and its walproxy sidecar; a context manager."""

    def __init__(
        self, kafka_image: str = KAFKA_IMAGE, walproxy_image: str = WALPROXY_IMAGE
    ) -> None:
        self.kafka_image = kafka_image
        self.walproxy_image = walproxy_image
        self._env: dict[str, str] = {}
        self._volumes: dict[str, str] = {}
        self._kafka: Any = None
        self._walproxy: Any = None

    # -- configuration ------------------------------------------------------------------
    def with_wal_dir(self, path: str | os.PathLike[str]) -> Self:
        """Keep the WAL in this host directory (to inspect it, or across restarts)."""
        self._volumes[str(_writable_by_walproxy(Path(path)))] = _WAL_IN_CONTAINER
        return self

    def with_offload_to(self, target: str | os.PathLike[str], **settings: str) -> Self:
        """Offload to ``s3://bucket/prefix`` (``settings``: ``s3_endpoint_url``,
        ``s3_region``, ``AWS_ACCESS_KEY_ID``, ...) or to a host directory (a path)."""
        text = os.fspath(target)
        if text.startswith("s3://"):
            self._env["WALPROXY_OFFLOAD_TARGET"] = text
        else:
            host = _writable_by_walproxy(Path(text.removeprefix("file://")))
            self._volumes[str(host)] = _OFFLOAD_IN_CONTAINER
            self._env["WALPROXY_OFFLOAD_TARGET"] = f"file://{_OFFLOAD_IN_CONTAINER}"
        for key, value in settings.items():
            name = key if key.isupper() else f"WALPROXY_OFFLOAD_{key.upper()}"
            self._env[name] = value
        return self

    def with_env(self, key: str, value: str) -> Self:
        """Any walproxy setting by its environment variable (docs/configuration.md)."""
        self._env[key] = value
        return self

    # -- use --------------------------------------------------------------------------
    def get_bootstrap_server(self) -> str:
        """``host:port`` of walproxy, the only Kafka address clients need."""
        return f"{self._host()}:{self._port(9092)}"

    def get_admin_url(self) -> str:
        """walproxy's /metrics, /healthz, /readyz and /status."""
        return f"http://{self._host()}:{self._port(9644)}"

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.get_admin_url()}/status", timeout=5) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer

    # -- life cycle -------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> Self:
        from testcontainers.core.container import DockerContainer

        kafka = DockerContainer(self.kafka_image).with_exposed_ports(9092, 9644)
        for key, value in _kafka_env().items():
            kafka.with_env(key, value)
        self._kafka = kafka.start()
        try:
            walproxy = DockerContainer(self.walproxy_image).with_kwargs(
                network_mode=f"container:{self._kafka.get_wrapped_container().id}",
                **({} if os.getuid() == 0 else {"user": f"{os.getuid()}:{os.getgid()}"}),
            )
            settings = {
                "WALPROXY_PROXY_LISTEN": "0.0.0.0:9092",
                "WALPROXY_PROXY_ADVERTISED": self.get_bootstrap_server(),
                "WALPROXY_PROXY_UPSTREAM": _UPSTREAM,
                "WALPROXY_PROXY_NODE_ID": "1",
                "WALPROXY_ADMIN_LISTEN": "0.0.0.0:9644",
                "WALPROXY_OFFLOAD_ENABLED": "true"
                if "WALPROXY_OFFLOAD_TARGET" in self._env
                else "false",
                **self._env,
            }
            for key, value in settings.items():
                walproxy.with_env(key, value)
            for host, inside in self._volumes.items():
                walproxy.with_volume_mapping(host, inside, "rw")
            self._walproxy = walproxy.with_command("run").start()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for container in (self._walproxy, self._kafka):
            if container is not None:
                container.stop()
        self._walproxy = self._kafka = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------
    def _host(self) -> str:
        if self._kafka is None:
            raise RuntimeError("KafkaWithWalproxy is not started")
        return str(self._kafka.get_container_host_ip())

    def _port(self, port: int) -> int:
        return int(self._kafka.get_exposed_port(port))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        wait_for_kafka(self._host(), self._port(9092), timeout)
        while True:
            try:
                with urllib.request.urlopen(f"{self.get_admin_url()}/readyz", timeout=5):
                    return
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() > deadline:
                    logs = self._walproxy.get_logs()[1].decode()[-2000:]
                    msg = f"walproxy not ready after {timeout}s: {exc}\n{logs}"
                    raise TimeoutError(msg) from exc
                time.sleep(0.5)
