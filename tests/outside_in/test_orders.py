"""A user's integration test: Kafka with a walproxy sidecar from walproxy.testing."""

from __future__ import annotations

import os
from pathlib import Path

from confluent_kafka import Consumer, Producer

from walproxy.testing import KafkaWithWalproxy


def test_orders_are_durable(tmp_path: Path) -> None:
    pair = KafkaWithWalproxy(
        kafka_image=os.environ.get("KAFKA_IMAGE", "apache/kafka:4.1.1"),
        walproxy_image=os.environ.get("WALPROXY_IMAGE", "walproxy:0.1.0"),
    ).with_wal_dir(tmp_path / "wal")
    with pair as kafka:
        producer = Producer({"bootstrap.servers": kafka.get_bootstrap_server(), "acks": "all"})
        for i in range(10):
            producer.produce("orders", f"order-{i}".encode())
        assert producer.flush(30) == 0
        assert any((tmp_path / "wal").iterdir())  # acknowledged = in walproxy's WAL
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.get_bootstrap_server(),
                "group.id": "orders-check",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe(["orders"])
        seen = []
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                seen.append(msg.value())
            if len(seen) == 10:
                break
        consumer.close()
        assert sorted(seen) == sorted(f"order-{i}".encode() for i in range(10))
