"""confluent-kafka (librdkafka) through walproxy against the real Kafka."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from proxy.dev.cluster import DevCluster

from . import clients as c

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("codec", c.CODECS)
def test_produce_consume_every_codec(
    kafka: DevCluster, new_topic: Callable[..., str], codec: str
) -> None:
    """Keys, null keys, headers and values survive each codec; the broker stores that codec."""
    topic = new_topic(partitions=3)
    msgs = c.messages(120, topic, 3)
    c.confluent_produce(kafka.bootstrap, topic, msgs, **{"compression.type": codec})
    group = c.unique_tag("codec")
    seen = c.confluent_consume(kafka.bootstrap, topic, len(msgs), group=group)
    c.assert_contents(seen, msgs, f"{codec} through walproxy")
    c.assert_dense_offsets(seen, codec)
    c.assert_same_records(seen, c.read_all(kafka.direct_bootstrap, topic), "proxy vs direct")
    c.assert_stored_codec(kafka.direct_bootstrap, topic, codec)
    assert c.committed_offsets(kafka.direct_bootstrap, group, topic, 3) == c.end_offsets(
        kafka.direct_bootstrap, topic, 3
    )


def test_idempotent_producer(kafka: DevCluster, new_topic: Callable[..., str]) -> None:
    """Many small in-flight batches with idempotence: no duplicates, no gaps, one producer id."""
    topic = new_topic(partitions=3)
    msgs = c.messages(300, topic, 3)
    c.confluent_produce(
        kafka.bootstrap,
        topic,
        msgs,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "batch.num.messages": 7,
            "linger.ms": 0,
            "compression.type": "lz4",
        },
    )
    seen = c.read_all(kafka.bootstrap, topic)
    c.assert_contents(seen, msgs, "idempotent producer")
    c.assert_dense_offsets(seen, "idempotent producer")
    c.assert_same_records(seen, c.read_all(kafka.direct_bootstrap, topic), "proxy vs direct")
    c.assert_idempotent_batches(kafka.direct_bootstrap, topic)


def _transactional_producer(bootstrap: str, **config: Any) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": c.unique_tag("txn"),
            "linger.ms": 5,
            **config,
        }
    )
    producer.init_transactions(30)
    return producer


def test_transactions_commit_and_abort(kafka: DevCluster, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2)

    def run(plan: c.TxnPlan) -> None:
        producer = _transactional_producer(kafka.bootstrap, **{"compression.type": "zstd"})
        c.run_confluent_txn_plan(producer, topic, plan)

    def consume(n: int, committed: bool) -> list[c.Rec]:
        return c.confluent_consume(kafka.bootstrap, topic, n, committed=committed)

    c.transaction_scenario(run, consume, kafka.direct_bootstrap, topic, 2, "cfk")


def test_consume_transform_produce_offsets_in_transaction(
    kafka: DevCluster, new_topic: Callable[..., str]
) -> None:
    """send_offsets_to_transaction: group offsets move only when the transaction commits."""
    source, sink = new_topic(partitions=2), new_topic(partitions=2)
    msgs = c.messages(60, source, 2)
    c.confluent_produce(kafka.bootstrap, source, msgs)
    group = c.unique_tag("eos")
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = _transactional_producer(kafka.bootstrap)
    try:
        consumer.subscribe([source])
        polled: list[Any] = []
        deadline = c.Deadline(30, f"60 records of {source}")
        while len(polled) < len(msgs):
            deadline.check(f"{len(polled)} so far")
            polled += [m for m in consumer.consume(100, 0.5) if m.error() is None]
        first, rest = polled[:25], polled[25:]
        for batch, commit in ((first, False), (first, True), (rest, True)):
            producer.begin_transaction()
            for m in batch:
                producer.produce(
                    sink, m.value().upper(), m.key(), partition=m.partition(), headers=m.headers()
                )
            offsets = [
                TopicPartition(source, p, o)
                for p, o in c.positions(c.rec_from_confluent(m) for m in batch).items()
            ]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
            if commit:
                producer.commit_transaction(30)
            else:
                producer.abort_transaction(30)
                aborted_commits = c.committed_offsets(kafka.direct_bootstrap, group, source, 2)
                assert aborted_commits == {}, f"aborted transaction committed {aborted_commits}"
    finally:
        consumer.close()
    out = c.read_all(kafka.direct_bootstrap, sink, committed=True)
    want = [c.Msg(m.key, m.value.upper(), m.headers, m.partition) for m in msgs]
    c.assert_contents(out, want, "transformed output, exactly once")
    assert c.committed_offsets(kafka.direct_bootstrap, group, source, 2) == c.end_offsets(
        kafka.direct_bootstrap, source, 2
    )


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_consumer_group_rebalance_and_restart(
    kafka: DevCluster, new_topic: Callable[..., str], protocol: str
) -> None:
    """Classic and KIP-848 group protocols: split, member leaves, partitions move, resume."""
    topic = new_topic(partitions=4)

    def member(name: str, group: str) -> c.Member:
        return c.ConfluentMember(name, group, kafka.bootstrap, topic, protocol)

    def produce(msgs: Sequence[c.Msg]) -> None:
        c.confluent_produce(kafka.bootstrap, topic, msgs)

    c.group_scenario(member, produce, kafka.direct_bootstrap, topic, 4, f"cfk-{protocol}")


def test_admin_calls(kafka: DevCluster) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    topic = c.unique_tag("admin")
    admin.create_topics(
        [NewTopic(topic, 2, 1, config={"retention.ms": "3600000", "cleanup.policy": "compact"})]
    )[topic].result(30)

    # describe cluster: every node is a walproxy address
    cluster = admin.describe_cluster(request_timeout=10).result(30)
    assert cluster.cluster_id == kafka.cluster_id
    assert {(n.host, n.port) for n in cluster.nodes} == {
        (kafka.host, n.advertised_port) for n in kafka.broker_nodes
    }
    assert cluster.controller is not None

    # describe topic and its config, add partitions
    c.wait_until(lambda: topic in admin.list_topics(timeout=10).topics, 30, f"{topic} in Metadata")
    desc = admin.describe_topics(TopicCollection([topic]))[topic].result(30)
    assert [p.id for p in desc.partitions] == [0, 1]
    assert all(
        p.leader is not None and p.leader.port == kafka.broker_nodes[0].advertised_port
        for p in desc.partitions
    )
    res = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result(30)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "compact"
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(30)
    c.wait_until(
        lambda: len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3,
        30,
        f"{topic} to have 3 partitions",
    )

    # a group with commits: list groups, describe it, list its offsets
    msgs = c.messages(30, topic, 3, null_keys=False)
    c.confluent_produce(kafka.bootstrap, topic, msgs)
    group = c.unique_tag("admin-grp")
    c.confluent_consume(kafka.bootstrap, topic, 30, group=group)
    listed = admin.list_consumer_groups(request_timeout=10).result(30)
    assert group in {g.group_id for g in listed.valid}, f"{group} not listed"
    described = admin.describe_consumer_groups([group])[group].result(30)
    assert described.group_id == group and not described.members  # it left after commit
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(3)])]
    )[group].result(30)
    assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == {0: 10, 1: 10, 2: 10}
    admin.delete_consumer_groups([group])[group].result(30)
    assert group not in {
        g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(30).valid
    }

    # delete the topic
    admin.delete_topics([topic], operation_timeout=30)[topic].result(30)
    c.wait_until(
        lambda: topic not in admin.list_topics(timeout=10).topics, 30, f"{topic} to disappear"
    )
    with pytest.raises(KafkaException) as err:
        admin.describe_topics(TopicCollection([topic]))[topic].result(30)
    assert err.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
