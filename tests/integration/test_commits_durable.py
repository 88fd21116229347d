"""Offset commits take the durable path: every commit a real client was told succeeded is in
walproxy's WAL (COMMIT entry with a COMMIT_OUTCOME of error 0) at the offset it committed.

Classic and KIP-848 consumer groups (confluent-kafka) commit synchronously through a walproxy
of the test's own in front of the shared broker, and a transactional producer commits
consumed offsets with its transaction (TxnOffsetCommit). The WAL, read after the proxy
stopped, holds exactly the offsets the clients were acknowledged, and the broker serves them.

The commit repair (proxy/durable/commit_repair.py) runs here against real groups that still
have a member; its page-cache-loss scenario is in test_durability_walproxy.py.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio
from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.offset_commit.v9.request import (
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from kio.static.primitive import i32, i64

from offload.wal_tail import collect
from proxy.client.upstream_client import UpstreamClient, plain_dial
from proxy.dev.cluster import DevCluster
from proxy.durable.commit_repair import repair_commits
from proxy.durable.wal_entries import (
    COMMIT,
    COMMIT_OUTCOME,
    CommitEntry,
    CommitOffset,
    CommitOutcomeEntry,
    Source,
    encode_commit,
    encode_commit_outcome,
)
from proxy.kafka.protocol import COORDINATOR_NOT_AVAILABLE, OFFSET_COMMIT
from wal import Wal, WalConfig, open_wal, read_directory
from wal.testing import MemoryBackend

from .durability import consume_and_commit
from .proxy_process import OwnProxy, in_process_server
from .rawkafka import RawConnection, request_frame

RECORDS = 60
PARTITIONS = 3


def _transactional_commit(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    """Commit consumed offsets inside a transaction (TxnOffsetCommit), then commit it."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{group}"})
    try:
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(topic, b"from-a-transaction")
        offsets = [TopicPartition(topic, p, 10 + p) for p in range(PARTITIONS)]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in offsets}


def test_acknowledged_commits_are_in_the_wal(
    kafka: DevCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=PARTITIONS)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(RECORDS):
        producer.produce(topic, f"r{i}".encode(), partition=i % PARTITIONS)
    assert producer.flush(30) == 0
    proxy = OwnProxy(kafka, tmp_path).start()
    expected: dict[tuple[str, int], int] = {}
    commits = 0
    try:
        proxy.wait_ready()
        for protocol in ("classic", "consumer"):
            group = f"g-{protocol}-{topic}"
            run = consume_and_commit(
                proxy.bootstrap, topic, group, protocol, records=RECORDS, partitions=PARTITIONS
            )
            commits += run["commits"]
            expected |= {(group, p): o for p, o in run["acked"].items()}
        txn_group = f"g-txn-{topic}"
        txn_expected = _transactional_commit(proxy.bootstrap, topic, txn_group)
        persisted = proxy.metric("walproxy_commits_persisted_total")
        acked_offsets = proxy.metric("walproxy_committed_offsets_acknowledged_total")
    finally:
        proxy.stop()
    assert persisted >= commits + 1  # every commit (and the transaction's) went to the WAL
    assert acked_offsets >= sum(1 for _ in expected) + PARTITIONS
    facts = collect(read_directory(str(proxy.wal_dir)))
    assert facts.commits_in_doubt == 0
    plain = facts.latest_commits()
    got = {(g, t, p): c.offset for (g, t, _tid, p), c in plain.items() if t == topic}
    assert got == {(g, topic, p): o for (g, p), o in expected.items()}
    assert all(c.commit_time_ms > 0 for c in plain.values())
    txn = {
        (c.group_id, c.partition): c
        for c in facts.latest_commits(transactional=True).values()
        if c.transactional_id is not None and c.topic == topic
    }
    assert {p: c.offset for (g, p), c in txn.items() if g == txn_group} == txn_expected
    assert {c.transactional_id for c in txn.values()} == {f"tx-{txn_group}"}
    assert all(c.producer_id >= 0 for c in txn.values())
    print(
        f"commit requests acknowledged: {commits} (+1 transactional); "
        f"partition offsets in the WAL: {len(got)} plain, {len(txn)} transactional"
    )


def _commit_frame(group: str, topic: str, offset: int, correlation_id: int) -> bytes:
    part = OffsetCommitRequestPartition(
        partition_index=i32(0), committed_offset=i64(offset), committed_metadata="m"
    )
    return request_frame(
        OFFSET_COMMIT,
        9,
        correlation_id,
        group_id=group,
        generation_id_or_member_epoch=i32(-1),  # a simple (memberless) group's commit
        member_id="",
        group_instance_id=None,
        topics=(OffsetCommitRequestTopic(name=topic, partitions=(part,)),),
    )


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


async def test_fsync_failure_stops_acknowledging_commits(
    kafka: DevCluster, new_topic: Callable[..., str]
) -> None:
    """EIO on the WAL's sync fences it: the commit that hit it and every later one are
    answered COORDINATOR_NOT_AVAILABLE (retriable) and never reach the broker."""
    topic = new_topic()
    group = f"g-fsync-{topic}"
    server, backend = in_process_server(kafka)

    def commit(offset: int, corr: int) -> int:
        with RawConnection(f"127.0.0.1:{server.port}") as conn:
            conn.send(_commit_frame(group, topic, offset, corr))
            _, body = conn.recv_response(OFFSET_COMMIT, 9)
        [t] = body.topics
        [p] = t.partitions
        return int(p.error_code)

    def first_commit() -> int:
        deadline = time.monotonic() + 30
        while (code := commit(5, 1)) != 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # the coordinator may still be loading its partition
        return code

    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        with trio.fail_after(30):
            while not server.ready()[0]:
                await trio.sleep(0.05)
        assert await trio.to_thread.run_sync(first_commit) == 0
        backend.fail_next["sync"] = errno.EIO
        assert await trio.to_thread.run_sync(commit, 9, 2) == COORDINATOR_NOT_AVAILABLE
        assert await trio.to_thread.run_sync(commit, 11, 3) == COORDINATOR_NOT_AVAILABLE
        assert server.ready() == (False, "WAL fenced after an I/O error")
        server.shutdown()
    got = await trio.to_thread.run_sync(_committed, kafka.direct_bootstrap, group, topic)
    assert got == 5  # only the commit acknowledged before the failure reached the broker


