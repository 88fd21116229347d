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
    END_TXN,
    END_TXN_OUTCOME,
    CommitEntry,
    CommitOffset,
    CommitOutcomeEntry,
    EndTxnEntry,
    EndTxnOutcomeEntry,
    Source,
    encode_commit,
    encode_commit_outcome,
    encode_end_txn,
    encode_end_txn_outcome,
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


def _end(committed: bool, *, pid: int = 5, epoch: int = 0) -> EndTxnEntry:
    return EndTxnEntry(3, 2000, "tx", pid, epoch, committed)


def _wal(*items: object) -> list[Entry]:
    """Entries in this order: ``(CommitEntry, codes)`` or ``(EndTxnEntry, code or None)``."""
    out: list[Entry] = []
    for item, result in items:  # type: ignore[misc]
        lsn = len(out) + 1
        if isinstance(item, CommitEntry):
            out.append(Entry(lsn, COMMIT, encode_commit(item)))
            if result is not None:
                o = CommitOutcomeEntry(lsn, Source.BROKER, result)
                out.append(Entry(lsn + 1, COMMIT_OUTCOME, encode_commit_outcome(o)))
        else:
            out.append(Entry(lsn, END_TXN, encode_end_txn(item)))
            if result is not None:
                o2 = EndTxnOutcomeEntry(lsn, Source.BROKER, result)
                out.append(Entry(lsn + 1, END_TXN_OUTCOME, encode_end_txn_outcome(o2)))
    return out


def _offsets(planned) -> dict[tuple[str, int], int]:
    return {(c.group_id, c.partition): c.offset for cs in planned.commits.values() for c in cs}


def _at(partition: int, offset: int) -> CommitOffset:
    return CommitOffset("t", None, partition, offset, -1, None)


def test_a_transactions_commits_count_where_the_wal_proves_it_committed() -> None:
    """TxnOffsetCommit then EndTxn in one WAL (a single broker's sidecar, a gateway): the
    committed transaction's offsets are written like plain commits, the aborted one's are
    passed over (the plain commit before it stands), and a plain commit after a transactional
    one wins, as the coordinator orders them by their records' place in the log."""
    facts = collect(
        _wal(
            (_commit("g", _at(0, 10), _at(1, 10), _at(2, 10)), (0, 0, 0)),
            (_commit("g", _at(0, 20), _at(1, 20), txn="tx"), (0, 0)),
            (_commit("g", _at(1, 25)), (0,)),  # plain, after the transactional one
            (_end(True), 0),  # commits the transaction: 0 -> 20; 1 stays 25
            (_commit("g", _at(0, 30), _at(2, 30), txn="tx"), (0, 0)),
            (_end(False), 0),  # aborts it: 0 stays 20, 2 stays 10
        )
    )
    planned = plan_offsets_tail(facts, {group_partition("g", 10)}, {}, 10)
    assert _offsets(planned) == {("g", 0): 20, ("g", 1): 25, ("g", 2): 10}
    assert (planned.transactional_committed, planned.transactional_aborted) == (2, 2)
    assert planned.transactional_unresolved == 0
    assert planned.transactional_skipped == 2
    [written] = planned.commits.values()
    assert [c.lsn for c in written] == sorted(c.lsn for c in written)  # in WAL order


def test_an_unproven_transactional_commit_keeps_its_partition_out() -> None:
    """The transaction's end is another coordinator's (no EndTxn here) or in doubt: what it
    committed is unknown, and writing the plain commit before it could take back an offset
    the transaction committed (and S3 holds), so that (group, topic, partition) is left out;
    a plain commit after it is written as usual."""
    facts = collect(
        _wal(
            (_commit("g", _at(0, 10), _at(1, 10)), (0, 0)),
            (_commit("g", _at(0, 20), _at(1, 20), txn="tx"), (0, 0)),
            (_commit("g", _at(1, 30)), (0,)),
            (_end(True), None),  # in doubt: never answered
        )
    )
    planned = plan_offsets_tail(facts, {group_partition("g", 10)}, {}, 10)
    assert _offsets(planned) == {("g", 1): 30}
    assert planned.transactional_unresolved == 1 and planned.transactional_committed == 0
    # an end of another producer proves nothing about this one's
    other = collect(
        _wal(
            (_commit("g", _at(0, 20), txn="tx"), (0,)),
            (_end(True, pid=6), 0),
        )
    )
    assert (
        plan_offsets_tail(other, {group_partition("g", 10)}, {}, 10).transactional_unresolved == 1
    )


def _open(pid: int = 5, epoch: int = 0, first: int = 40):
    from offload.manifest import OpenTxn

    return {group_partition("g", 10): (OpenTxn(pid, epoch, first),)}


def test_a_commit_transaction_the_s3_copy_left_open_gets_its_marker_from_the_wal() -> None:
    """The TxnOffsetCommit's record reached S3, its marker did not (the manifest's
    open_transactions): one transaction of that producer and epoch in the WAL, ended as the
    WAL proves, gives the marker the rebuild writes first in the partition's tail."""
    from offload.offsets_tail import plan_open_markers

    wal = _wal((_commit("g", _at(0, 20), txn="tx"), (0,)), (_end(True), 0))
    planned = plan_open_markers(collect(wal), _open(), 10)
    [[end]] = planned.markers.values()
    assert end.committed and (end.producer_id, end.marker_epoch) == (5, 0)
    assert not planned.warnings
    aborted = plan_open_markers(
        collect(_wal((_commit("g", _at(0, 20), txn="tx"), (0,)), (_end(False), 0))), _open(), 10
    )
    [[abort]] = aborted.markers.values()
    assert not abort.committed
    # a later epoch's transaction (TV2) is not the open one
    assert not plan_open_markers(collect(wal), _open(epoch=1), 10).markers


def test_an_open_commit_transaction_the_wal_cannot_decide_is_warned_not_guessed() -> None:
    from offload.offsets_tail import plan_open_markers

    two = _wal(  # transaction.version 1: two transactions under one epoch, either may be open
        (_commit("g", _at(0, 20), txn="tx"), (0,)),
        (_end(False), 0),
        (_commit("g", _at(0, 30), txn="tx"), (0,)),
        (_end(True), 0),
    )
    cases = {
        "transactions of that producer and epoch": two,
        "no TxnOffsetCommit": _wal((_commit("g", _at(0, 20)), (0,))),
        "is not known": _wal((_commit("g", _at(0, 20), txn="tx"), (0,)), (_end(True), None)),
    }
    for why, wal in cases.items():
        planned = plan_open_markers(collect(wal), _open(), 10)
        assert not planned.markers, why
        [warning] = planned.warnings
        assert why in warning and "producer 5 (epoch 0) from offset 40" in warning
        assert "kafka-transactions.sh abort --topic __consumer_offsets" in warning
