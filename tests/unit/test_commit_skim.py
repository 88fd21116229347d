"""The offset commit skimmer agrees with kio (Kafka's schemas) on every version it reads, and
the COMMIT / COMMIT_OUTCOME WAL entries round-trip."""

from __future__ import annotations

import dataclasses
import datetime
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema
from kio.static.primitive import i16, i32, i64

from proxy.durable.wal_entries import (
    CommitEntry,
    CommitOffset,
    CommitOutcomeEntry,
    EntryError,
    Source,
    decode_commit,
    decode_commit_outcome,
    encode_commit,
    encode_commit_outcome,
)
from proxy.kafka.codec import decode_request, decode_response, encode, kio_version_range
from proxy.kafka.commit_codec import error_response, response_errors
from proxy.kafka.commit_skim import VERSION_RANGES, CommitSkimError, skim_commit
from proxy.kafka.groups import group_partition, java_string_hash
from proxy.kafka.protocol import COORDINATOR_NOT_AVAILABLE, OFFSET_COMMIT, TXN_OFFSET_COMMIT

CASES = [(key, v) for key, (lo, hi) in VERSION_RANGES.items() for v in range(lo, hi + 1)]

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=30)
anything = st.text(max_size=40)  # group ids and metadata may be any UTF-8
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)


def test_the_skimmer_covers_what_kio_knows() -> None:
    # Every version kio models is read; nothing is advertised that kio could not check.
    assert VERSION_RANGES[OFFSET_COMMIT] == kio_version_range(OFFSET_COMMIT)
    assert VERSION_RANGES[TXN_OFFSET_COMMIT] == kio_version_range(TXN_OFFSET_COMMIT)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


@st.composite
def commit_requests(draw: st.DrawFn, api_key: int, version: int) -> tuple[bytes, dict]:
    schema = load_request_schema(api_key, version)
    module = __import__(schema.__module__, fromlist=["x"])
    prefix = "TxnOffsetCommit" if api_key == TXN_OFFSET_COMMIT else "OffsetCommit"
    part_cls = getattr(module, f"{prefix}RequestPartition")
    topic_cls = getattr(module, f"{prefix}RequestTopic")
    epochs = "committed_leader_epoch" in _fields(part_cls)
    by_id = "topic_id" in _fields(topic_cls)
    topics, expected = [], []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(names)
        tid = uuid.UUID(bytes=draw(st.binary(min_size=16, max_size=16)))
        parts = []
        for _ in range(draw(st.integers(0, 3))):
            index, offset = draw(int32), draw(int64)
            epoch = draw(int32) if epochs else -1
            meta = draw(st.one_of(st.none(), anything))
            kw = {"committed_leader_epoch": i32(epoch)} if epochs else {}
            parts.append(
                part_cls(
                    partition_index=i32(index),
                    committed_offset=i64(offset),
                    committed_metadata=meta,
                    **kw,
                )
            )
            wire_id = tid if tid.int else None  # the zero id reads as none (kio alike)
            expected.append(
                (None if by_id else name, wire_id if by_id else None, index, offset, epoch, meta)
            )
        key = {"topic_id": tid} if by_id else {"name": name}
        topics.append(topic_cls(**key, partitions=tuple(parts)))
    group = draw(anything)
    body_fields = _fields(schema)
    kwargs: dict = {"group_id": group, "topics": tuple(topics)}
    txn = None
    producer = (-1, -1)
    if api_key == TXN_OFFSET_COMMIT:
        txn = draw(names)
        producer = (draw(int64), draw(st.integers(-(2**15), 2**15 - 1)))
        kwargs |= {
            "transactional_id": txn,
            "producer_id": i64(producer[0]),
            "producer_epoch": i16(producer[1]),
        }
    if "generation_id_or_member_epoch" in body_fields:
        kwargs["generation_id_or_member_epoch"] = i32(draw(int32))
    if "generation_id" in body_fields:
        kwargs["generation_id"] = i32(draw(int32))
    if "member_id" in body_fields:
        kwargs["member_id"] = draw(anything)
    if "group_instance_id" in body_fields:
        kwargs["group_instance_id"] = draw(st.one_of(st.none(), names))
    if "retention_time" in body_fields:
        kwargs["retention_time"] = datetime.timedelta(milliseconds=draw(st.integers(-1, 2**40)))
    header = schema.__header_schema__(
        request_api_key=i16(api_key),
        request_api_version=i16(version),
        correlation_id=i32(draw(int32)),
        client_id=draw(st.one_of(st.none(), names)),
    )
    want = {
        "group": group,
        "txn": txn,
        "producer": producer,
        "parts": expected,
        "corr": int(header.correlation_id),
    }
    return encode(header, schema(**kwargs)), want