LEAVE_AFTER_S = 3.0


async def _acknowledged_commit(wal: Wal, group: str, topic: str, offset: int) -> None:
    """What the commit path writes for an OffsetCommit of ``offset`` on partitions 0 and 1
    that the broker answered without error (as if a coordinator had then lost it)."""
    entry = CommitEntry(
        OFFSET_COMMIT,
        9,
        0,
        group,
        None,
        -1,
        -1,
        tuple(CommitOffset(topic, None, p, offset, -1, "m") for p in (0, 1)),
    )
    [lsn] = await (await wal.submit_many([(COMMIT, encode_commit(entry))])).wait()
    outcome = CommitOutcomeEntry(lsn, Source.BROKER, (0, 0))
    await (await wal.submit_many([(COMMIT_OUTCOME, encode_commit_outcome(outcome))])).wait()


async def _leave_after(delay: float, member: Consumer) -> None:
    await trio.sleep(delay)
    await trio.to_thread.run_sync(member.close)


def _live_member(bootstrap: str, topic: str, group: str, protocol: str) -> Consumer:
    """A member of ``group`` (assigned, heartbeating in librdkafka's threads) that committed
    offset 30 on partition 0 and 5 on partition 1, directly to the broker."""
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": protocol,
        "enable.auto.commit": False,
    }
    if protocol == "classic":
        config |= {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    consumer = Consumer(config)
    consumer.subscribe([topic])
    deadline = time.monotonic() + 60
    while not consumer.assignment():
        assert time.monotonic() < deadline, "no assignment"
        consumer.poll(0.2)
    offsets = [TopicPartition(topic, 0, 30), TopicPartition(topic, 1, 5)]
    assert all(tp.error is None for tp in consumer.commit(offsets=offsets, asynchronous=False))
    return consumer


async def test_commit_repair_waits_for_members_and_keeps_newer_commits(
    kafka: DevCluster, new_topic: Callable[..., str]
) -> None:
    """The repair's shell against real groups with a live member, classic and KIP-848: the
    WAL says offset 20 was acknowledged on both partitions; the broker has 30 (a newer
    commit: kept) and 5 (behind: restored). While the member is in the group the
    coordinator refuses the memberless commit and the repair waits; once the member has
    left, it commits 20, and only there."""
    topic = new_topic(partitions=2)
    host, port = kafka.direct_bootstrap.split(",")[0].rsplit(":", 1)
    for protocol in ("classic", "consumer"):
        group = f"g-live-{protocol}-{topic}"
        member = await trio.to_thread.run_sync(
            _live_member, kafka.direct_bootstrap, topic, group, protocol
        )
        async with open_wal(MemoryBackend(), WalConfig(segment_size=1 << 20, io="thread")) as wal:
            await _acknowledged_commit(wal, group, topic, 20)
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_leave_after, LEAVE_AFTER_S, member)
                async with UpstreamClient.lazy((host, int(port)), plain_dial) as client:
                    report = await repair_commits(client, wal, node_id=None, wait_s=60, retry_s=0.5)
            waited = trio.current_time() - started
        assert (report.restored, report.ahead, report.intact, report.problems) == (1, 1, 0, [])
        assert waited >= LEAVE_AFTER_S, f"{protocol}: restored while the member was there"
        got = await trio.to_thread.run_sync(_committed_all, kafka.direct_bootstrap, group, topic)
        assert got == {0: 30, 1: 20}, protocol
        print(f"{protocol}: restored 1, kept 1 newer, waited {waited:.1f}s for the member")


def _committed_all(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
        return {tp.partition: int(tp.offset) for tp in tps}
    finally:
        consumer.close()


async def test_walproxy_repair_restores_commits_and_reports_them(
    kafka: DevCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """``walproxy repair`` (no proxying) on a WAL holding an acknowledged commit the broker
    does not have (the group does not exist there): it commits it, prints the figures and
    exits 0; run again, the offsets are intact and nothing is restored twice."""
    topic = new_topic(partitions=2)
    group = f"g-cli-{topic}"
    wal_dir = tmp_path / "wal"
    async with open_wal(str(wal_dir), WalConfig(segment_size=1 << 20)) as wal:
        await _acknowledged_commit(wal, group, topic, 20)
    node = kafka.broker_nodes[0]
    env = {
        **os.environ,
        "WALPROXY_PROXY_UPSTREAM": f"127.0.0.1:{node.client_port}",
        "WALPROXY_PROXY_NODE_ID": str(node.node_id),
        "WALPROXY_WAL_DIR": str(wal_dir),
        "WALPROXY_LOG_FORMAT": "json",
    }
    reports = []
    for _ in range(2):
        run = await trio.run_process(
            [sys.executable, "-m", "proxy", "repair"],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        reports.append(json.loads(run.stdout))
    first, second = reports
    assert (first["commits_restored"], first["commit_groups_restored"]) == (2, 1), first
    assert (second["commits_restored"], second["commits_intact"]) == (0, 2), second
    assert first["problems"] == second["problems"] == []
    got = await trio.to_thread.run_sync(_committed_all, kafka.direct_bootstrap, group, topic)
    assert got == {0: 20, 1: 20}
