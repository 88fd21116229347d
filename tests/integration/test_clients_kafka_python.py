"""kafka-python through walproxy against the real Kafka.

kafka-python compresses with optional libraries: zstd with ``zstandard`` (a project
dependency), snappy with ``python-snappy`` and lz4 with ``lz4``. A missing library fails the
codec's test with the package to install, never a skip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import kafka.codec
import pytest
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.structs import OffsetAndMetadata, TopicPartition

from proxy.dev.cluster import DevCluster

from . import clients as c

pytestmark = pytest.mark.kafka

CODEC_SUPPORT = {
    "none": (lambda: True, ""),
    "gzip": (kafka.codec.has_gzip, ""),
    "snappy": (kafka.codec.has_snappy, "python-snappy"),
    "lz4": (kafka.codec.has_lz4, "lz4"),
    "zstd": (kafka.codec.has_zstd, "zstandard"),
}


def produce(bootstrap: str, topic: str, msgs: Sequence[c.Msg], **config: Any) -> None:
    producer = KafkaProducer(**{"bootstrap_servers": bootstrap, "linger_ms": 5, **config})
    try:
        futures = [producer.send(topic, m.value, m.key, list(m.headers), m.partition) for m in msgs]
        producer.flush(30)
        for f in futures:
            f.get(30)
    finally:
        producer.close(10)


def _consumer(bootstrap: str, group: str, committed: bool = False, **config: Any) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if committed else "read_uncommitted",
        **config,
    )


def consume(
    bootstrap: str, topic: str, n: int, *, group: str | None = None, committed: bool = False
) -> list[c.Rec]:
    """Subscribe in ``group``, read ``n`` records, commit them, leave."""
    consumer = _consumer(bootstrap, group or c.unique_tag("kp"), committed)
    records: list[c.Rec] = []
    try:
        consumer.subscribe([topic])
        deadline = c.Deadline(30, f"{n} records of {topic} through kafka-python")
        while len(records) < n:
            deadline.check(f"got {len(records)}")
            for batch in consumer.poll(timeout_ms=500).values():
                records += [c.rec_from_kafka_python(m) for m in batch]
        consumer.commit()
    finally:
        consumer.close()
    return c.by_position(records)


@pytest.mark.parametrize("codec", c.CODECS)
def test_produce_consume_every_codec(
    kafka: DevCluster, new_topic: Callable[..., str], codec: str
) -> None:
    available, package = CODEC_SUPPORT[codec]
    assert available(), f"kafka-python cannot use {codec}: install the {package} package"
    topic = new_topic(partitions=3)
    msgs = c.messages(120, topic, 3)
    produce(kafka.bootstrap, topic, msgs, compression_type=None if codec == "none" else codec)
    group = c.unique_tag("kp-codec")
    seen = consume(kafka.bootstrap, topic, len(msgs), group=group)
    c.assert_contents(seen, msgs, f"{codec} through walproxy")
    c.assert_dense_offsets(seen, codec)
    c.assert_same_records(seen, c.read_all(kafka.direct_bootstrap, topic), "proxy vs direct")
    c.assert_stored_codec(kafka.direct_bootstrap, topic, codec)
    assert c.committed_offsets(kafka.direct_bootstrap, group, topic, 3) == c.end_offsets(
        kafka.direct_bootstrap, topic, 3
    )


def test_idempotent_producer(kafka: DevCluster, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=3)
    msgs = c.messages(300, topic, 3)
    produce(
        kafka.bootstrap,
        topic,
        msgs,
        enable_idempotence=True,
        acks="all",
        batch_size=512,
        linger_ms=0,
        compression_type="gzip",
    )
    seen = consume(kafka.bootstrap, topic, len(msgs))
    c.assert_contents(seen, msgs, "idempotent producer")
    c.assert_dense_offsets(seen, "idempotent producer")
    c.assert_same_records(seen, c.read_all(kafka.direct_bootstrap, topic), "proxy vs direct")
    c.assert_idempotent_batches(kafka.direct_bootstrap, topic)


def test_transactions_commit_and_abort(kafka: DevCluster, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2)

    def run(plan: c.TxnPlan) -> None:
        producer = KafkaProducer(
            bootstrap_servers=kafka.bootstrap,
            transactional_id=c.unique_tag("kp-txn"),
            compression_type="snappy",
        )
        try:
            producer.init_transactions()
            for msgs, commit in plan:
                producer.begin_transaction()
                for m in msgs:
                    producer.send(topic, m.value, m.key, list(m.headers), m.partition)
                producer.flush(30)
                if commit:
                    producer.commit_transaction()
                else:
                    producer.abort_transaction()
        finally:
            producer.close(10)

    def read(n: int, committed: bool) -> list[c.Rec]:
        return consume(kafka.bootstrap, topic, n, committed=committed)

    c.transaction_scenario(run, read, kafka.direct_bootstrap, topic, 2, "kp")


def test_offsets_in_transaction(kafka: DevCluster, new_topic: Callable[..., str]) -> None:
    """send_offsets_to_transaction: an aborted transaction leaves the group offsets alone."""
    topic, sink = new_topic(partitions=2), new_topic(partitions=2)
    msgs = c.messages(40, topic, 2)
    produce(kafka.bootstrap, topic, msgs)
    group = c.unique_tag("kp-eos")
    producer = KafkaProducer(
        bootstrap_servers=kafka.bootstrap, transactional_id=c.unique_tag("kp-eos")
    )
    try:
        producer.init_transactions()
        for commit in (False, True):
            producer.begin_transaction()
            for m in msgs:
                producer.send(sink, m.value.upper(), m.key, list(m.headers), m.partition)
            # kafka-python 2.2.15 crashes its sender thread when aborting with undrained
            # batches (record_accumulator.abort_undrained_batches): flush first.
            producer.flush(30)
            offsets = {TopicPartition(topic, p): OffsetAndMetadata(20, "", -1) for p in (0, 1)}
            producer.send_offsets_to_transaction(offsets, group)
            if commit:
                producer.commit_transaction()
            else:
                producer.abort_transaction()
                assert c.committed_offsets(kafka.direct_bootstrap, group, topic, 2) == {}
    finally:
        producer.close(10)
    assert c.committed_offsets(kafka.direct_bootstrap, group, topic, 2) == {0: 20, 1: 20}
    out = c.read_all(kafka.direct_bootstrap, sink, committed=True)
    want = [c.Msg(m.key, m.value.upper(), m.headers, m.partition) for m in msgs]
    c.assert_contents(out, want, "transactional output")


class _Member(c.Member, ConsumerRebalanceListener):
    def __init__(self, name: str, group: str, bootstrap: str, topic: str) -> None:
        self.name = name
        self.topic = topic
        self.records: list[c.Rec] = []
        self.closed = False
        self.consumer = _consumer(
            bootstrap,
            group,
            client_id=f"member-{name}",
            max_poll_records=10,
            session_timeout_ms=10000,
            heartbeat_interval_ms=500,
        )
        self.consumer.subscribe([topic], listener=self)

    def _commit(self, partitions: set[int] | None = None) -> None:
        offsets = {
            TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in c.positions(self.records, partitions).items()
        }
        if offsets:
            self.consumer.commit(offsets)

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._commit({tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned: Any) -> None:
        pass

    def poll(self) -> list[c.Rec]:
        new = [
            c.rec_from_kafka_python(m)
            for batch in self.consumer.poll(timeout_ms=100).values()
            for m in batch
        ]
        self.records += new
        return new

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def commit(self) -> None:
        self._commit(self.assignment())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close(autocommit=False)


def test_consumer_group_rebalance_and_restart(
    kafka: DevCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=4)

    def member(name: str, group: str) -> c.Member:
        return _Member(name, group, kafka.bootstrap, topic)

    def send(msgs: Sequence[c.Msg]) -> None:
        produce(kafka.bootstrap, topic, msgs)

    c.group_scenario(member, send, kafka.direct_bootstrap, topic, 4, "kp")


def test_admin_calls(kafka: DevCluster) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        topic = c.unique_tag("kp-admin")
        admin.create_topics(
            [NewTopic(topic, 2, 1, topic_configs={"retention.ms": "7200000"})], timeout_ms=30000
        )
        cluster = admin.describe_cluster()
        assert cluster["cluster_id"] == kafka.cluster_id
        assert {(b["host"], b["port"]) for b in cluster["brokers"]} == {
            (kafka.host, n.advertised_port) for n in kafka.broker_nodes
        }
        c.wait_until(lambda: topic in admin.list_topics(), 30, f"{topic} listed")
        (desc,) = admin.describe_topics([topic])
        assert desc["error_code"] == 0
        assert sorted(p["partition"] for p in desc["partitions"]) == [0, 1]
        assert {p["leader"] for p in desc["partitions"]} == {kafka.broker_nodes[0].node_id}
        (configs,) = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})]
        )
        values = {e[0]: e[1] for e in configs.resources[0][4]}  # (name, value, ...)
        assert values["retention.ms"] == "7200000"
        admin.create_partitions({topic: NewPartitions(3)}, timeout_ms=30000)
        c.wait_until(
            lambda: len(admin.describe_topics([topic])[0]["partitions"]) == 3,
            30,
            f"{topic} to get 3 partitions",
        )

        msgs = c.messages(30, topic, 3)
        produce(kafka.bootstrap, topic, msgs)
        group = c.unique_tag("kp-admin-grp")
        consume(kafka.bootstrap, topic, 30, group=group)
        assert group in {g[0] for g in admin.list_consumer_groups()}
        (gdesc,) = admin.describe_consumer_groups([group])
        assert gdesc.group == group and gdesc.state == "Empty"
        offsets = admin.list_consumer_group_offsets(group)
        assert {tp.partition: om.offset for tp, om in offsets.items()} == {0: 10, 1: 10, 2: 10}
        assert dict(admin.delete_consumer_groups([group])) == {group: admin_ok()}

        admin.delete_topics([topic], timeout_ms=30000)
        c.wait_until(lambda: topic not in admin.list_topics(), 30, f"{topic} to disappear")
    finally:
        admin.close()


def admin_ok() -> Any:
    from kafka.errors import NoError

    return NoError
