"""Transactions in a rebuild's WAL tail (offload/txn_tail.py, offload/wal_tail.py): a
transactional batch whose EndTxn the same WAL proves gets its commit or abort marker; one
whose end is in doubt, failed, or missing keeps the rebuild refusing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.txn_tail import ABORT, COMMIT, EndTxnFact, decode_marker
from offload.wal_tail import AckedBatch, PartitionTail, TailError, WalFacts, collect, plan_tail
from proxy.durable.wal_entries import (
    BATCH,
    END_TXN,
    END_TXN_OUTCOME,
    OUTCOME,
    BatchEntry,
    EndTxnEntry,
    EndTxnOutcomeEntry,
    OutcomeEntry,
    Source,
    encode_batch,
    encode_end_txn,
    encode_end_txn_outcome,
    encode_outcome,
)
from proxy.kafka.record_batch import TRANSACTIONAL_FLAG, build_batch, iter_batches
from wal import Entry

TP = ("t", 0)
COVERED = {TP: 0, ("t", 1): 0}


def txn_batch(pid: int, epoch: int, seq: int, n: int = 2) -> bytes:
    return build_batch(
        [b"v%d" % i for i in range(n)],
        timestamp_ms=1_700_000_000_000,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        attributes=TRANSACTIONAL_FLAG,
    )


def plain(n: int = 1) -> bytes:
    return build_batch([b"p"] * n, timestamp_ms=1_700_000_000_000)


def acked(lsn: int, base: int, records: bytes, partition: int = 0) -> AckedBatch:
    return AckedBatch(lsn, "t", None, partition, base, -1, tuple(iter_batches(records)), records)


def end(
    lsn: int,
    pid: int,
    epoch: int,
    committed: bool,
    error: int | None = 0,
    *,
    bumped: int = -1,
    source: Source = Source.BROKER,
) -> EndTxnFact:
    entry = EndTxnEntry(5 if bumped >= 0 else 3, 1_700_000_000_500, "tx", pid, epoch, committed)
    outcome = None
    if error is not None:
        outcome = EndTxnOutcomeEntry(
            lsn + 1, source, error, pid if bumped >= 0 else -1, bumped if bumped >= 0 else -1
        )
    return EndTxnFact(lsn, entry, outcome)


def plan(facts: WalFacts, **kw: bool) -> dict[tuple[str, int], PartitionTail]:
    return plan_tail(facts, COVERED, {TP: 3, ("t", 1): 3}, {}, **kw)


def layout(tail: PartitionTail) -> list[tuple[int, str]]:
    """(offset, 'data' | 'COMMIT pid/epoch' | 'ABORT pid/epoch') of each planned batch."""
    out = []
    for b in tail.batches:
        h = next(iter_batches(b.data))
        if not h.is_control:
            out.append((b.base_offset, "data"))
            continue
        rec = _control_record(b.data)
        kind, coordinator_epoch = decode_marker(*rec)
        assert coordinator_epoch == 0 and h.base_sequence == -1 and h.record_count == 1
        assert h.partition_leader_epoch == 3
        name = "COMMIT" if kind == COMMIT else "ABORT"
        out.append((b.base_offset, f"{name} {h.producer_id}/{h.producer_epoch}"))
    return out


def _control_record(data: bytes) -> tuple[bytes, bytes]:
    """Key and value of a one-record uncompressed batch (what build_batch writes)."""
    pos = 61  # after the batch header

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return (result >> 1) ^ -(result & 1)

    varint()  # record length
    pos += 1  # attributes
    varint()  # timestamp delta
    varint()  # offset delta
    n = varint()
    key = data[pos : pos + n]
    pos += n
    n = varint()
    return key, data[pos : pos + n]


def test_a_committed_transaction_gets_its_marker_in_every_partition() -> None:
    # Batches of producer 7 in two partitions, the real marker at offset 2 (partition 0,
    # before the next batch) and at 2 (partition 1, the tail's end).
    f = WalFacts(
        acked=[
            acked(1, 0, txn_batch(7, 0, 0)),
            acked(2, 0, txn_batch(7, 0, 0), partition=1),
            acked(5, 3, plain()),
        ],
        end_txns=[end(3, 7, 0, True)],
    )
    tails = plan(f)
    assert layout(tails[TP]) == [(0, "data"), (2, "COMMIT 7/0"), (3, "data")]
    assert layout(tails[("t", 1)]) == [(0, "data"), (2, "COMMIT 7/0")]
    assert list(tails[TP].markers) == [3]


def test_an_aborted_transaction_gets_an_abort_marker_with_the_tv2_epoch() -> None:
    # transaction.version 2: the EndTxn carries the batches' epoch 4, the answer the bumped
    # epoch 5, which the markers carry; the next transaction uses epoch 5.
    f = WalFacts(
        acked=[
            acked(1, 0, txn_batch(7, 4, 0)),
            acked(4, 3, txn_batch(7, 5, 2)),
        ],
        end_txns=[end(2, 7, 4, False, bumped=5), end(5, 7, 5, True, bumped=6)],
    )
    assert layout(plan(f)[TP]) == [(0, "data"), (2, "ABORT 7/5"), (3, "data"), (5, "COMMIT 7/6")]


def test_tv1_transactions_of_one_epoch_take_the_first_end_after_them() -> None:
    f = WalFacts(
        acked=[acked(1, 0, txn_batch(7, 0, 0)), acked(4, 3, txn_batch(7, 0, 2))],
        end_txns=[end(2, 7, 0, True), end(5, 7, 0, False)],
    )
    assert layout(plan(f)[TP]) == [(0, "data"), (2, "COMMIT 7/0"), (3, "data"), (5, "ABORT 7/0")]


def test_a_marker_takes_the_first_free_offset_after_other_producers_batches() -> None:
    # The coordinator answered EndTxn before writing the marker: another producer's batch
    # (offset 2) landed first, the marker is at 3.
    f = WalFacts(
        acked=[acked(1, 0, txn_batch(7, 0, 0)), acked(3, 2, plain()), acked(6, 4, plain())],
        end_txns=[end(4, 7, 0, True)],
    )
    assert layout(plan(f)[TP]) == [(0, "data"), (2, "data"), (3, "COMMIT 7/0"), (4, "data")]


def test_markers_and_in_doubt_batches_share_a_gap() -> None:
    # Gap 2..4: the marker first (2), then an in-doubt batch of two records fits 3..4.
    f = WalFacts(
        acked=[acked(1, 0, txn_batch(7, 0, 0)), acked(9, 5, plain())],
        end_txns=[end(3, 7, 0, True)],
    )
    f.in_doubt = [(5, BatchEntry(-1, 0, "t", None, None, plain(2)))]
    t = plan(f)[TP]
    assert layout(t) == [(0, "data"), (2, "COMMIT 7/0"), (3, "data"), (5, "data")]
    assert t.gap_filled == 1
    # Gap 2..3 exactly an in-doubt batch: it takes the gap, the marker waits for the end.
    f.acked[-1] = acked(9, 4, plain())
    t = plan(f)[TP]
    assert layout(t) == [(0, "data"), (2, "data"), (4, "data"), (5, "COMMIT 7/0")]
    # Gap 2..4 with nothing in doubt to fill the rest: refused, or left with --allow-gaps.
    f.in_doubt = []
    f.acked[-1] = acked(9, 5, plain())
    with pytest.raises(TailError, match=r"offsets 2\.\.4 are neither"):
        plan(f)
    assert layout(plan(f, allow_gaps=True)[TP]) == [(0, "data"), (2, "COMMIT 7/0"), (5, "data")]


def test_the_same_producers_next_batch_without_room_for_the_marker_refuses() -> None:
    f = WalFacts(
        acked=[acked(1, 0, txn_batch(7, 0, 0)), acked(4, 2, txn_batch(7, 0, 2))],
        end_txns=[end(2, 7, 0, True), end(5, 7, 0, True)],
    )
    with pytest.raises(TailError, match="finds no free offset"):
        plan(f)


@pytest.mark.parametrize(
    ("ends", "match"),
    [
        ([end(2, 7, 0, True, error=None)], "is in doubt"),
        ([end(2, 7, 0, True, error=-1, source=Source.ABANDONED)], "is in doubt"),
        ([end(2, 7, 0, False, error=90)], "failed with error 90"),  # PRODUCER_FENCED
        ([end(0, 7, 0, True)], "still open"),  # an earlier transaction's end only
        ([end(2, 7, 1, True)], "still open"),  # another epoch's end
        ([], "another broker coordinates it"),  # a sidecar of several brokers
        ([end(2, 7, 0, True, bumped=0)], "new id"),  # reported under another id
    ],
)
def test_an_unknown_end_refuses_naming_partition_offset_and_producer(
    ends: list[EndTxnFact], match: str
) -> None:
    if match == "new id":
        e = ends[0]
        assert e.outcome is not None
        ends = [EndTxnFact(e.lsn, e.entry, EndTxnOutcomeEntry(3, Source.BROKER, 0, 8, 0))]
    f = WalFacts(acked=[acked(1, 5, txn_batch(7, 0, 0))], end_txns=ends)
    with pytest.raises(TailError, match=match) as err:
        plan_tail(f, {TP: 5}, {}, {})
    text = str(err.value)
    assert "t-0" in text and "offset 5" in text and "producer id 7" in text
    assert "--allow-gaps" in text and "S3 copy must cover it" in text
    # --allow-gaps leaves the batch out (a hole), saying why
    t = plan_tail(f, {TP: 5}, {}, {}, allow_gaps=True)[TP]
    assert t.batches == [] and len(t.txn_left_out) == 1


def test_an_end_refused_before_it_acted_is_passed_over_for_its_retry() -> None:
    f = WalFacts(
        acked=[acked(1, 0, txn_batch(7, 0, 0))],
        end_txns=[end(2, 7, 0, True, error=51), end(4, 7, 0, True)],  # CONCURRENT_TRANSACTIONS
    )
    t = plan(f)[TP]
    assert layout(t) == [(0, "data"), (2, "COMMIT 7/0")] and list(t.markers) == [4]


@pytest.mark.parametrize("source", [None, Source.ABANDONED])
def test_an_end_in_doubt_is_decided_by_its_answered_retry(source: Source | None) -> None:
    """The connection died before the EndTxn's answer (no outcome, or abandoned); the client
    retried the same end and got error 0: the retry decides, with its answer's epoch."""
    doubt = end(2, 7, 0, True, error=-1 if source else None, source=source or Source.BROKER)
    f = WalFacts(
        acked=[acked(1, 0, txn_batch(7, 0, 0))],
        end_txns=[doubt, end(4, 7, 0, True, bumped=1)],
    )
    t = plan(f)[TP]
    assert layout(t) == [(0, "data"), (2, "COMMIT 7/1")] and list(t.markers) == [4]
    # a retry refused (the coordinator decided otherwise) leaves it unresolved
    f.end_txns = [doubt, end(4, 7, 0, False, error=48)]  # INVALID_TXN_STATE
    with pytest.raises(TailError, match="failed with error 48"):
        plan(f)


