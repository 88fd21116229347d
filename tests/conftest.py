"""Shared fixtures: one real Kafka (KRaft) cluster behind a walproxy sidecar per test session.

The broker comes from Maven Central jars (``proxy.dev.cluster``). Where a Docker engine exists,
``WALPROXY_TEST_KAFKA=testcontainers`` takes the broker from the ``apache/kafka`` image instead
(see tests/kafka_container.py). Broker and proxy logs stay in ``test-artifacts/`` for
post-mortems.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from proxy.dev.cluster import DevCluster
from tests.s3server import S3_ENV, S3Server

# The suite shares 2 cores with real brokers and JVM clients: a property test's example can
# take far longer than hypothesis's 200 ms default deadline without anything being wrong.
settings.register_profile("walproxy", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("walproxy")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
#: A user's project, run from outside the tree with walproxy's wheel installed
#: (tests/containers/test_outside_in.py), not as part of this suite.
collect_ignore = ["outside_in"]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="session")
def kafka(artifacts_dir: Path) -> Iterator[DevCluster]:
    """A single-node Kafka with a walproxy sidecar; ``.bootstrap`` goes through the proxy."""
    if os.environ.get("WALPROXY_TEST_KAFKA") == "testcontainers":
        from tests.kafka_container import container_cluster

        with container_cluster(_fresh(artifacts_dir / "kafka-container")) as cluster:
            yield cluster
        return
    cluster = DevCluster(
        _fresh(artifacts_dir / "kafka-1"),
        brokers=1,
        # Short enough for the malformed-frame tests; real clients finish frames in ms.
        proxy_env={"WALPROXY_PROXY_PARTIAL_FRAME_TIMEOUT_S": "3"},
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def s3_server(artifacts_dir: Path) -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port; sets the dummy AWS credentials in
    ``os.environ`` so boto3 (and walproxy subprocesses) find them."""
    os.environ.update(S3_ENV)
    server = S3Server(artifacts_dir / "moto-s3.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh bucket on the shared S3 server."""
    return s3_server.new_bucket()


@pytest.fixture(scope="session")
def bootstrap(kafka: DevCluster) -> str:
    return kafka.bootstrap


def _wait_partitions_serve(bootstrap: str, topic: str, partitions: int, deadline: float) -> None:
    """Metadata names a leader a moment before that broker serves the partition; a raw
    request in that moment gets NOT_LEADER_OR_FOLLOWER. Wait until ListOffsets answers."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "topic-ready-probe"})
    try:
        for p in range(partitions):
            while True:
                try:
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
    finally:
        consumer.close()


@pytest.fixture
def new_topic(kafka: DevCluster) -> Callable[..., str]:
    """Create a uniquely named topic (through the proxy) and return its name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})

    def make(partitions: int = 1, replication: int = 1, **config: str) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        futures = admin.create_topics(
            [NewTopic(name, partitions, replication, config=config)], operation_timeout=30
        )
        futures[name].result(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until every partition has a leader
            md = admin.list_topics(name, timeout=10).topics.get(name)
            if (
                md is not None
                and md.error is None
                and len(md.partitions) == partitions
                and all(p.leader >= 0 for p in md.partitions.values())
            ):
                _wait_partitions_serve(kafka.direct_bootstrap, name, partitions, deadline)
                return name
            time.sleep(0.1)
        raise TimeoutError(f"topic {name} has no leader for every partition after 30s")

    return make
