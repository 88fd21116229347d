"""deploy/docker-compose.yml started for real: Kafka, the walproxy sidecar and an S3 store.

From the host, with a real client: produce and consume through walproxy, /readyz and
/metrics, the offloader's segments in the S3 store, and a restart of the walproxy container
that loses no acknowledged record. Where no registry is reachable the stack runs on the
images deploy/containers.sh builds (deploy/compose-moto.yml puts moto where MinIO was).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from confluent_kafka import Consumer, Producer, TopicCollection
from confluent_kafka.admin import AdminClient

from tests.containers.engine import ROOT, compose_command, images
from tests.integration.scrape import admin_get
from walproxy.testing.probe import wait_for_kafka

ARTIFACTS = ROOT / "test-artifacts" / "compose"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    port: int
    admin_port: int
    s3_port: int

    def compose(self, *args: str, timeout: float = 300) -> str:
        files = ["-f", "deploy/docker-compose.yml", "-f", "deploy/compose-moto.yml"]
        done = subprocess.run(
            [*compose_command(), "-p", self.project, *files, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    def admin(self, path: str) -> tuple[int, str]:
        return admin_get(self.admin_port, path)

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for_kafka("127.0.0.1", self.port, timeout)
        deadline = time.monotonic() + timeout
        while self.admin("/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"/readyz not 200 after {timeout}s: {self.admin('/readyz')}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    ports = [_free_port() for _ in range(3)]
    env = {
        **os.environ,
        **images(),
        "WALPROXY_HOST_PORT": str(ports[0]),
        "WALPROXY_HOST_ADMIN_PORT": str(ports[1]),
        "WALPROXY_HOST_S3_PORT": str(ports[2]),
    }
    s = Stack(f"wp{uuid.uuid4().hex[:8]}", env, *ports)
    s.compose("up", "-d", "--no-build")
    try:
        s.wait_ready()
        yield s
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            (ARTIFACTS / f"{s.project}.log").write_text(s.compose("logs", "--no-color"))
        finally:
            s.compose("down", "-v", "--remove-orphans")


def _produce(bootstrap: str, topic: str, values: list[str]) -> list[str]:
    """Produce with acks=all; the values the broker acknowledged."""
    acked: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is None:
            acked.append(msg.value().decode())  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for v in values:
        producer.produce(topic, v.encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0
    return acked


def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                seen.append(msg.value().decode())
    finally:
        consumer.close()
    return seen


def test_produce_and_consume_through_the_sidecar(stack: Stack) -> None:
    values = [f"v{i}" for i in range(500)]
    assert sorted(_produce(stack.bootstrap, "compose-rw", values)) == sorted(values)
    assert sorted(_consume(stack.bootstrap, "compose-rw", len(values))) == sorted(values)


def test_readyz_and_metrics(stack: Stack) -> None:
    assert stack.admin("/readyz")[0] == 200
    status, metrics = stack.admin("/metrics")
    assert status == 200
    assert "walproxy_ready 1.0" in metrics
    assert "walproxy_wal_" in metrics


def test_the_offloader_writes_segments_to_the_s3_store(stack: Stack) -> None:
    _produce(stack.bootstrap, "compose-offload", [f"o{i}" for i in range(200)])
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.s3_port}",
        region_name="us-east-1",
        aws_access_key_id="walproxy",
        aws_secret_access_key="walproxy-secret",
    )
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})  # alive until the answer
    [described] = admin.describe_topics(TopicCollection(["compose-offload"])).values()
    # librdkafka prints a topic id in standard base64; Kafka's text form (the keys') is
    # URL-safe base64: `+/` become `-_`
    topic_id = str(described.result(30).topic_id).translate(str.maketrans("+/", "-_"))
    deadline = time.monotonic() + 90
    last = -1
    while time.monotonic() < deadline and last < 199:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="walproxy", Prefix="compose/")
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        segments = [k for k in keys if f"/topics/{topic_id}/0/seg/" in k]
        # .../seg/<base>-<last>-e<epoch>.log.zst: the highest offset offloaded
        last = max((int(k.rsplit("/", 1)[1].split("-")[1]) for k in segments), default=-1)
        time.sleep(1)
    seg_keys = [k for k in keys if "/seg/" in k]
    assert last >= 199, f"offloaded up to offset {last} of 199 after 90 s: {topic_id} {seg_keys}"


def test_restarting_the_sidecar_loses_no_acknowledged_record(stack: Stack) -> None:
    before = _produce(stack.bootstrap, "compose-restart", [f"b{i}" for i in range(300)])
    assert len(before) == 300
    stack.compose("restart", "walproxy", timeout=120)
    stack.wait_ready()
    after = _produce(stack.bootstrap, "compose-restart", [f"a{i}" for i in range(300)])
    acked = before + after
    seen = _consume(stack.bootstrap, "compose-restart", len(acked), timeout=90)
    assert set(acked) <= set(seen), sorted(set(acked) - set(seen))[:10]
