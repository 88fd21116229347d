"""The zero-copy Produce skimmer agrees with kio (Kafka's schemas) on every version it shares."""

from __future__ import annotations

import datetime
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema
from kio.static.primitive import i16, i32

from proxy.kafka.codec import decode_request, encode, kio_version_range
from proxy.kafka.produce_skim import SkimError, produce_acks, skim_produce

KIO_MIN, KIO_MAX = kio_version_range(0) or (3, 13)
VERSIONS = list(range(KIO_MIN, KIO_MAX + 1))

topic_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=40)
records_blob = st.one_of(st.none(), st.binary(min_size=0, max_size=300))


@st.composite
def produce_requests(draw: st.DrawFn, version: int) -> tuple[bytes, dict]:
    schema = load_request_schema(0, version)
    module = __import__(schema.__module__, fromlist=["x"])
    topics = []
    expected = []
    for _ in range(draw(st.integers(0, 4))):
        parts = []
        tid = uuid.UUID(bytes=draw(st.binary(min_size=16, max_size=16)))
        name = draw(topic_names)
        for _ in range(draw(st.integers(0, 4))):
            index = draw(st.integers(-(2**31), 2**31 - 1))
            blob = draw(records_blob)
            parts.append(module.PartitionProduceData(index=i32(index), records=blob))
            expected.append(
                (name if version < 13 else None, tid if version >= 13 else None, index, blob or b"")
            )
        key = {"topic_id": tid} if version >= 13 else {"name": name}
        topics.append(module.TopicProduceData(**key, partition_data=tuple(parts)))
    txn = draw(st.one_of(st.none(), topic_names))
    acks = draw(st.sampled_from([-1, 0, 1]))
    body = schema(
        transactional_id=txn,
        acks=i16(acks),
        timeout=datetime.timedelta(milliseconds=draw(st.integers(0, 2**31 - 1))),
        topic_data=tuple(topics),
    )
    header = schema.__header_schema__(
        request_api_key=i16(0),
        request_api_version=i16(version),
        correlation_id=i32(draw(st.integers(-(2**31), 2**31 - 1))),
        client_id=draw(st.one_of(st.none(), topic_names)),
    )
    return encode(header, body), {
        "txn": txn,
        "acks": acks,
        "parts": expected,
        "corr": int(header.correlation_id),
    }


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_skimmer_agrees_with_kio(version: int, data: st.DataObject) -> None:
    frame, want = data.draw(produce_requests(version))
    skim = skim_produce(memoryview(frame))
    assert skim.version == version
    assert skim.correlation_id == want["corr"]
    assert skim.acks == want["acks"] == produce_acks(memoryview(frame))
    assert skim.transactional_id == want["txn"]
    got = [(p.topic, p.topic_id, p.partition, frame[p.start : p.end]) for p in skim.partitions]
    assert got == want["parts"]
    # kio decodes the same bytes to the same partitions, and re-encodes them byte for byte.
    header, body = decode_request(0, version, frame)
    assert encode(header, body) == frame
    kio_blobs = [bytes(p.records or b"") for t in body.topic_data for p in t.partition_data]
    assert kio_blobs == [blob for *_, blob in want["parts"]]


def _one_partition_request(version: int, records: bytes) -> bytes:
    """A Produce request (kio-encoded) for partition 0 of topic "t"."""
    schema = load_request_schema(0, version)
    module = __import__(schema.__module__, fromlist=["x"])
    body = schema(
        transactional_id=None,
        acks=i16(-1),
        timeout=datetime.timedelta(seconds=30),
        topic_data=(
            module.TopicProduceData(
                name="t",
                partition_data=(module.PartitionProduceData(index=i32(0), records=records),),
            ),
        ),
    )
    header = schema.__header_schema__(
        request_api_key=i16(0),
        request_api_version=i16(version),
        correlation_id=i32(1),
        client_id="c",
    )
    return encode(header, body)


def test_slices_do_not_copy() -> None:
    raw = bytearray(_one_partition_request(11, b"x" * 1000))
    view = memoryview(raw)
    part = skim_produce(view).partitions[0]
    records = view[part.start : part.end]
    raw[part.start] = ord("y")  # the slice is a window on the frame, not a copy
    assert records[0] == ord("y")


def test_legacy_versions_without_transactional_id() -> None:
    # Produce v0-v2 have no transactional_id; kio does not model them, so build by hand.
    body = struct.pack(">hi", 1, 1000) + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"
    body += struct.pack(">i", 1) + struct.pack(">i", 7) + struct.pack(">i", 3) + b"abc"
    frame = struct.pack(">hhi", 0, 2, 99) + struct.pack(">h", 1) + b"c" + body
    skim = skim_produce(frame)
    assert (skim.acks, skim.transactional_id, skim.correlation_id) == (1, None, 99)
    [p] = skim.partitions
    assert (p.topic, p.partition, frame[p.start : p.end]) == ("t", 7, b"abc")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda f: f[:-1], id="truncated"),
        pytest.param(lambda f: f + b"\x00", id="trailing-byte"),
        pytest.param(lambda f: f[:10], id="header-only"),
        pytest.param(lambda f: f[:2] + b"\x00\x63" + f[4:], id="unknown-version"),
    ],
)
def test_malformed_requests_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    frame = _one_partition_request(9, b"abc")
    skim_produce(frame)  # the original is fine
    with pytest.raises(SkimError):
        skim_produce(mutate(frame))
