"""Kafka log-directory files and the rebuild's log-dir writer, without Kafka.

The expected strings are what a Kafka 4.1.1 broker wrote into its own log directory.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload import kafka_logdir as kl
from offload.logdir_writer import (
    STAGING_DIR,
    STATE_FILE,
    FinishedPartition,
    LogDirNotEmpty,
    LogDirWriter,
)
from proxy.kafka.record_batch import build_batch, iter_batches

# From a real broker's files (4.1.1).
KAFKA_TOPIC_ID = "Zh_PRhsnSJih5G3wtfXZ-g"
KAFKA_META = """#
#Tue Dec 01 19:00:47 UTC 2026
node.id=1
directory.id=geObobd4PqiKNIwf_MXK5g
version=1
cluster.id=gW02qvDLQHCQI9FyIhMNdg
"""


def test_kafka_uuid_round_trips_a_real_topic_id() -> None:
    u = kl.parse_kafka_uuid(KAFKA_TOPIC_ID)
    assert kl.kafka_uuid(u) == KAFKA_TOPIC_ID


@given(st.uuids())
def test_kafka_uuid_round_trip(u: uuid.UUID) -> None:
    s = kl.kafka_uuid(u)
    assert len(s) == 22 and "=" not in s
    assert kl.parse_kafka_uuid(s) == u


def test_bad_uuid_is_refused() -> None:
    with pytest.raises(kl.LogDirFormatError):
        kl.parse_kafka_uuid("not-a-uuid")


def test_new_directory_ids_are_not_reserved() -> None:
    for _ in range(50):
        u = kl.parse_kafka_uuid(kl.new_directory_id())
        assert u.int >> 64 != 0 or (u.int & (2**64 - 1)) >= 100


def test_meta_properties_round_trip_with_kafkas_file() -> None:
    mp = kl.parse_meta_properties(KAFKA_META)
    assert mp == kl.MetaProperties("gW02qvDLQHCQI9FyIhMNdg", 1, "geObobd4PqiKNIwf_MXK5g")
    again = kl.parse_meta_properties(mp.encode().decode())
    assert again == mp
    body = [ln for ln in mp.encode().decode().splitlines() if not ln.startswith("#")]
    assert body == [ln for ln in KAFKA_META.splitlines() if not ln.startswith("#")]


def test_meta_properties_refuses_bad_values() -> None:
    with pytest.raises(kl.LogDirFormatError):
        kl.MetaProperties("gW02qvDLQHCQI9FyIhMNdg", -1, kl.new_directory_id()).encode()
    with pytest.raises(kl.LogDirFormatError):
        kl.MetaProperties("nope", 1, kl.new_directory_id()).encode()
    with pytest.raises(kl.LogDirFormatError):
        kl.parse_meta_properties("version=0\nnode.id=1\ncluster.id=x\n")


def test_partition_metadata_is_kafkas_format() -> None:
    u = kl.parse_kafka_uuid(KAFKA_TOPIC_ID)
    assert kl.encode_partition_metadata(u) == f"version: 0\ntopic_id: {KAFKA_TOPIC_ID}".encode()
    assert kl.parse_partition_metadata(kl.encode_partition_metadata(u).decode()) == u


def test_leader_epoch_checkpoint_format_and_checks() -> None:
    assert kl.encode_leader_epoch_checkpoint([(0, 0)]) == b"0\n1\n0 0\n"
    data = kl.encode_leader_epoch_checkpoint([(0, 0), (3, 120), (4, 121)])
    assert kl.parse_leader_epoch_checkpoint(data.decode()) == [(0, 0), (3, 120), (4, 121)]
    assert kl.encode_leader_epoch_checkpoint([]) == b"0\n0\n"
    for bad in ([(1, 0), (1, 5)], [(1, 5), (2, 5)], [(2, 0), (1, 5)], [(-1, 0)]):
        with pytest.raises(kl.LogDirFormatError):
            kl.encode_leader_epoch_checkpoint(bad)


def test_offset_checkpoint_format() -> None:
    data = kl.encode_offset_checkpoint({("exp", 1): 500, ("__consumer_offsets", 3): 0})
    assert data == b"0\n2\n__consumer_offsets 3 0\nexp 1 500\n"
    assert kl.parse_offset_checkpoint(data.decode()) == {
        ("exp", 1): 500,
        ("__consumer_offsets", 3): 0,
    }
    assert kl.parse_offset_checkpoint("0\n0\n") == {}
    with pytest.raises(kl.LogDirFormatError):
        kl.parse_offset_checkpoint("0\n3\nexp 1 5\n")
    with pytest.raises(kl.LogDirFormatError):
        kl.encode_offset_checkpoint({("bad topic", 0): 1})


def test_names() -> None:
    assert kl.partition_dir_name("__consumer_offsets", 7) == "__consumer_offsets-7"
    assert kl.segment_file_name(500) == "00000000000000000500.log"
    for topic in ("", "a b", "..", "x/y"):
        with pytest.raises(kl.LogDirFormatError):
            kl.partition_dir_name(topic, 0)


def test_roll_rules() -> None:
    assert not kl.should_roll(0, 0, 5000, 10, segment_bytes=100)  # never an empty segment
    assert not kl.should_roll(0, 60, 40, 10, segment_bytes=100)
    assert kl.should_roll(0, 61, 40, 10, segment_bytes=100)
    assert kl.should_roll(0, 1, 1, kl.MAX_OFFSET_DELTA + 1)  # index deltas are 4 bytes
    spans = kl.plan_segments([(0, 9, 60), (10, 19, 40), (20, 29, 1), (30, 30, 200)], 100)
    assert [(s.base_offset, s.first, s.end, s.size) for s in spans] == [
        (0, 0, 2, 100),
        (20, 2, 3, 1),
        (30, 3, 4, 200),
    ]
    assert kl.plan_segments([]) == []


# -- the writer -----------------------------------------------------------------------------
CLUSTER = "gW02qvDLQHCQI9FyIhMNdg"


def _batches(n: int, start: int = 0) -> tuple[bytes, list[tuple[int, int, int]]]:
    blob = b"".join(
        build_batch([b"x" * 50, b"y"], base_offset=start + 2 * i, partition_leader_epoch=0)
        for i in range(n)
    )
    return blob, [
        (h.base_offset, h.base_offset + h.last_offset_delta, h.length) for h in iter_batches(blob)
    ]


def _write_partition(w: LogDirWriter, topic: str, n: int, segment_bytes: int) -> None:
    pw = w.begin_partition(topic, 0, segment_bytes)
    blob, hs = _batches(n)
    pw.append(blob, hs)
    pw.finish(uuid.uuid4(), [(0, 0)])
    w.commit_partition(pw, FinishedPartition(topic, 0, 0, hs[-1][1] + 1, len(blob), "v1"))


def test_writer_rolls_segments_and_writes_every_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    w = LogDirWriter(root, cluster_id=CLUSTER, node_id=3)
    w.open()
    _write_partition(w, "t", 10, segment_bytes=400)
    meta = kl.MetaProperties(CLUSTER, 3, kl.new_directory_id())
    mmeta = kl.MetaProperties(CLUSTER, 3, kl.new_directory_id())
    w.finish(meta, tmp_path / "meta", mmeta)
    part = root / "t-0"
    logs = sorted(p.name for p in part.glob("*.log"))
    assert len(logs) > 1 and logs[0] == "00000000000000000000.log"
    blob = b"".join((part / n).read_bytes() for n in logs)
    assert [h.base_offset for h in iter_batches(blob)] == list(range(0, 20, 2))
    for n in logs:  # every segment starts at its name's offset
        assert next(iter_batches((part / n).read_bytes())).base_offset == int(n[:20])
    assert kl.parse_meta_properties((root / "meta.properties").read_text()) == meta
    assert kl.parse_meta_properties((tmp_path / "meta" / "meta.properties").read_text()) == mmeta
    assert kl.parse_offset_checkpoint((root / kl.REPLICATION_OFFSET_CHECKPOINT).read_text()) == {
        ("t", 0): 20
    }
    assert not (root / STAGING_DIR).exists()
    assert json.loads((root / STATE_FILE).read_text())["complete"] is True


def test_writer_refuses_foreign_data(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "t-0").mkdir(parents=True)
    with pytest.raises(LogDirNotEmpty, match="not empty"):
        LogDirWriter(root, cluster_id=CLUSTER, node_id=1).open()
    (tmp_path / "empty" / "lost+found").mkdir(parents=True)
    LogDirWriter(tmp_path / "empty", cluster_id=CLUSTER, node_id=1).open()  # mkfs leftovers


def test_writer_resumes_its_own_partial_rebuild(tmp_path: Path) -> None:
    root = tmp_path / "data"
    w = LogDirWriter(root, cluster_id=CLUSTER, node_id=1)
    w.open()
    _write_partition(w, "a", 3, 1 << 20)
    half = w.begin_partition("b", 0, 1 << 20)  # interrupted: staging left behind
    blob, hs = _batches(2)
    half.append(blob, hs)
    half.abort()
    with pytest.raises(LogDirNotEmpty, match="cluster"):
        LogDirWriter(root, cluster_id=CLUSTER, node_id=2).open()
    again = LogDirWriter(root, cluster_id=CLUSTER, node_id=1)
    again.open()
    assert again.resumed and not again.complete
    assert again.is_finished("a", 0, "v1") and not again.is_finished("a", 0, "v2")
    assert not (root / STAGING_DIR).exists()
    (root / "stray").write_text("x")
    with pytest.raises(LogDirNotEmpty, match="stray"):
        LogDirWriter(root, cluster_id=CLUSTER, node_id=1).open()
    os.unlink(root / "stray")
    _write_partition(again, "a", 4, 1 << 20)  # a newer source replaces a finished partition
    assert again.finished[("a", 0)].next_offset == 8
