"""aiokafka (asyncio) through walproxy against the real Kafka.

The suite runs in trio mode, so these tests are plain functions that drive one asyncio event
loop each. aiokafka compresses snappy, lz4 and zstd with ``cramjam`` only; without it those
codecs fail with the package to install, never a skip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import aiokafka.codec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from proxy.dev.cluster import DevCluster

from . import clients as c

pytestmark = pytest.mark.kafka

T = TypeVar("T")

CODEC_SUPPORT = {
    "none": lambda: True,
    "gzip": aiokafka.codec.has_gzip,
    "snappy": aiokafka.codec.has_snappy,
    "lz4": aiokafka.codec.has_lz4,
    "zstd": aiokafka.codec.has_zstd,
}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def produce(bootstrap: str, topic: str, msgs: Sequence[c.Msg], **config: Any) -> None:
    producer = AIOKafkaProducer(**{"bootstrap_servers": bootstrap, "linger_ms": 5, **config})
    await producer.start()
    try:
        futures = [
            await producer.send(topic, m.value, m.key, m.partition, headers=list(m.headers))
            for m in msgs
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _consumer(bootstrap: str, group: str, committed: bool = False, **config: Any) -> Any:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if committed else "read_uncommitted",
        **config,
    )


async def consume(
    bootstrap: str, topic: str, n: int, *, group: str | None = None, committed: bool = False
) -> list[c.Rec]:
    """Subscribe in ``group``, read ``n`` records, commit them, leave."""
    consumer = _consumer(bootstrap, group or c.unique_tag("aio"), committed)
    consumer.subscribe([topic])
    await consumer.start()
    records: list[c.Rec] = []
    try:
        deadline = c.Deadline(30, f"{n} records of {topic} through aiokafka")
        while len(records) < n:
            deadline.check(f"got {len(records)}")
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += [c.rec_from_kafka_python(m) for m in batch]
        await consumer.commit()
    finally:
        await consumer.stop()
    return c.by_position(records)


@pytest.mark.parametrize("codec", c.CODECS)
def test_produce_consume_every_codec(
    kafka: DevCluster, new_topic: Callable[..., str], loop: asyncio.AbstractEventLoop, codec: str
) -> None:
    assert CODEC_SUPPORT[codec](), f"aiokafka cannot use {codec}: install the cramjam package"
    topic = new_topic(partitions=3)
    msgs = c.messages(120, topic, 3)
    compression = None if codec == "none" else codec
    run(loop, produce(kafka.bootstrap, topic, msgs, compression_type=compression))
    group = c.unique_tag("aio-codec")
    seen = run(loop, consume(kafka.bootstrap, topic, len(msgs), group=group))
    c.assert_contents(seen, msgs, f"{codec} through walproxy")
    c.assert_dense_offsets(seen, codec)
    c.assert_same_records(seen, c.read_all(kafka.direct_bootstrap, topic), "proxy vs direct")
    c.assert_stored_codec(kafka.direct_bootstrap, topic, codec)
    assert c.committed_offsets(kafka.direct_bootstrap, group, topic, 3) == c.end_offsets(
        kafka.direct_bootstrap, topic, 3
    )


def test_idempotent_producer(
    kafka: DevCluster, new_topic: Callable[..., str], loop: asyncio.AbstractEventLoop
) -> None:
    topic = new_topic(partitions=3)
    msgs = c.messages(300, topic, 3)
    config = {"enable_idempotence": True, "acks": "all", "max_batch_size": 1024, "linger_ms": 0}
    run(loop, produce(kafka.bootstrap, topic, msgs, compression_type="zstd", **config))
    seen = run(loop, consume(kafka.bootstrap, topic, len(msgs)))
    c.assert_contents(seen, msgs, "idempotent producer")
    c.assert_dense_offsets(seen, "idempotent producer")
    c.assert_same_records(seen, c.read_all(kafka.direct_bootstrap, topic), "proxy vs direct")
    c.assert_idempotent_batches(kafka.direct_bootstrap, topic)


def test_transactions_commit_and_abort(
    kafka: DevCluster, new_topic: Callable[..., str], loop: asyncio.AbstractEventLoop
) -> None:
    topic = new_topic(partitions=2)

    async def transactions(plan: c.TxnPlan) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap,
            transactional_id=c.unique_tag("aio-txn"),
            compression_type="lz4",
        )
        await producer.start()
        try:
            for msgs, commit in plan:
                await producer.begin_transaction()
                futures = [
                    await producer.send(topic, m.value, m.key, m.partition, headers=list(m.headers))
                    for m in msgs
                ]
                await asyncio.gather(*futures)
                if commit:
                    await producer.commit_transaction()
                else:
                    await producer.abort_transaction()
        finally:
            await producer.stop()

    def read(n: int, committed: bool) -> list[c.Rec]:
        return run(loop, consume(kafka.bootstrap, topic, n, committed=committed))

    c.transaction_scenario(
        lambda plan: run(loop, transactions(plan)), read, kafka.direct_bootstrap, topic, 2, "aio"
    )


def test_offsets_in_transaction(
    kafka: DevCluster, new_topic: Callable[..., str], loop: asyncio.AbstractEventLoop
) -> None:
    """Consume-transform-produce: offsets commit only with the transaction."""
    source, sink = new_topic(partitions=2), new_topic(partitions=2)
    msgs = c.messages(40, source, 2)
    run(loop, produce(kafka.bootstrap, source, msgs))
    group = c.unique_tag("aio-eos")

    async def copy() -> None:
        consumer = _consumer(kafka.bootstrap, group, committed=True)
        consumer.subscribe([source])
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap, transactional_id=c.unique_tag("aio-eos")
        )
        await consumer.start()
        await producer.start()
        try:
            polled: list[Any] = []
            deadline = c.Deadline(30, f"{len(msgs)} records of {source}")
            while len(polled) < len(msgs):
                deadline.check(f"{len(polled)} so far")
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    polled += batch
            ends = c.positions(c.rec_from_kafka_python(m) for m in polled)
            offsets = {TopicPartition(source, p): o for p, o in ends.items()}
            for commit in (False, True):
                async with producer.transaction() if commit else _aborting(producer):
                    for m in polled:
                        await producer.send(
                            sink, m.value.upper(), m.key, m.partition, headers=list(m.headers)
                        )
                    await producer.send_offsets_to_transaction(offsets, group)
                if not commit:
                    assert c.committed_offsets(kafka.direct_bootstrap, group, source, 2) == {}
        finally:
            await producer.stop()
            await consumer.stop()

    run(loop, copy())
    assert c.committed_offsets(kafka.direct_bootstrap, group, source, 2) == c.end_offsets(
        kafka.direct_bootstrap, source, 2
    )
    out = c.read_all(kafka.direct_bootstrap, sink, committed=True)
    want = [c.Msg(m.key, m.value.upper(), m.headers, m.partition) for m in msgs]
    c.assert_contents(out, want, "transformed output, exactly once")


class _aborting:
    """``async with``: a transaction that is always aborted at the end."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def __aenter__(self) -> None:
        await self.producer.begin_transaction()

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.abort_transaction()


