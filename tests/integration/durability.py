"""Reusable pieces for crash-durability tests: a Kafka whose log dir is on the lossy FUSE mount
(tests/faultfs), the kill-crash-restart sequence, and an acked-vs-consumed checker.

A test produces with acks=all and keeps every delivery report (:func:`produce_acked`), crashes
the machine (:func:`crash_and_restart`: SIGKILL the broker, drop every un-fsynced write on its
log dir, start it again), reads everything back (:func:`consume_all`) and compares
(:func:`compare`): an acknowledged record that cannot be read back was lost.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.dev.cluster import DevCluster
from tests.faultfs import LossyMount, mounted, unmount


@dataclass(frozen=True)
class Acked:
    partition: int
    offset: int
    value: bytes


@dataclass
class LossyCluster:
    """A single-node DevCluster whose ``log.dirs`` is the lossy mount. The KRaft metadata log
    (``metadata.log.dir``) stays on the normal disk (DevCluster's ``node-1/meta``)."""

    cluster: DevCluster
    mount: LossyMount
    crash_stats: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def lossy_cluster(
    workdir: Path,
    *,
    with_proxy: bool = False,
    broker_overrides: dict[str, str] | None = None,
    proxy_env: dict[str, str] | None = None,
    offload_target: str | None = None,
    timeout: float = 120.0,
) -> Iterator[LossyCluster]:
    """Mount the lossy FS on ``workdir/mnt`` (backed by ``workdir/backing``), then start a
    one-node KRaft cluster with ``log.dirs`` on it. Everything is torn down on exit: brokers
    stop cleanly, the mount writes back and unmounts (lazily if something still holds it)."""
    mnt = workdir / "mnt"
    if mounted(mnt):  # a previous run was killed before it could unmount
        unmount(mnt)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    mount = LossyMount(workdir / "backing", mnt, log_path=workdir / "faultfs.log")
    # The mount must exist before start(): StorageTool format writes meta.properties there.
    with mount:
        cluster = DevCluster(
            workdir / "cluster",
            brokers=1,
            with_proxy=with_proxy,
            broker_overrides={"log.dirs": str(mnt), **(broker_overrides or {})},
            proxy_env=proxy_env or {},
            offload_targets={1: offload_target} if offload_target else {},
        )
        try:
            cluster.start(timeout)
            yield LossyCluster(cluster, mount)
        finally:
            cluster.stop()


def create_topic(
    bootstrap: str, partitions: int, *, config: dict[str, str] | None = None, timeout: float = 60.0
) -> str:
    """A fresh RF=1 topic (with topic ``config``); returns once every partition has a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"durability-{uuid.uuid4().hex[:10]}"
    topic = NewTopic(name, partitions, 1, config=config or {})
    admin.create_topics([topic], operation_timeout=30)[name].result(timeout)
    wait_leaders(bootstrap, name, partitions, timeout=timeout)
    return name


def wait_leaders(bootstrap: str, topic: str, partitions: int, *, timeout: float = 60.0) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    last = "no metadata"
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            md = admin.list_topics(topic, timeout=5).topics.get(topic)
            if md is not None and md.error is None and len(md.partitions) == partitions:
                if all(p.leader >= 0 for p in md.partitions.values()):
                    return
                last = f"leaders {[p.leader for p in md.partitions.values()]}"
            elif md is not None:
                last = str(md.error)
        time.sleep(0.2)
    raise TimeoutError(f"{topic}: not every partition has a leader after {timeout}s ({last})")


def produce_acked(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    partitions: int,
    idempotence: bool = True,
    value_size: int = 80,
    timeout: float = 60.0,
    extra: dict[str, Any] | None = None,
) -> list[Acked]:
    """Produce ``count`` unique values round-robin over the partitions with acks=all and
    return every acknowledged (partition, offset, value). Any failed delivery fails the test:
    the point is to know exactly what Kafka acknowledged."""
    from confluent_kafka import Producer

    run = uuid.uuid4().hex[:8]
    acked: list[Acked] = []
    errors: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.value()!r}: {err}")
        else:
            acked.append(Acked(msg.partition(), msg.offset(), msg.value()))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": idempotence,
            "linger.ms": 5,
            "message.timeout.ms": int(timeout * 1000),
            **(extra or {}),
        }
    )
    for i in range(count):
        value = f"{run}-{i:07d}".encode().ljust(value_size, b".")
        while True:
            try:
                producer.produce(topic, value, partition=i % partitions, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(timeout)
    if left or errors:
        raise AssertionError(
            f"produce: {left} records unacknowledged after {timeout}s, "
            f"{len(errors)} failed deliveries: {errors[:5]}"
        )
    assert len(acked) == count, (len(acked), count)
    return acked


def consume_all(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    timeout: float = 60.0,
    isolation: str = "read_committed",
) -> dict[int, list[tuple[int, bytes]]]:
    """Every record in every partition from the beginning to the high watermark, as
    {partition: [(offset, value), ...]} (librdkafka's default isolation, read_committed,
    stops at the last stable offset: a transaction left open makes this time out)."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"durability-check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    try:
        deadline = time.monotonic() + timeout
        ends: dict[int, int] = {}
        while len(ends) < partitions:  # the broker may still be loading its logs
            for p in range(partitions):
                if p in ends:
                    continue
                with contextlib.suppress(KafkaException):
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                    ends[p] = high
            if time.monotonic() > deadline:
                raise TimeoutError(f"no watermarks for {topic} after {timeout}s (have {ends})")
            if len(ends) < partitions:
                time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        done = {p for p, end in ends.items() if end == 0}
        while len(done) < partitions:
            if time.monotonic() > deadline:
                got = {p: len(v) for p, v in out.items()}
                raise TimeoutError(f"consumed {got} of high watermarks {ends} in {timeout}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    if msg.offset() >= ends[msg.partition()]:
                        done.add(msg.partition())
                    continue
                raise AssertionError(f"consume error: {msg.error()}")
            out[msg.partition()].append((msg.offset(), msg.value()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
    finally:
        consumer.close()
    return out


@dataclass
class PartitionReport:
    acked: int = 0
    consumed: int = 0
    lost: list[Acked] = field(default_factory=list)  # acked, never read back
    duplicates: list[bytes] = field(default_factory=list)  # read back more than once
    moved: list[tuple[Acked, int]] = field(default_factory=list)  # read at another offset
    unacked: list[tuple[int, bytes]] = field(default_factory=list)  # read, never acked


@dataclass
class DurabilityReport:
    partitions: dict[int, PartitionReport]

    @property
    def lost(self) -> list[Acked]:
        return [a for r in self.partitions.values() for a in r.lost]

    @property
    def duplicates(self) -> list[bytes]:
        return [v for r in self.partitions.values() for v in r.duplicates]

    @property
    def moved(self) -> list[tuple[Acked, int]]:
        return [m for r in self.partitions.values() for m in r.moved]

    @property
    def intact(self) -> bool:
        return not (self.lost or self.duplicates or self.moved)

    def summary(self) -> str:
        lines = []
        for p, r in sorted(self.partitions.items()):
            line = (
                f"partition {p}: acked {r.acked}, consumed {r.consumed}, lost {len(r.lost)}, "
                f"duplicates {len(r.duplicates)}, offset mismatches {len(r.moved)}, "
                f"unacked extras {len(r.unacked)}"
            )
            if r.lost:
                offsets = sorted(a.offset for a in r.lost)
                line += f" (lost offsets {offsets[0]}..{offsets[-1]})"
            if r.moved:
                a, got = r.moved[0]
                line += f" (e.g. {a.value[:20]!r} acked at {a.offset}, read at {got})"
            lines.append(line)
        return "\n".join(lines)


def compare(acked: list[Acked], consumed: dict[int, list[tuple[int, bytes]]]) -> DurabilityReport:
    """Per partition: what was acknowledged but not read back (lost), read back twice
    (duplicates), read back but not at the offset it was acknowledged at (moved; a copy at
    the acknowledged offset and another elsewhere is a duplicate, not a move), or read back
    without an acknowledgement (unacked: allowed, e.g. a retried batch whose ack was lost)."""
    reports: dict[int, PartitionReport] = defaultdict(PartitionReport)
    by_value = {a.value: a for a in acked}
    for a in acked:
        reports[a.partition].acked += 1
    seen: dict[bytes, list[tuple[int, int]]] = defaultdict(list)  # value -> where read
    for p, records in consumed.items():
        r = reports[p]
        r.consumed = len(records)
        for offset, value in records:
            seen[value].append((p, offset))
            if len(seen[value]) == 2:
                r.duplicates.append(value)
            if value not in by_value:
                r.unacked.append((offset, value))
    for a in acked:
        where = seen.get(a.value)
        if not where:
            reports[a.partition].lost.append(a)
        elif (a.partition, a.offset) not in where:  # a second copy elsewhere is a duplicate
            reports[a.partition].moved.append((a, where[0][1]))
    return DurabilityReport(dict(reports))


def crash_and_restart(
    lc: LossyCluster, *, node_id: int = 1, kill_proxy: bool = False, timeout: float = 120.0
) -> dict[str, Any]:
    """A machine crash under the broker: SIGKILL it (and its walproxy sidecar if
    ``kill_proxy``), drop every write on the log dir that was not fsynced, start it again and
    wait until it is registered. Returns the file system's stats from just before the drop
    (``unsynced_write_bytes``, ``dirty_files``, ...)."""
    node = lc.cluster.node(node_id)
    assert node.process is not None
    if kill_proxy and node.proxy is not None:
        node.proxy.kill()
    node.process.kill()  # waits until the JVM is reaped: its files and mappings are gone
    stats = lc.mount.crash()
    lc.crash_stats.append(stats)
    node.process.start()
    if kill_proxy and node.proxy is not None:
        lc.cluster.start_proxy(node_id)
    lc.cluster.wait_ready(timeout)
    return stats


@dataclass
class CrashRun:
    topic: str
    acked: list[Acked]
    consumed: dict[int, list[tuple[int, bytes]]]
    crash_stats: dict[str, Any]
    report: DurabilityReport

    def describe(self) -> str:
        return (
            f"{len(self.acked)} acked, {sum(len(v) for v in self.consumed.values())} read back "
            f"after the crash; {self.crash_stats['unsynced_write_bytes']} bytes in "
            f"{self.crash_stats['dirty_files']} files were un-synced at the crash\n"
            + self.report.summary()
        )


def produce_crash_consume(
    lc: LossyCluster,
    bootstrap: str,
    *,
    count: int = 3000,
    partitions: int = 3,
    idempotence: bool = True,
    value_size: int = 80,
    topic_config: dict[str, str] | None = None,
    kill_proxy: bool = False,
    consume_bootstrap: str | None = None,
) -> CrashRun:
    """The whole scenario: fresh topic, ``count`` acked records via ``bootstrap``, crash and
    restart, read everything back via ``consume_bootstrap`` (default: the brokers directly)
    and compare."""
    topic = create_topic(bootstrap, partitions, config=topic_config)
    acked = produce_acked(
        bootstrap,
        topic,
        count,
        partitions=partitions,
        idempotence=idempotence,
        value_size=value_size,
    )
    stats = crash_and_restart(lc, kill_proxy=kill_proxy)
    reader = consume_bootstrap or lc.cluster.direct_bootstrap
    wait_leaders(reader, topic, partitions)
    consumed = consume_all(reader, topic, partitions)
    return CrashRun(topic, acked, consumed, stats, compare(acked, consumed))


def consume_and_commit(
    bootstrap: str, topic: str, group: str, protocol: str, *, records: int, partitions: int
) -> dict[str, Any]:
    """Read ``records`` records of ``topic`` as consumer group ``group`` (``protocol``:
    "classic" or "consumer", KIP-848), committing synchronously after every 7 and at the
    end, then close. Returns the offsets the client was told are committed, per partition
    (the last acknowledged commit wins), and the number of commit requests; checks that the
    coordinator serves exactly those before the consumer closes."""
    from confluent_kafka import Consumer, TopicPartition

    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": protocol,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    if protocol == "classic":
        config |= {"session.timeout.ms": 10000, "heartbeat.interval.ms": 500}
    consumer = Consumer(config)
    consumer.subscribe([topic])
    acked: dict[int, int] = {}
    commits = 0
    seen = 0
    positions: dict[int, int] = {}
    try:
        while seen < records:
            for msg in consumer.consume(10, 1.0):
                assert msg.error() is None, msg.error()
                seen += 1
                positions[msg.partition()] = msg.offset() + 1
                if seen % 7 == 0 or seen == records:
                    offsets = [TopicPartition(topic, p, o) for p, o in positions.items()]
                    result = consumer.commit(offsets=offsets, asynchronous=False)
                    for tp in result or ():
                        assert tp.error is None, tp.error
                        acked[tp.partition] = tp.offset
                    commits += 1
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == acked
    return {"acked": acked, "commits": commits}


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int, *, timeout: float = 60.0
) -> dict[int, int]:
    """The group's committed offset per partition as the coordinator serves it (-1: none),
    asked by a client that does not join the group; retried while the coordinator loads."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                tps = consumer.committed(
                    [TopicPartition(topic, p) for p in range(partitions)], timeout=10
                )
                if all(tp.error is None for tp in tps):
                    return {tp.partition: max(int(tp.offset), -1) for tp in tps}
                last = str(next(tp.error for tp in tps if tp.error is not None))
            except KafkaException as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group}: no committed offsets after {timeout}s ({last})")
            time.sleep(0.5)
    finally:
        consumer.close()


def commits_behind(
    acked: dict[str, dict[int, int]], served: dict[str, dict[int, int]]
) -> dict[tuple[str, int], tuple[int, int]]:
    """(group, partition) -> (acknowledged, served) wherever the served offset is behind."""
    return {
        (g, p): (o, served[g].get(p, -1))
        for g, offsets in acked.items()
        for p, o in offsets.items()
        if served[g].get(p, -1) < o
    }


class CommittingMember(threading.Thread):
    """A consumer group member in a thread of its own: it reads ``records`` records,
    committing synchronously after every 7 and at the end (``acked``: what it was told is
    committed, per partition), then stays in the group, polling, across whatever the test
    does to the broker. Records it reads after :meth:`mark` are kept in ``after`` as
    (partition, offset): a member that re-reads below its acknowledged commit shows there."""

    def __init__(self, bootstrap: str, topic: str, group: str, protocol: str, records: int):
        super().__init__(name=f"member-{group}", daemon=True)
        self.bootstrap, self.topic, self.group, self.protocol = bootstrap, topic, group, protocol
        self.records = records
        self.acked: dict[int, int] = {}
        self.commits = 0
        self.caught_up = threading.Event()
        self.after: list[tuple[int, int]] = []
        self._marked = threading.Event()
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def mark(self) -> None:
        self._marked.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._halt.set()
        self.join(timeout)
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        config = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "group.protocol": self.protocol,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
        if self.protocol == "classic":
            config |= {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
        try:
            consumer = Consumer(config)
            consumer.subscribe([self.topic])
            positions: dict[int, int] = {}
            seen = 0
            while not self._halt.is_set():
                for msg in consumer.consume(10, 0.5):
                    if msg.error() is not None:
                        assert self._marked.is_set(), msg.error()  # the broker is away
                        continue
                    if self._marked.is_set():
                        self.after.append((msg.partition(), msg.offset()))
                        continue
                    seen += 1
                    positions[msg.partition()] = msg.offset() + 1
                    if seen % 7 == 0 or seen == self.records:
                        offsets = [TopicPartition(self.topic, p, o) for p, o in positions.items()]
                        result = consumer.commit(offsets=offsets, asynchronous=False)
                        for tp in result or ():
                            assert tp.error is None, tp.error
                            self.acked[tp.partition] = tp.offset
                        self.commits += 1
                    if seen == self.records:
                        self.caught_up.set()
            consumer.close()
        except BaseException as exc:  # reported by stop()
            self.error = exc
