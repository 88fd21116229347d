import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload import layout


@given(st.uuids())
def test_topic_id_text_round_trips_and_matches_kafka_form(tid: uuid.UUID) -> None:
    text = layout.topic_id_text(tid)
    assert len(text) == 22 and "=" not in text
    assert layout.parse_topic_id(text) == tid


def test_topic_id_is_kafkas_base64() -> None:
    # Kafka's Uuid.toString() of 0x0001...: URL-safe base64 without padding.
    assert layout.topic_id_text(uuid.UUID(int=1)) == "AAAAAAAAAAAAAAAAAAAAAQ"


@given(
    base=st.integers(0, 10**15),
    span=st.integers(0, 10**6),
    epoch=st.integers(0, 2**31),
    compressed=st.booleans(),
)
def test_segment_key_round_trips_and_sorts(
    base: int, span: int, epoch: int, compressed: bool
) -> None:
    key = layout.segment_key("clu", uuid.UUID(int=7), 3, base, base + span, epoch, compressed)
    assert key.startswith("v1/clu/topics/AAAAAAAAAAAAAAAAAAAABw/3/seg/")
    name = layout.parse_segment_key(key)
    assert (name.base_offset, name.last_offset, name.writer_epoch, name.compressed) == (
        base,
        base + span,
        epoch,
        compressed,
    )
    later = layout.segment_key(
        "clu", uuid.UUID(int=7), 3, base + span + 1, base + span + 1, 0, False
    )
    assert later > key  # zero padding: lexical order is offset order


def test_fixed_keys() -> None:
    assert layout.lease_key("abc", 1) == "v1/abc/nodes/1/lease.json"
    assert layout.broker_key("abc", 1) == "v1/abc/nodes/1/broker.json"
    tid = uuid.UUID(int=1)
    key = layout.manifest_key("abc", tid, 0)
    assert key == "v1/abc/topics/AAAAAAAAAAAAAAAAAAAAAQ/0/manifest.json"
    assert layout.parse_manifest_key("abc", key) == layout.PartitionPath(tid, 0)
    assert (
        layout.segment_key("abc", tid, 0, 5, 9, 2, True)
        == "v1/abc/topics/AAAAAAAAAAAAAAAAAAAAAQ/0/seg/"
        "00000000000000000005-00000000000000000009-e2.log.zst"
    )


@pytest.mark.parametrize(
    "bad", ["", "x.log", "0-1-e1.log", "00000000000000000009-00000000000000000005-e1.log"]
)
def test_bad_segment_keys_are_refused(bad: str) -> None:
    with pytest.raises(layout.LayoutError):
        layout.parse_segment_key(bad)


def test_targets() -> None:
    assert layout.parse_target("s3://my-bucket/a/b/") == layout.Target("s3", "my-bucket", "a/b/")
    assert layout.parse_target("s3://my-bucket") == layout.Target("s3", "my-bucket", "")
    assert layout.parse_target("file:///var/x/") == layout.Target("file", path="/var/x")
    assert layout.parse_target("file://rel") == layout.Target("file", path="rel")
    for bad in ("http://x", "s3://A_B/x", "file://"):
        with pytest.raises(layout.LayoutError, match=r"offload\.target"):
            layout.parse_target(bad)
