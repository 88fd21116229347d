"""Shared helpers for the real-client integration tests.

Every client test follows one pattern: make N unique messages (keys, values, headers), send
them *through walproxy* with the client under test, read them back *through walproxy* with
the same client, then read the topic *directly from the broker* (its DIRECT listener, which
bypasses the proxy) and check that both views hold the same records at the same partitions
and offsets. The direct reads use confluent-kafka because it reports partition EOF exactly
(also under ``read_committed``, where EOF is the last stable offset).

Raw record batches are fetched with a hand-built Fetch request (kio) so tests can check what
the broker really stored: the compression codec, the producer id of idempotent batches and
transaction markers.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import struct
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from proxy.dev.cluster import libs_dir

JAVA_CLASSPATH = f"{libs_dir()}/*"

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {name: i for i, name in enumerate(CODECS)}  # record batch attributes & 0x7

Headers = tuple[tuple[str, bytes], ...]


# -- waiting ---------------------------------------------------------------------------------
class Deadline:
    """A bounded wait: ``while deadline.left(): ...`` then ``deadline.fail(what)``."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self, detail: str = "") -> None:
        if time.monotonic() > self.end:
            raise AssertionError(
                f"timed out after {self.seconds:.0f}s waiting for {self.what}"
                + (f": {detail}" if detail else "")
            )


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = Deadline(timeout, what)
    while True:
        result = predicate()
        if result:
            return result
        deadline.check()
        time.sleep(interval)


# -- what the tests send ---------------------------------------------------------------------
@dataclass(frozen=True)
class Msg:
    """A message to produce; ``partition`` is where the test sends it explicitly."""

    key: bytes | None
    value: bytes
    headers: Headers
    partition: int

    @property
    def content(self) -> tuple[bytes | None, bytes, Headers]:
        return (self.key, self.value, self.headers)