class _Member(c.Member, ConsumerRebalanceListener):
    """A member driven synchronously: every call runs the shared loop for a short while."""

    def __init__(
        self, name: str, group: str, bootstrap: str, topic: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.name = name
        self.topic = topic
        self.loop = loop
        self.records: list[c.Rec] = []
        self.closed = False

        async def start() -> Any:  # aiokafka objects must be created inside the loop
            consumer = _consumer(
                bootstrap,
                group,
                client_id=f"member-{name}",
                session_timeout_ms=10000,
                heartbeat_interval_ms=500,
            )
            consumer.subscribe([topic], listener=self)
            await consumer.start()
            return consumer

        self.consumer = run(loop, start())

    async def _commit(self, partitions: set[int] | None = None) -> None:
        offsets = {
            TopicPartition(self.topic, p): o
            for p, o in c.positions(self.records, partitions).items()
        }
        if offsets:
            await self.consumer.commit(offsets)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._commit({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass

    def poll(self) -> list[c.Rec]:
        batches = run(self.loop, self.consumer.getmany(timeout_ms=100, max_records=10))
        new = [c.rec_from_kafka_python(m) for batch in batches.values() for m in batch]
        self.records += new
        return new

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def commit(self) -> None:
        run(self.loop, self._commit(self.assignment()))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            run(self.loop, self.consumer.stop())


def test_consumer_group_rebalance_and_restart(
    kafka: DevCluster, new_topic: Callable[..., str], loop: asyncio.AbstractEventLoop
) -> None:
    topic = new_topic(partitions=4)

    def member(name: str, group: str) -> c.Member:
        return _Member(name, group, kafka.bootstrap, topic, loop)

    def send(msgs: Sequence[c.Msg]) -> None:
        run(loop, produce(kafka.bootstrap, topic, msgs))

    c.group_scenario(member, send, kafka.direct_bootstrap, topic, 4, "aio")


def test_admin_calls(kafka: DevCluster, loop: asyncio.AbstractEventLoop) -> None:
    topic = c.unique_tag("aio-admin")
    group = c.unique_tag("aio-admin-grp")

    async def scenario() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(topic, 2, 1, topic_configs={"retention.ms": "5400000"})]
            )
            cluster = await admin.describe_cluster()
            assert cluster["cluster_id"] == kafka.cluster_id
            assert {(b["host"], b["port"]) for b in cluster["brokers"]} == {
                (kafka.host, n.advertised_port) for n in kafka.broker_nodes
            }
            deadline = c.Deadline(30, f"{topic} in list_topics")
            while topic not in await admin.list_topics():
                deadline.check()
                await asyncio.sleep(0.1)
            (desc,) = await admin.describe_topics([topic])
            assert sorted(p["partition"] for p in desc["partitions"]) == [0, 1]
            (configs,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})]
            )
            values = {e[0]: e[1] for e in configs.resources[0][4]}  # (name, value, ...)
            assert values["retention.ms"] == "5400000"
            await admin.create_partitions({topic: NewPartitions(3)})
            deadline = c.Deadline(30, f"{topic} to get 3 partitions")
            while len((await admin.describe_topics([topic]))[0]["partitions"]) != 3:
                deadline.check()
                await asyncio.sleep(0.1)

            await produce(kafka.bootstrap, topic, c.messages(30, topic, 3))
            await consume(kafka.bootstrap, topic, 30, group=group)
            assert group in {g[0] for g in await admin.list_consumer_groups()}
            (gdesc,) = await admin.describe_consumer_groups([group])
            assert gdesc.groups[0][1] == group and gdesc.groups[0][2] == "Empty"
            offsets = await admin.list_consumer_group_offsets(group)
            assert {tp.partition: om.offset for tp, om in offsets.items()} == {0: 10, 1: 10, 2: 10}

            await admin.delete_topics([topic])
            deadline = c.Deadline(30, f"{topic} to disappear")
            while topic in await admin.list_topics():
                deadline.check()
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    run(loop, scenario())