@pytest.mark.parametrize(("api_key", "version"), CASES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_skimmer_agrees_with_kio(api_key: int, version: int, data: st.DataObject) -> None:
    frame, want = data.draw(commit_requests(api_key, version))
    skim = skim_commit(memoryview(frame))
    assert (skim.api_key, skim.version, skim.correlation_id) == (api_key, version, want["corr"])
    assert skim.group_id == want["group"]
    assert skim.transactional_id == want["txn"]
    assert (skim.producer_id, skim.producer_epoch) == want["producer"]
    got = [
        (p.topic, p.topic_id, p.partition, p.offset, p.leader_epoch, p.metadata)
        for p in skim.partitions
    ]
    assert got == want["parts"]
    header, body = decode_request(api_key, version, frame)  # kio reads the same bytes
    assert encode(header, body) == frame
    # The proxy's own refusal is a response kio reads, naming every partition.
    answer = error_response(skim, COORDINATOR_NOT_AVAILABLE)
    decode_response(api_key, version, answer)
    errors = response_errors(api_key, version, answer)
    assert set(errors) == {(p.topic, p.topic_id, p.partition) for p in skim.partitions}
    assert set(errors.values()) <= {COORDINATOR_NOT_AVAILABLE}


def _frame(api_key: int, version: int) -> bytes:
    frame, _ = commit_requests(api_key, version).example()
    return frame


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda f: f[:-1], id="truncated"),
        pytest.param(lambda f: f + b"\x00", id="trailing-byte"),
        pytest.param(lambda f: f[:9], id="short-header"),
        pytest.param(lambda f: f[:2] + b"\x00\x63" + f[4:], id="unknown-version"),
        pytest.param(lambda f: b"\x00\x00" + f[2:], id="not-a-commit"),
    ],
)
@pytest.mark.parametrize(("api_key", "version"), [(OFFSET_COMMIT, 9), (TXN_OFFSET_COMMIT, 2)])
def test_malformed_requests_are_refused(api_key: int, version: int, mutate) -> None:  # type: ignore[no-untyped-def]
    schema = load_request_schema(api_key, version)
    module = __import__(schema.__module__, fromlist=["x"])
    prefix = "TxnOffsetCommit" if api_key == TXN_OFFSET_COMMIT else "OffsetCommit"
    part = getattr(module, f"{prefix}RequestPartition")(
        partition_index=i32(0), committed_offset=i64(5), committed_metadata="m"
    )
    topic = getattr(module, f"{prefix}RequestTopic")(name="t", partitions=(part,))
    extra = (
        {"transactional_id": "tx", "producer_id": i64(1), "producer_epoch": i16(0)}
        if api_key == TXN_OFFSET_COMMIT
        else {"generation_id_or_member_epoch": i32(1), "member_id": "m"}
    )
    body = schema(group_id="g", topics=(topic,), **extra)
    header = schema.__header_schema__(
        request_api_key=i16(api_key),
        request_api_version=i16(version),
        correlation_id=i32(1),
        client_id="c",
    )
    frame = encode(header, body)
    assert skim_commit(frame).partitions[0].offset == 5
    with pytest.raises(CommitSkimError):
        skim_commit(mutate(frame))


@given(
    group=anything,
    txn=st.one_of(st.none(), names),
    offsets=st.lists(
        st.builds(
            CommitOffset,
            st.one_of(st.none(), names),
            st.one_of(st.none(), st.uuids()),
            int32,
            int64,
            int32,
            st.one_of(st.none(), anything),
        ),
        max_size=4,
    ),
)
def test_commit_entries_round_trip(group: str, txn: str | None, offsets: list) -> None:
    # A topic given by name has no id and vice versa (what the skimmer produces).
    offsets = [dataclasses.replace(o, topic_id=None) if o.topic else o for o in offsets]
    entry = CommitEntry(8, 9, 1_700_000_000_000, group, txn, 7, 3, tuple(offsets))
    assert decode_commit(encode_commit(entry)) == entry
    outcome = CommitOutcomeEntry(42, Source.BROKER, tuple(range(len(offsets))))
    assert decode_commit_outcome(encode_commit_outcome(outcome)) == outcome


def test_damaged_commit_entries_are_refused() -> None:
    entry = CommitEntry(8, 9, 1, "g", None, -1, -1, (CommitOffset("t", None, 0, 5, -1, "m"),))
    raw = encode_commit(entry)
    for bad in (raw[:-1], raw + b"x", b"\x02" + raw[1:]):
        with pytest.raises(EntryError):
            decode_commit(bad)
    raw = encode_commit_outcome(CommitOutcomeEntry(1, Source.BROKER, (0, 0)))
    for bad in (raw[:-1], raw + b"\x00\x00", b"\x02" + raw[1:], raw[:1] + b"\x09" + raw[2:]):
        with pytest.raises(EntryError):
            decode_commit_outcome(bad)


def test_group_partition_is_kafkas() -> None:
    # Java: "".hashCode() == 0, "a".hashCode() == 97, "my-group".hashCode() == 1164202866
    # (values from Java's String.hashCode definition s[0]*31^(n-1) + ... + s[n-1]).
    assert java_string_hash("") == 0
    assert java_string_hash("a") == 97
    assert java_string_hash("polygenelubricants") == -(2**31)  # the classic MIN_VALUE string
    h = 0
    for ch in "my-group":
        h = (31 * h + ord(ch)) % 2**32
    assert java_string_hash("my-group") == (h - 2**32 if h >= 2**31 else h)
    assert group_partition("polygenelubricants", 50) == 0  # Utils.abs(MIN_VALUE) == 0
    assert 0 <= group_partition("my-group", 50) < 50
    # A negative hash: Utils.abs is Math.abs, not h & 0x7fffffff (found by the rebuild test:
    # a group whose hash is negative was restored into another partition than Kafka's).
    assert java_string_hash("grp-1efa66d5") == -890784376
    assert group_partition("grp-1efa66d5", 10) == 6  # 890784376 % 10; & 0x7fffffff gave 2
