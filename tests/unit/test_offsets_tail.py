"""The rebuild's ``__consumer_offsets`` tail: acknowledged commits from the WAL become the
coordinator's own offset commit records, in the group's partition."""

from __future__ import annotations

import struct
import uuid

from offload.offsets_tail import (
    commit_batches,
    commit_key,
    commit_value,
    decode_commit_record,
    plan_offsets_tail,
)
from offload.wal_tail import collect
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
from proxy.kafka.groups import group_partition
from proxy.kafka.record_batch import iter_batches
from wal import Entry

TID = uuid.UUID(int=7)


def test_records_are_kafkas_layout() -> None:
    key = commit_key("g", "t", 3)
    # int16 key version 1, then group, topic (int16-length strings) and the partition
    want = struct.pack(">hh", 1, 1) + b"g" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 3)
    assert key == want
    value = commit_value(42, 5, None, 1_700_000_000_000)
    assert value == struct.pack(">hqih", 3, 42, 5, 0) + struct.pack(">q", 1_700_000_000_000)
    assert decode_commit_record(key, value) == ("g", "t", 3, 42, 5, "", 1_700_000_000_000)


def _entries(*commits: tuple[CommitEntry, tuple[int, ...] | None]) -> list[Entry]:
    out: list[Entry] = []
    lsn = 0
    for commit, codes in commits:
        lsn += 1
        commit_lsn = lsn
        out.append(Entry(lsn, COMMIT, encode_commit(commit)))
        if codes is not None:
            lsn += 1
            outcome = CommitOutcomeEntry(commit_lsn, Source.BROKER, codes)
            out.append(Entry(lsn, COMMIT_OUTCOME, encode_commit_outcome(outcome)))
    return out


def _commit(group: str, *offsets: CommitOffset, txn: str | None = None) -> CommitEntry:
    return CommitEntry(8, 9, 1000, group, txn, 5 if txn else -1, 0 if txn else -1, offsets)


def test_latest_acknowledged_commit_per_partition_goes_to_the_groups_partition() -> None:
    a0 = CommitOffset("t", None, 0, 10, 1, "m")
    a1 = CommitOffset("t", None, 1, 20, -1, None)
    facts = collect(
        _entries(
            (_commit("ga", a0, a1), (0, 0)),
            (_commit("ga", CommitOffset("t", None, 0, 15, 1, "m2")), (0,)),  # newer, acked
            (_commit("ga", CommitOffset("t", None, 1, 99, 1, None)), (27,)),  # refused
            (_commit("ga", CommitOffset("t", None, 1, 98, 1, None)), None),  # never answered
            (_commit("gb", CommitOffset(None, TID, 0, 7, 2, None)), (0,)),  # by topic id
            (_commit("gt", CommitOffset("t", None, 0, 3, -1, None), txn="tx"), (0,)),
        )
    )
    assert facts.commits_in_doubt == 1
    hosted = {group_partition("ga", 50), group_partition("gb", 50)}
    planned = plan_offsets_tail(facts, hosted, {TID: "named"}, 50)
    assert planned.acknowledged == 3  # ga/t/0, ga/t/1, gb/named/0
    assert planned.transactional_skipped == 1
    got = {
        (c.group_id, c.topic or str(c.topic_id), c.partition): c.offset
        for cs in planned.commits.values()
        for c in cs
    }
    assert got == {("ga", "t", 0): 15, ("ga", "t", 1): 20, ("gb", str(TID), 0): 7}
    p = group_partition("ga", 50)
    batches = commit_batches(planned.commits[p], 100, 4, {TID: "named"})
    assert [b.base_offset for b in batches] == list(range(100, 100 + len(batches)))
    for b in batches:
        [h] = iter_batches(b.data)  # CRC checked
        assert (h.base_offset, h.partition_leader_epoch, h.record_count) == (b.base_offset, 4, 1)
        assert h.producer_id == -1 and not h.is_transactional


def test_commits_of_partitions_hosted_elsewhere_are_counted_not_written() -> None:
    facts = collect(_entries((_commit("g", CommitOffset("t", None, 0, 1, -1, None)), (0,))))
    planned = plan_offsets_tail(facts, set(), {}, 50)
    assert (planned.restored, planned.elsewhere) == (0, 1)


def test_broker_json_records_the_offsets_partition_count_and_reads_without_it() -> None:
    import json

    from offload.node_files import BrokerInfo, TopicEntry, decode_broker_info, encode_broker_info

    info = BrokerInfo(
        "c", 1, None, None, {"__consumer_offsets": TopicEntry(TID, (0, 2), 10)}, writer_epoch=1
    )
    assert decode_broker_info(encode_broker_info(info)).topics == info.topics
    doc = json.loads(encode_broker_info(info))
    del doc["topics"]["__consumer_offsets"]["partition_count"]  # an older offloader's file
    back = decode_broker_info(json.dumps(doc).encode())
    assert back.topics["__consumer_offsets"] == TopicEntry(TID, (0, 2), None)