def unique_tag(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def messages(
    n: int, tag: str, partitions: int = 1, *, headers: bool = True, null_keys: bool = True
) -> list[Msg]:
    """``n`` unique, compressible messages spread round-robin over ``partitions``.

    Every seventh key is null (when ``null_keys``); headers include a repeated name and an
    empty value, which clients must keep in order.
    """
    out = []
    for i in range(n):
        key = None if null_keys and i % 7 == 3 else f"{tag}-k{i % 13}".encode()
        value = f"{tag}-v{i:05d}|".encode() + b"walproxy-payload " * (1 + i % 5)
        hdrs: Headers = (
            (("seq", str(i).encode()), ("dup", b"a"), ("dup", b""), ("tag", tag.encode()))
            if headers
            else ()
        )
        out.append(Msg(key, value, hdrs, i % partitions))
    return out


# -- what the tests read ---------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Rec:
    """A consumed record, normalised across clients."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int

    @property
    def content(self) -> tuple[bytes | None, bytes | None, Headers]:
        return (self.key, self.value, self.headers)


def norm_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> Headers:
    return tuple((str(k), bytes(v) if v is not None else b"") for k, v in headers or ())


def rec_from_confluent(m: Any) -> Rec:
    return Rec(
        m.partition(), m.offset(), m.key(), m.value(), norm_headers(m.headers()), m.timestamp()[1]
    )


def rec_from_kafka_python(m: Any) -> Rec:
    """Also fits aiokafka's ConsumerRecord (same field names)."""
    return Rec(m.partition, m.offset, m.key, m.value, norm_headers(m.headers), m.timestamp)


def by_position(records: Iterable[Rec]) -> list[Rec]:
    return sorted(records, key=lambda r: (r.partition, r.offset))


def assert_same_records(got: Sequence[Rec], want: Sequence[Rec], label: str) -> None:
    """Same records (key, value, headers, timestamp) at the same partitions and offsets."""
    g, w = by_position(got), by_position(want)
    dup = [pos for pos, c in Counter((r.partition, r.offset) for r in g).items() if c > 1]
    assert not dup, f"{label}: records delivered twice at (partition, offset) {dup[:5]}"
    if g == w:
        return
    gp = {(r.partition, r.offset): r for r in g}
    wp = {(r.partition, r.offset): r for r in w}
    missing = sorted(wp.keys() - gp.keys())
    extra = sorted(gp.keys() - wp.keys())
    differ = [(wp[p], gp[p]) for p in sorted(wp.keys() & gp.keys()) if wp[p] != gp[p]]
    raise AssertionError(
        f"{label}: {len(g)} records vs {len(w)} expected; missing positions {missing[:5]}, "
        f"extra positions {extra[:5]}, first differing (want, got) {differ[:2]}"
    )


def assert_contents(
    records: Sequence[Rec], msgs: Sequence[Msg], label: str, *, check_partition: bool = True
) -> None:
    """Exactly the messages sent (each once), each in the partition it was sent to."""
    got = Counter((r.partition if check_partition else 0, r.content) for r in records)
    want = Counter((m.partition if check_partition else 0, m.content) for m in msgs)
    if got != want:
        missing = list((want - got).elements())
        extra = list((got - want).elements())
        raise AssertionError(
            f"{label}: {len(records)} records vs {len(msgs)} sent; "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected "
            f"(e.g. {extra[:2]})"
        )


def assert_dense_offsets(records: Sequence[Rec], label: str) -> None:
    """Offsets 0..n-1 in every partition: no gap, no duplicate (non-transactional topics)."""
    per: dict[int, list[int]] = {}
    for r in records:
        per.setdefault(r.partition, []).append(r.offset)
    for p, offs in per.items():
        assert sorted(offs) == list(range(len(offs))), (
            f"{label}: partition {p} offsets are not 0..{len(offs) - 1}: {sorted(offs)[:20]}..."
        )


# -- confluent-kafka (also the direct-read reference) ----------------------------------------
def confluent_produce(
    bootstrap: str, topic: str, msgs: Sequence[Msg], timeout: float = 30.0, **config: Any
) -> None:
    """Produce ``msgs`` (each to its partition) and wait for every delivery report."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    errors: list[Any] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for m in msgs:
        producer.produce(
            topic,
            m.value,
            m.key,
            partition=m.partition,
            headers=list(m.headers),
            on_delivery=report,
        )
        producer.poll(0)
    left = producer.flush(timeout)
    assert left == 0, f"{left} messages not delivered to {topic} within {timeout}s"
    assert not errors, f"delivery errors producing to {topic}: {errors[:3]}"


def read_all(
    bootstrap: str, topic: str, *, committed: bool = False, timeout: float = 30.0
) -> list[Rec]:
    """Every record of every partition of ``topic``, from the beginning to the end.

    The end is the high watermark, or the last stable offset with ``committed``. No group
    membership, no commits: a pure reader.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_tag("reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        assert parts, f"topic {topic} has no partitions in Metadata from {bootstrap}"
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        at_end: set[int] = set()
        records: list[Rec] = []
        deadline = Deadline(timeout, f"reading {topic} to its end from {bootstrap}")
        while len(at_end) < len(parts):
            deadline.check(f"{len(records)} records so far, at end in {sorted(at_end)}")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise AssertionError(f"reading {topic} from {bootstrap}: {msg.error()}")
            at_end.discard(msg.partition())
            records.append(rec_from_confluent(msg))
        return by_position(records)
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets for ``topic`` (partitions without one are left out)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(partitions)]
    )
    result = admin.list_consumer_group_offsets([request])[group].result(30)
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """High watermarks, as a consumer group commit after reading everything would store."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_tag("wm")})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def wait_stable(direct_bootstrap: str, topic: str, partitions: int, timeout: float = 30) -> None:
    """Until every partition's last stable offset reaches its high watermark.

    A transaction's commit returns once the coordinator has logged it; the markers reach
    the partitions a moment later, and until then read_committed readers stop short.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": direct_bootstrap,
            "group.id": unique_tag("lso"),
            "isolation.level": "read_committed",
        }
    )
    try:

        def stable() -> bool:
            ends = end_offsets(direct_bootstrap, topic, partitions)
            return all(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] == end
                for p, end in ends.items()
            )

        wait_until(stable, timeout, f"{topic}: transaction markers on every partition")
    finally:
        consumer.close()


def proxy_ports(bootstrap: str) -> set[int]:
    return {int(hp.rsplit(":", 1)[1]) for hp in bootstrap.split(",")}


# -- raw record batches (what the broker stored) ---------------------------------------------
@dataclass(frozen=True)
class Batch:
    partition: int
    base_offset: int
    last_offset: int
    codec: int
    transactional: bool
    control: bool
    producer_id: int