def test_collect_reads_end_txn_entries_and_passes_unknown_types_by() -> None:
    raw = txn_batch(7, 0, 0)
    entries = [
        Entry(1, BATCH, encode_batch(BatchEntry(-1, 0, "t", None, "tx", raw))),
        Entry(2, OUTCOME, encode_outcome(OutcomeEntry(1, Source.BROKER, 0, 0))),
        Entry(3, 99, b"a type of a newer writer"),
        Entry(4, END_TXN, encode_end_txn(EndTxnEntry(3, 1, "tx", 7, 0, False))),
        Entry(5, END_TXN_OUTCOME, encode_end_txn_outcome(EndTxnOutcomeEntry(4, Source.BROKER, 0))),
    ]
    f = collect(entries)
    assert [(e.lsn, e.entry.committed, e.outcome) for e in f.end_txns] == [
        (4, False, EndTxnOutcomeEntry(4, Source.BROKER, 0))
    ]
    assert layout(plan(f)[TP]) == [(0, "data"), (2, "ABORT 7/0")]
    # the same WAL without its EndTxn entries: refused (the old behaviour, with a reason)
    with pytest.raises(TailError, match="no EndTxn of its producer"):
        plan(collect(entries[:3]))


# -- property: rebuilt markers decide every batch as the real ones did ---------------------
@st.composite
def histories(draw: st.DrawFn) -> tuple[WalFacts, dict[int, tuple[int, bool]], dict[int, int]]:
    """A partition's real log: two transactional producers (transaction.version 1 or 2) and
    a plain one, each end's marker written 0-2 appends after the end. Returns the WAL facts
    (markers are not in the WAL), per data batch offset its (producer, committed) truth, and
    each end's real marker offset by END_TXN LSN (those still due land after the log)."""
    tv2 = draw(st.booleans())
    lsn = offset = 0
    facts = WalFacts()
    truth: dict[int, tuple[int, bool]] = {}
    state = {pid: {"epoch": 0, "seq": 0, "open": [], "pending": None} for pid in (1, 2)}
    delayed: list[tuple[int, int]] = []  # (appends to wait, pid) of markers not yet written
    real: dict[int, int] = {}

    def next_lsn() -> int:
        nonlocal lsn
        lsn += 1
        return lsn

    for _ in range(draw(st.integers(1, 25))):
        ready = [d for d in delayed if d[0] <= 0]
        for d in ready:  # the marker lands: one offset
            delayed.remove(d)
            real[state[d[1]]["pending"]] = offset
            state[d[1]]["pending"] = None
            offset += 1
        delayed = [(w - 1, p) for w, p in delayed]
        action = draw(st.sampled_from(["plain", "txn1", "txn2", "end1", "end2"]))
        if action == "plain":
            n = draw(st.integers(1, 3))
            facts.acked.append(acked(next_lsn(), offset, plain(n)))
            next_lsn()
            offset += n
            continue
        pid = int(action[-1])
        s = state[pid]
        if s["pending"] is not None:
            continue  # Kafka refuses the next transaction until the markers are written
        if action.startswith("txn"):
            n = draw(st.integers(1, 3))
            facts.acked.append(acked(next_lsn(), offset, txn_batch(pid, s["epoch"], s["seq"], n)))
            next_lsn()
            s["open"].append(offset)
            s["seq"] += n
            offset += n
        elif s["open"]:
            committed = draw(st.booleans())
            e_lsn = next_lsn()
            bumped = s["epoch"] + 1 if tv2 else -1
            facts.end_txns.append(end(e_lsn, pid, s["epoch"], committed, bumped=bumped))
            next_lsn()
            for o in s["open"]:
                truth[o] = (pid, committed)
            s["open"] = []
            s["pending"] = e_lsn
            delayed.append((draw(st.integers(0, 2)), pid))
            if tv2:
                s["epoch"] += 1
                s["seq"] = 0
    for _, pid in delayed:
        real[state[pid]["pending"]] = offset
        offset += 1
    return facts, truth, real


