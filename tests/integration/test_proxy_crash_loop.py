"""Crash the proxy under load, again and again: nothing acknowledged may be lost or moved.

In the style of Kafka's own system tests and Jepsen: every value is unique, every
acknowledgement is recorded with its (partition, offset); afterwards everything is read back
straight from the broker and acked ⊆ consumed, each acked offset holds its value, nothing is
duplicated (idempotent producers) and each partition keeps the order of production.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.dev.cluster import DevCluster, libs_dir

from .durability import Acked, compare, consume_all
from .load import LoadProducer
from .nemesis_check import ProducerHistory, check_history
from .proxy_process import OwnProxy

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]


@pytest.fixture
def own_proxy(kafka: DevCluster, tmp_path: Path) -> Iterator[OwnProxy]:
    proxy = OwnProxy(kafka, tmp_path).start()
    yield proxy
    proxy.kill()


def check(load: LoadProducer, bootstrap: str) -> None:
    consumed = consume_all(bootstrap, load.topic, load.partitions, timeout=120)
    verdict = check_history([ProducerHistory(load.name, True, load.sent, load.acked)], consumed)
    assert not load.errors, load.errors[:5]
    assert len(load.acked) == sum(len(v) for v in load.sent.values())
    # nothing lost, moved or duplicated, and production order is log order
    assert verdict.ok and verdict.unacked_extras == 0, verdict.summary()


def test_sigkill_under_load_loses_nothing(
    own_proxy: OwnProxy, new_topic: Callable[..., str], kafka: DevCluster
) -> None:
    topic = new_topic(partitions=4)
    load = LoadProducer(own_proxy.bootstrap, topic, 4)
    load.start()
    rng = random.Random(20261125)
    for _ in range(20):
        time.sleep(rng.uniform(0.2, 1.2))
        own_proxy.restart()  # SIGKILL at a random moment, then a new process on the WAL
    time.sleep(1.0)
    assert load.finish() == 0, "records still unanswered 120 s after the faults"
    assert not load.fatal, load.fatal
    check(load, kafka.direct_bootstrap)
    assert len(load.acked) > 2000, "too little load to mean anything"
    # The kills really left batches in doubt, and restarts settled them (found or replayed).
    settled = [
        json.loads(line)
        for line in own_proxy.process.log_path.read_text().splitlines()
        if '"reconciliation done"' in line
    ]
    assert sum(r["found"] + r["replayed"] for r in settled) > 0, settled
    assert not any(r["problems"] for r in settled), settled


def test_sigstop_past_client_timeout_loses_nothing(
    own_proxy: OwnProxy, new_topic: Callable[..., str], kafka: DevCluster
) -> None:
    topic = new_topic(partitions=2)
    load = LoadProducer(own_proxy.bootstrap, topic, 2)
    load.start()
    for _ in range(2):
        time.sleep(1.0)
        own_proxy.pause()
        time.sleep(7.0)  # past request.timeout.ms (5 s): the client gives up on requests
        own_proxy.resume()
    time.sleep(1.0)
    assert load.finish() == 0, "records still unanswered 120 s after the faults"
    assert not load.fatal, load.fatal
    check(load, kafka.direct_bootstrap)


def test_java_verifiable_producer_through_crashing_proxy(
    own_proxy: OwnProxy, new_topic: Callable[..., str], kafka: DevCluster
) -> None:
    """Kafka's own VerifiableProducer (Java client, Produce v13 with topic ids)."""
    topic = new_topic(partitions=3)
    proc = subprocess.Popen(
        [
            "java",
            "-cp",
            f"{libs_dir()}/*",
            "org.apache.kafka.tools.VerifiableProducer",
            "--bootstrap-server",
            own_proxy.bootstrap,
            "--topic",
            topic,
            "--max-messages",
            "6000",
            "--throughput",
            "1500",
            "--acks",
            "-1",
            "--value-prefix",
            "7",
            "--producer.config",
            "/dev/null",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    events: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: events.extend(
            json.loads(line) for line in proc.stdout if line.startswith("{")
        ),
        daemon=True,
    )  # type: ignore[union-attr]
    reader.start()
    for _ in range(5):
        time.sleep(0.8)
        own_proxy.restart()
    assert proc.wait(180) == 0
    reader.join(10)
    acked = [
        Acked(e["partition"], e["offset"], e["value"].encode())
        for e in events
        if e.get("name") == "producer_send_success"
    ]
    failed = [e for e in events if e.get("name") == "producer_send_error"]
    consumed = consume_all(kafka.direct_bootstrap, topic, 3, timeout=120)
    report = compare(acked, consumed)
    assert acked, "VerifiableProducer acknowledged nothing"
    assert not report.lost and not report.moved, report.summary()
    assert len(acked) + len(failed) == 6000