def _parse_batches(partition: int, blob: bytes) -> list[Batch]:
    out = []
    pos = 0
    while pos + 61 <= len(blob):  # 61: the v2 record batch header
        base_offset, length = struct.unpack_from(">qi", blob, pos)
        if pos + 12 + length > len(blob):
            break  # a partial batch at the end of a fetch
        magic = blob[pos + 16]
        assert magic == 2, f"partition {partition}: record batch magic {magic} at {base_offset}"
        (attributes,) = struct.unpack_from(">h", blob, pos + 21)
        (last_delta,) = struct.unpack_from(">i", blob, pos + 23)
        (producer_id,) = struct.unpack_from(">q", blob, pos + 43)
        out.append(
            Batch(
                partition,
                base_offset,
                base_offset + last_delta,
                attributes & 0x7,
                bool(attributes & 0x10),
                bool(attributes & 0x20),
                producer_id,
            )
        )
        pos += 12 + length
    return out


def stored_batches(direct_bootstrap: str, topic: str, timeout: float = 30.0) -> list[Batch]:
    """Every record batch of ``topic`` as stored, fetched raw from each partition's leader."""
    from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
    from kio.schema.request_header.v2.header import RequestHeader
    from kio.static.primitive import i8, i16, i32, i32Timedelta, i64

    from proxy.dev.kafka_probe import request

    admin = AdminClient({"bootstrap.servers": direct_bootstrap})
    md = admin.list_topics(topic, timeout=10)
    leaders = {p: md.brokers[pm.leader] for p, pm in md.topics[topic].partitions.items()}
    batches: list[Batch] = []
    for p, broker in sorted(leaders.items()):
        offset = 0
        deadline = Deadline(timeout, f"raw fetch of {topic}-{p}")
        while True:
            deadline.check()
            body = FetchRequest(
                max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=0)),
                min_bytes=i32(0),
                isolation_level=i8(0),
                topics=(
                    FetchTopic(
                        topic=topic,
                        partitions=(
                            FetchPartition(
                                partition=i32(p),
                                fetch_offset=i64(offset),
                                partition_max_bytes=i32(1 << 20),
                            ),
                        ),
                    ),
                ),
                forgotten_topics_data=(),
            )
            header = RequestHeader(
                request_api_key=i16(1),
                request_api_version=i16(12),
                correlation_id=i32(7),
                client_id="walproxy-tests-raw-fetch",
            )
            resp = request(broker.host, broker.port, header, body, timeout=10)
            (pdata,) = resp.responses[0].partitions
            assert pdata.error_code == 0, f"raw fetch {topic}-{p}: error {pdata.error_code}"
            got = _parse_batches(p, bytes(pdata.records or b""))
            batches += got
            if got:
                offset = got[-1].last_offset + 1
            if offset >= pdata.high_watermark:
                break
    return batches


def codec_of_records(batches: Sequence[Batch], records: Iterable[Rec]) -> dict[int, set[int]]:
    """Map each record to the codec of the batch holding it: ``{codec: {offsets...}}``."""
    out: dict[int, set[int]] = {}
    for r in records:
        batch = next(
            (
                b
                for b in batches
                if b.partition == r.partition and b.base_offset <= r.offset <= b.last_offset
            ),
            None,
        )
        assert batch is not None, f"no stored batch holds partition {r.partition} offset {r.offset}"
        out.setdefault(batch.codec, set()).add(r.offset)
    return out


def assert_stored_codec(direct_bootstrap: str, topic: str, codec: str) -> list[Batch]:
    """Every data batch of ``topic`` was stored with ``codec`` (the client really used it)."""
    batches = [b for b in stored_batches(direct_bootstrap, topic) if not b.control]
    assert batches, f"{topic}: no record batches stored"
    # librdkafka sends a batch uncompressed when compressing would not shrink it, which
    # happens to a lone small record (codec framing overhead); any larger batch must match.
    codecs = {CODECS[b.codec] for b in batches if b.last_offset > b.base_offset}
    lone = {CODECS[b.codec] for b in batches if b.last_offset == b.base_offset}
    assert codecs == {codec}, f"{topic}: stored batch codecs {codecs}, expected {{{codec!r}}}"
    assert lone <= {codec, "none"}, f"{topic}: single-record batches stored as {lone}"
    return batches