@settings(max_examples=300, deadline=None)
@given(histories())
def test_rebuilt_markers_decide_every_batch_as_the_real_ones(
    history: tuple[WalFacts, dict[int, tuple[int, bool]], dict[int, int]],
) -> None:
    facts, truth, real = history
    open_batches = [
        a.base_offset for a in facts.acked if a.transactional and a.base_offset not in truth
    ]
    if open_batches:  # a transaction still open: refused, never guessed
        with pytest.raises(TailError, match="open"):
            plan_tail(facts, {TP: 0}, {}, {})
        return
    if not facts.acked:
        return
    # the real log has no hole (data or marker at every offset): neither has the plan
    t = plan_tail(facts, {TP: 0}, {}, {})[TP]
    data = {a.base_offset for a in facts.acked}
    placed = t.batches
    # every acknowledged batch at its offset, nothing overlapping
    assert {b.base_offset for b in placed if not next(iter_batches(b.data)).is_control} == data
    assert all(x.last_offset < y.base_offset for x, y in itertools.pairwise(placed))
    # each transactional batch is decided by the next marker of its producer: as it was
    for i, b in enumerate(placed):
        if b.base_offset not in truth:
            continue
        pid, committed = truth[b.base_offset]
        marker = next(
            m
            for m in placed[i + 1 :]
            if next(iter_batches(m.data)).is_control
            and next(iter_batches(m.data)).producer_id == pid
        )
        kind, _ = decode_marker(*_control_record(marker.data))
        assert kind == (COMMIT if committed else ABORT)
    assert len(t.markers) == len(facts.end_txns)
    # The markers take the real markers' offsets or earlier ones: the k-th rebuilt marker is
    # never after the k-th real one (markers of transactions that ended close together may
    # swap places among themselves, which decides no batch otherwise: the assertion above).
    rebuilt = sorted(b.base_offset for b in placed if next(iter_batches(b.data)).is_control)
    assert all(x <= y for x, y in zip(rebuilt, sorted(real.values()), strict=True))
