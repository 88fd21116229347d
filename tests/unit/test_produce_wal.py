"""WAL entries of the produce path and reconciliation planning, without sockets or disks."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.durable.repair_plan import (
    Abandon,
    Found,
    LogBatch,
    Mismatch,
    Reproduce,
    WalBatch,
    plan_partition,
)
from proxy.durable.wal_entries import (
    BatchEntry,
    EntryError,
    OutcomeEntry,
    Source,
    decode_batch,
    decode_outcome,
    encode_batch,
    encode_outcome,
)
from proxy.kafka.produce_codec import error_response, response_outcomes, response_with_errors
from proxy.kafka.record_batch import TRANSACTIONAL_FLAG, build_batch, iter_batches

names = st.one_of(st.none(), st.text(min_size=1, max_size=30))


@given(
    acks=st.sampled_from([-1, 0, 1]),
    partition=st.integers(0, 2**31 - 1),
    topic=names,
    tid=st.one_of(st.none(), st.uuids()),
    txn=names,
    records=st.binary(max_size=500),
)
def test_batch_entry_round_trip(acks, partition, topic, tid, txn, records) -> None:  # type: ignore[no-untyped-def]
    entry = BatchEntry(acks, partition, topic or None, tid, txn, records)
    back = decode_batch(encode_batch(entry))
    assert (back.acks, back.partition, back.topic, back.topic_id, back.transactional_id) == (
        acks,
        partition,
        topic or None,
        tid,
        txn,
    )
    assert bytes(back.records) == records


@given(
    lsn=st.integers(1, 2**64 - 1),
    source=st.sampled_from(list(Source)),
    err=st.integers(-(2**15), 2**15 - 1),
    base=st.integers(-1, 2**63 - 1),
    reason=st.text(max_size=50),
)
def test_outcome_entry_round_trip(lsn, source, err, base, reason) -> None:  # type: ignore[no-untyped-def]
    o = OutcomeEntry(lsn, source, err, base, -1, reason)
    assert decode_outcome(encode_outcome(o)) == o


def test_bad_entries_are_refused() -> None:
    with pytest.raises(EntryError):
        decode_batch(b"\x09" + bytes(30))  # unknown format version
    with pytest.raises(EntryError):
        decode_outcome(b"\x01\x01")


def _wal(
    lsn: int,
    n: int,
    *,
    acked: int | None = None,
    pid: int = -1,
    seq: int = -1,
    txn: bool = False,
    tag: bytes = b"",
) -> WalBatch:
    blob = build_batch(
        [tag + bytes([i]) for i in range(n)],
        producer_id=pid,
        producer_epoch=0 if pid >= 0 else -1,
        base_sequence=seq,
        attributes=TRANSACTIONAL_FLAG if txn else 0,
    )
    return WalBatch(lsn, tuple(iter_batches(blob)), acks0=False, acked_offset=acked)


def _in_log(b: WalBatch, offset: int) -> LogBatch:
    h = b.first
    return LogBatch(
        offset,
        offset + h.last_offset_delta,
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
        h.crc,
        h.record_count,
    )


def test_lost_acknowledged_tail_is_restored_in_offset_order() -> None:
    a, b, c = (
        _wal(1, 2, acked=0, tag=b"a"),
        _wal(3, 3, acked=5, tag=b"c"),
        _wal(2, 3, acked=2, tag=b"b"),
    )
    plan = plan_partition([a, b, c], log_end=2, log_batches=[_in_log(a, 0)])
    assert plan.intact == 1
    assert plan.actions == [Reproduce(2, 2), Reproduce(3, 5)]
    assert not plan.loud


def test_in_doubt_found_by_producer_sequence_or_crc() -> None:
    idem = _wal(1, 2, pid=7, seq=10)
    plain = _wal(2, 1, tag=b"p")
    plan = plan_partition(
        [idem, plain], log_end=10, log_batches=[_in_log(plain, 4), _in_log(idem, 8)]
    )
    assert sorted(plan.actions, key=lambda a: a.lsn) == [Found(1, 8), Found(2, 4)]


def test_in_doubt_not_found_is_reproduced_but_transactions_are_not() -> None:
    plain, txn = _wal(1, 1, tag=b"x"), _wal(2, 1, pid=3, seq=0, txn=True)
    plan = plan_partition([plain, txn], log_end=0, log_batches=[])
    assert plan.actions[0] == Reproduce(1, None)
    assert isinstance(plan.actions[1], Abandon) and not plan.actions[1].was_acked


def test_gap_before_lost_batch_is_filled_by_an_in_doubt_batch_of_that_size() -> None:
    doubt = _wal(1, 2, tag=b"d")  # landed at 0..1, then lost with the page cache
    acked = _wal(2, 1, acked=2, tag=b"k")
    plan = plan_partition([doubt, acked], log_end=0, log_batches=[])
    assert plan.actions == [Reproduce(1, 0), Reproduce(2, 2)]


def test_unfillable_gap_is_reported_loudly() -> None:
    acked = _wal(1, 1, acked=5)
    plan = plan_partition([acked], log_end=3, log_batches=[])
    assert isinstance(plan.actions[0], Mismatch) and plan.loud


def test_lost_transactional_batch_is_abandoned_loudly() -> None:
    acked = _wal(1, 1, acked=0, pid=1, seq=0, txn=True)
    plan = plan_partition([acked], log_end=0, log_batches=[])
    assert isinstance(plan.actions[0], Abandon) and plan.actions[0].was_acked and plan.loud


def test_other_data_at_an_acknowledged_offset_is_reported() -> None:
    acked, other = _wal(1, 1, acked=0, tag=b"mine"), _wal(9, 1, tag=b"theirs")
    plan = plan_partition([acked], log_end=1, log_batches=[_in_log(other, 0)])
    assert isinstance(plan.actions[0], Abandon) and plan.loud


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=12), data=st.data())
def test_every_lost_acknowledged_batch_goes_back_exactly_where_it_was(sizes, data) -> None:  # type: ignore[no-untyped-def]
    """Any history: acknowledged batches at consecutive offsets, the log truncated anywhere
    on a batch boundary. The plan restores each lost one at its own offset, in order."""
    batches, offset = [], 0
    for i, n in enumerate(sizes):
        batches.append(_wal(i + 1, n, acked=offset, tag=b"%d-" % i))
        offset += n
    keep = data.draw(st.integers(0, len(batches)))
    log_end = sum(sizes[:keep])
    shuffled = data.draw(st.permutations(batches))
    plan = plan_partition(shuffled, log_end, [])
    assert plan.intact == keep
    assert plan.actions == [Reproduce(b.lsn, b.acked_offset) for b in batches[keep:]]


def test_error_response_and_merge_round_trip() -> None:
    tid = uuid.uuid4()
    payload = error_response(13, 5, {(None, tid, 0): 56, (None, tid, 3): 2})
    outcomes = response_outcomes(13, memoryview(payload))
    assert {(o.key, o.error_code) for o in outcomes} == {((None, tid, 0), 56), ((None, tid, 3), 2)}
    merged = response_with_errors(9, error_response(9, 1, {("t", None, 0): 0}), {("t", None, 1): 2})
    got = {o.key[2]: o.error_code for o in response_outcomes(9, memoryview(merged))}
    assert got == {0: 0, 1: 2}