# -- the Java tools ---------------------------------------------------------------------------
def java_argv(main_class: str, *args: str) -> list[str]:
    return [
        "java",
        "-Xshare:auto",
        "-XX:TieredStopAtLevel=1",
        "-Xms64m",
        "-Xmx256m",
        "-cp",
        JAVA_CLASSPATH,
        main_class,
        *args,
    ]


def run_java(
    main_class: str, *args: str, stdin: str | None = None, timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    """Run a Kafka tool to completion; fail with its output if it exits non-zero."""
    proc = subprocess.run(
        java_argv(main_class, *args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KAFKA_HEAP_OPTS": ""},
    )
    assert proc.returncode == 0, (
        f"{main_class} {' '.join(args)} exited {proc.returncode}:\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among a tool's output lines (log lines are skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def write_properties(path: Path, props: dict[str, Any]) -> Path:
    buf = io.StringIO()
    for k, v in props.items():
        buf.write(f"{k}={v}\n")
    path.write_text(buf.getvalue())
    return path


def confluent_consume(
    bootstrap: str,
    topic: str,
    n: int,
    *,
    group: str | None = None,
    committed: bool = False,
    timeout: float = 30.0,
    **config: Any,
) -> list[Rec]:
    """Join ``group`` (a fresh one by default), read ``n`` records, commit them, leave."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or unique_tag("g"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            **config,
        }
    )
    records: list[Rec] = []
    try:
        consumer.subscribe([topic])
        deadline = Deadline(timeout, f"{n} records of {topic} through confluent-kafka")
        while len(records) < n:
            deadline.check(f"got {len(records)}")
            for msg in consumer.consume(n - len(records), 0.5):
                assert msg.error() is None, f"consuming {topic}: {msg.error()}"
                records.append(rec_from_confluent(msg))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return by_position(records)


# -- consumer groups: one scenario for every client ------------------------------------------
class Member:
    """A group member, whichever client: the scenario below drives it through these calls.

    ``poll`` runs one short poll round and returns new records; implementations commit the
    positions of revoked partitions in their rebalance callback (``commit_positions``), so a
    partition that moves is continued exactly where the last owner stopped.
    """

    name: str

    def poll(self) -> list[Rec]:
        raise NotImplementedError

    def assignment(self) -> set[int]:
        raise NotImplementedError

    def commit(self) -> None:
        """Synchronously commit the positions reached on the partitions assigned now."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def positions(records: Iterable[Rec], partitions: Iterable[int] | None = None) -> dict[int, int]:
    """The next offset to read per partition after ``records`` (what a commit stores)."""
    out: dict[int, int] = {}
    for r in records:
        out[r.partition] = max(out.get(r.partition, 0), r.offset + 1)
    if partitions is not None:
        wanted = set(partitions)
        out = {p: o for p, o in out.items() if p in wanted}
    return out


class ConfluentMember(Member):
    """A confluent-kafka group member (``protocol``: classic or consumer, KIP-848)."""

    def __init__(self, name: str, group: str, bootstrap: str, topic: str, protocol: str) -> None:
        self.name = name
        self.topic = topic
        self.records: list[Rec] = []
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": protocol,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "client.id": f"member-{name}",
        }
        if protocol == "classic":
            config |= {"session.timeout.ms": 10000, "heartbeat.interval.ms": 500}
        self.consumer = Consumer(config)
        self.consumer.subscribe([topic], on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self.closed = False

    def _commit(self, partitions: set[int] | None = None) -> None:
        offsets = [
            TopicPartition(self.topic, p, o) for p, o in positions(self.records, partitions).items()
        ]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)

    def _on_revoke(self, _consumer: Consumer, tps: list[TopicPartition]) -> None:
        self._commit({tp.partition for tp in tps})

    def poll(self) -> list[Rec]:
        new = []
        for msg in self.consumer.consume(10, 0.1):
            if msg.error() is not None:
                raise AssertionError(f"member {self.name}: {msg.error()}")
            new.append(rec_from_confluent(msg))
        self.records += new
        return new

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def commit(self) -> None:
        self._commit(self.assignment())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


@dataclass
class GroupRun:
    """What happened in :func:`group_scenario`, for the caller's extra checks."""

    records: dict[str, list[Rec]]
    moved: set[int]  # the partitions ``a`` owned while sharing, then moved to ``b``


def _poll_until(
    members: Sequence[Member],
    got: dict[str, list[Rec]],
    done: Callable[[], bool],
    timeout: float,
    what: str,
) -> None:
    deadline = Deadline(timeout, what)
    while not done():
        deadline.check(
            "; ".join(
                f"{m.name}: {len(got[m.name])} records, assigned {sorted(m.assignment())}"
                for m in members
            )
        )
        for m in members:
            got[m.name] += m.poll()


def group_scenario(
    make_member: Callable[[str, str], Member],
    produce: Callable[[Sequence[Msg]], None],
    direct_bootstrap: str,
    topic: str,
    partitions: int,
    tag: str,
    timeout: float = 60.0,
) -> GroupRun:
    """Two members share a group, one leaves, its partitions move, a restart resumes.

    1. ``a`` joins alone and reads a first lot; ``b`` joins and the partitions are split.
    2. A second lot is read by both, each record by the owner of its partition.
    3. ``a`` commits and leaves: ``b`` gets all partitions and reads a third lot, on ``a``'s
       former partitions starting exactly where ``a`` stopped.
    4. ``b`` commits and leaves; a restarted member ``c`` reads only the fourth lot.
    Everything consumed is compared with a direct read of the topic from the broker, and the
    committed offsets (read directly) with the end offsets.
    """
    group = unique_tag(f"{tag}-grp")
    all_parts = set(range(partitions))
    lots = [messages(n * partitions, f"{tag}-{i}", partitions) for i, n in enumerate((5, 20, 8, 5))]
    got: dict[str, list[Rec]] = {"a": [], "b": [], "c": []}
    members: list[Member] = []

    def read(who: Sequence[Member], n: int, what: str) -> None:
        total = sum(len(got[m.name]) for m in who)
        _poll_until(
            who, got, lambda: sum(len(got[m.name]) for m in who) >= total + n, timeout, what
        )

    try:
        a = make_member("a", group)
        members.append(a)
        produce(lots[0])
        _poll_until([a], got, lambda: a.assignment() == all_parts, timeout, "a to own all")
        read([a], len(lots[0]) - len(got["a"]), f"a to read the first {len(lots[0])}")
        assert_contents(got["a"], lots[0], f"{group}: a alone")

        b = make_member("b", group)
        members.append(b)

        def split() -> bool:
            pa, pb = a.assignment(), b.assignment()
            return bool(pa) and bool(pb) and not pa & pb and pa | pb == all_parts

        _poll_until(members, got, split, timeout, f"{group} to split partitions between a and b")
        owned_by_a, owned_by_b = a.assignment(), b.assignment()
        mark = {m.name: len(got[m.name]) for m in members}
        produce(lots[1])
        read(members, len(lots[1]), f"a and b to read {len(lots[1])}")
        assert_contents(got["a"] + got["b"], lots[0] + lots[1], f"{group}: a+b while sharing")
        for m, owned in ((a, owned_by_a), (b, owned_by_b)):
            parts = {r.partition for r in got[m.name][mark[m.name] :]}
            assert parts == owned, f"{group}: {m.name} owned {owned} but read from {parts}"

        a.commit()
        a.close()
        members.remove(a)
        a_stopped_at = positions(got["a"], owned_by_a)
        _poll_until([b], got, lambda: b.assignment() == all_parts, timeout, "b to take over")
        mark_b = len(got["b"])
        produce(lots[2])
        read([b], len(lots[2]), f"b to read {len(lots[2])} after a left")
        assert_contents(got["a"] + got["b"], lots[0] + lots[1] + lots[2], f"{group}: a left")
        resumed = {
            p: min(r.offset for r in got["b"][mark_b:] if r.partition == p) for p in owned_by_a
        }
        assert resumed == a_stopped_at, (
            f"{group}: b resumed a's partitions at {resumed}, a had stopped at {a_stopped_at}"
        )
        b.commit()
        b.close()
        members.remove(b)
        committed = committed_offsets(direct_bootstrap, group, topic, partitions)
        assert committed == end_offsets(direct_bootstrap, topic, partitions), (
            f"{group}: committed offsets {committed} after b left are not the end offsets"
        )

        produce(lots[3])
        c = make_member("c", group)
        members.append(c)
        read([c], len(lots[3]), f"restarted member c to read {len(lots[3])}")
        assert_contents(got["c"], lots[3], f"{group}: a restarted member resumes at commits")
        c.commit()
    finally:
        for m in members:
            m.close()
    consumed = got["a"] + got["b"] + got["c"]
    assert_same_records(consumed, read_all(direct_bootstrap, topic), f"{group} vs direct read")
    assert committed_offsets(direct_bootstrap, group, topic, partitions) == end_offsets(
        direct_bootstrap, topic, partitions
    ), f"{group}: final commits are not the end offsets"
    return GroupRun(got, owned_by_a)


# -- transactions: one scenario for every client ---------------------------------------------
TxnPlan = Sequence[tuple[Sequence[Msg], bool]]  # (messages, commit?) per transaction


def run_confluent_txn_plan(producer: Any, topic: str, plan: TxnPlan) -> None:
    """Play ``plan`` on an initialised confluent-kafka transactional producer."""
    for msgs, commit in plan:
        producer.begin_transaction()
        for m in msgs:
            producer.produce(topic, m.value, m.key, partition=m.partition, headers=list(m.headers))
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


def transaction_scenario(
    run_transactions: Callable[[TxnPlan], None],
    consume: Callable[[int, bool], list[Rec]],
    direct_bootstrap: str,
    topic: str,
    partitions: int,
    tag: str,
) -> None:
    """Commit, abort, commit with one transactional producer; check both isolation levels.

    ``consume(n, committed)`` reads ``n`` records through the proxy with the client under
    test (``read_committed`` when ``committed``).
    """
    committed1 = messages(15 * partitions, f"{tag}-c1", partitions)
    aborted = messages(15 * partitions, f"{tag}-ab", partitions)
    committed2 = messages(15 * partitions, f"{tag}-c2", partitions)
    run_transactions([(committed1, True), (aborted, False), (committed2, True)])
    wait_stable(direct_bootstrap, topic, partitions)

    direct_committed = read_all(direct_bootstrap, topic, committed=True)
    direct_all = read_all(direct_bootstrap, topic)
    assert_contents(direct_committed, committed1 + committed2, f"{topic} direct read_committed")
    assert_contents(direct_all, committed1 + aborted + committed2, f"{topic} direct uncommitted")

    seen = consume(len(committed1) + len(committed2), True)
    assert_contents(seen, committed1 + committed2, f"{topic} read_committed through walproxy")
    assert_same_records(seen, direct_committed, f"{topic} read_committed: proxy vs direct")
    seen_all = consume(len(direct_all), False)
    assert_same_records(seen_all, direct_all, f"{topic} read_uncommitted: proxy vs direct")

    batches = stored_batches(direct_bootstrap, topic)
    data = [b for b in batches if not b.control]
    markers = [b for b in batches if b.control]
    assert data and all(b.transactional and b.producer_id >= 0 for b in data), (
        f"{topic}: stored data batches are not all transactional: {data[:3]}"
    )
    assert len({b.producer_id for b in batches}) == 1, f"{topic}: several producer ids"
    assert len(markers) == 3 * partitions, (
        f"{topic}: {len(markers)} transaction markers stored, expected {3 * partitions} "
        f"(3 transactions x {partitions} partitions)"
    )


def confluent_transaction_scenario(
    bootstrap: str, direct_bootstrap: str, topic: str, partitions: int, tag: str
) -> None:
    """:func:`transaction_scenario` with a confluent-kafka producer and consumer."""

    def run(plan: TxnPlan) -> None:
        producer = Producer(
            {"bootstrap.servers": bootstrap, "transactional.id": unique_tag(f"{tag}-txn")}
        )
        producer.init_transactions(60)
        run_confluent_txn_plan(producer, topic, plan)

    def consume(n: int, committed: bool) -> list[Rec]:
        return confluent_consume(bootstrap, topic, n, committed=committed)

    transaction_scenario(run, consume, direct_bootstrap, topic, partitions, tag)


def assert_idempotent_batches(direct_bootstrap: str, topic: str) -> None:
    """Every stored batch carries one producer id (idempotence was really on)."""
    batches = stored_batches(direct_bootstrap, topic)
    pids = {b.producer_id for b in batches}
    assert batches and len(pids) == 1 and min(pids) >= 0, (
        f"{topic}: expected one producer id >= 0 on all batches, got {pids}"
    )
