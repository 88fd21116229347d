"""walproxy.testing as a user's test would use it: the pair up, a client through walproxy,
the WAL and the offloaded segments in host directories the test chose."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from tests.containers.engine import images
from walproxy.testing import KafkaWithWalproxy


def test_kafka_with_walproxy_serves_clients_and_keeps_its_wal_and_offload(
    tmp_path: Path,
) -> None:
    found = images()
    pair = (
        KafkaWithWalproxy(found["WALPROXY_KAFKA_IMAGE"], found["WALPROXY_IMAGE"])
        .with_wal_dir(tmp_path / "wal")
        .with_offload_to(tmp_path / "offload", max_lag_s="0.5")
    )
    with pair as kafka:
        bootstrap = kafka.get_bootstrap_server()
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for i in range(100):
            producer.produce("tc-topic", f"m{i}".encode())
        assert producer.flush(60) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"g-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe(["tc-topic"])
        seen: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(seen) < 100 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                seen.append(msg.value())
        consumer.close()
        assert sorted(seen) == sorted(f"m{i}".encode() for i in range(100))
        assert kafka.status()  # /status answers
        assert any((tmp_path / "wal").iterdir()), "no WAL files in the host directory"
        deadline = time.monotonic() + 60
        while not list((tmp_path / "offload").rglob("seg/*.log*")):
            assert time.monotonic() < deadline, "no offloaded segment in the host directory"
            time.sleep(0.5)
