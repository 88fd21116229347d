"""The rebuild's WAL tail: batch patching, the tail planner, and reading a WAL read-only."""

from __future__ import annotations

import shutil
import uuid

import pytest
import trio

from offload.wal_tail import (
    AckedBatch,
    TailError,
    WalFacts,
    collect,
    patch_batch,
    plan_tail,
)
from proxy.durable.wal_entries import (
    BATCH,
    OUTCOME,
    BatchEntry,
    OutcomeEntry,
    Source,
    encode_batch,
    encode_outcome,
)
from proxy.kafka.record_batch import TRANSACTIONAL_FLAG, build_batch, iter_batches, parse_header
from tests.wal.helpers import new_dir
from wal import Entry, WalConfig, WalError, open_wal
from wal import read_directory as read_wal

TID = uuid.UUID(int=0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0)


def client_batch(n: int = 3, **kw: int) -> bytes:
    """A batch as a client sends it: base offset 0, no leader epoch."""
    return build_batch([b"v%d" % i for i in range(n)], timestamp_ms=1_700_000_000_000, **kw)


def test_patch_sets_offset_and_epoch_outside_the_crc() -> None:
    raw = client_batch()
    out = patch_batch(raw, 1234, 7)
    h = next(iter_batches(out))  # the CRC still holds
    assert (h.base_offset, h.partition_leader_epoch, h.crc) == (1234, 7, parse_header(raw).crc)
    assert out[21:] == raw[21:]


def test_patch_log_append_time_rewrites_like_the_broker() -> None:
    raw = client_batch()
    out = patch_batch(raw, 10, 2, log_append_time=1_800_000_000_123)
    h = next(iter_batches(out))  # CRC recomputed and valid
    assert h.attributes & 0x08 and h.max_timestamp == 1_800_000_000_123
    assert h.base_timestamp == 1_700_000_000_000  # record timestamps stay as sent


def acked(
    lsn: int,
    base: int,
    n: int = 3,
    *,
    topic: str | None = "t",
    partition: int = 0,
    topic_id: uuid.UUID | None = None,
    records: bytes | None = None,
    lat: int = -1,
) -> AckedBatch:
    records = records if records is not None else client_batch(n)
    return AckedBatch(
        lsn, topic, topic_id, partition, base, lat, tuple(iter_batches(records)), records
    )


def facts(*batches: AckedBatch) -> WalFacts:
    return WalFacts(acked=list(batches))


def test_tail_starts_where_s3_ends_and_skips_what_it_covers() -> None:
    f = facts(acked(1, 0), acked(2, 3), acked(3, 6), acked(4, 9, n=1))
    tails = plan_tail(f, {("t", 0): 6}, {("t", 0): 4}, {})
    t = tails[("t", 0)]
    assert [(b.base_offset, b.last_offset) for b in t.batches] == [(6, 8), (9, 9)]
    assert t.skipped_covered == 2 and t.next_offset == 10
    assert all(parse_header(b.data).partition_leader_epoch == 4 for b in t.batches)


def test_tail_resolves_topic_ids_and_splits_multi_batch_entries() -> None:
    two = client_batch(2) + client_batch(3)
    f = facts(acked(1, 0, topic=None, topic_id=TID, records=two))
    t = plan_tail(f, {("named", 0): 0}, {}, {TID: "named"})[("named", 0)]
    assert [(b.base_offset, b.last_offset) for b in t.batches] == [(0, 1), (2, 4)]
    with pytest.raises(TailError, match="topic id"):
        plan_tail(f, {("named", 0): 0}, {}, {})


def test_tail_refuses_gaps_unless_allowed() -> None:
    f = facts(acked(1, 0), acked(2, 5))
    with pytest.raises(TailError, match=r"offsets 3\.\.4 are neither"):
        plan_tail(f, {("t", 0): 0}, {}, {})
    t = plan_tail(f, {("t", 0): 0}, {}, {}, allow_gaps=True)[("t", 0)]
    assert [b.base_offset for b in t.batches] == [0, 5]
    with pytest.raises(TailError, match="neither"):  # a gap right after the S3 copy
        plan_tail(facts(acked(1, 10)), {("t", 0): 7}, {}, {})


def doubt(lsn: int, records: bytes, partition: int = 0) -> tuple[int, BatchEntry]:
    return (lsn, BatchEntry(-1, partition, "t", None, None, records))


def test_an_exact_gap_is_filled_with_in_doubt_batches() -> None:
    # The broker held offsets 3..4 (a batch forwarded, its answer never durable), S3 had not
    # copied them: the rebuild puts the in-doubt batch there instead of refusing.
    f = facts(acked(1, 0), acked(4, 5))
    f.in_doubt = [doubt(2, client_batch(3)), doubt(3, client_batch(2))]
    t = plan_tail(f, {("t", 0): 0}, {("t", 0): 2}, {})[("t", 0)]
    assert [(b.base_offset, b.last_offset, b.lsn) for b in t.batches] == [
        (0, 2, 1),
        (3, 4, 3),
        (5, 7, 4),
    ]
    assert t.gap_filled == 1
    h = next(iter_batches(t.batches[1].data))
    assert (h.base_offset, h.partition_leader_epoch) == (3, 2)
    for wrong in (
        [doubt(2, client_batch(3))],  # no exact fit
        [doubt(2, client_batch(2), partition=1)],  # another partition's
        [doubt(2, client_batch(2, attributes=TRANSACTIONAL_FLAG, producer_id=4))],
    ):
        f.in_doubt = wrong
        with pytest.raises(TailError, match=r"offsets 3\.\.4 are neither"):
            plan_tail(f, {("t", 0): 0}, {}, {})


def test_an_idempotent_filler_must_continue_its_producer_sequence() -> None:
    def seq(n: int, first: int) -> bytes:
        return client_batch(n, producer_id=7, producer_epoch=0, base_sequence=first)

    f = facts(acked(1, 0, records=seq(3, 0)), acked(5, 5, records=seq(3, 5)))
    f.in_doubt = [doubt(2, seq(2, 10))]  # the right size, another place in the sequence
    with pytest.raises(TailError, match="neither"):
        plan_tail(f, {("t", 0): 0}, {}, {})
    f.in_doubt = [doubt(2, seq(2, 10)), doubt(3, seq(2, 3))]
    t = plan_tail(f, {("t", 0): 0}, {}, {})[("t", 0)]
    assert [b.lsn for b in t.batches] == [1, 3, 5] and t.gap_filled == 1


def test_tail_refuses_inconsistencies() -> None:
    with pytest.raises(TailError, match="across the S3 copy's end"):
        plan_tail(facts(acked(1, 4)), {("t", 0): 5}, {}, {})
    with pytest.raises(TailError, match="different records"):
        plan_tail(facts(acked(1, 0), acked(2, 0, n=4)), {("t", 0): 0}, {}, {})
    with pytest.raises(TailError, match="overlaps"):
        plan_tail(facts(acked(1, 0, n=4), acked(2, 2)), {("t", 0): 0}, {}, {})
    with pytest.raises(TailError, match="no manifest"):
        plan_tail(facts(acked(1, 0)), {}, {}, {})
    txn = client_batch(
        producer_id=9, producer_epoch=0, base_sequence=0, attributes=TRANSACTIONAL_FLAG
    )
    with pytest.raises(TailError, match="transactional"):
        plan_tail(facts(acked(1, 0, records=txn)), {("t", 0): 0}, {}, {})


def test_retried_duplicate_is_written_once() -> None:
    raw = client_batch()
    f = facts(acked(1, 0, records=raw), acked(2, 0, records=raw), acked(3, 3))
    t = plan_tail(f, {("t", 0): 0}, {}, {})[("t", 0)]
    assert [b.base_offset for b in t.batches] == [0, 3]


def _entries(*items: tuple[int, int, bytes]) -> list[Entry]:
    return [Entry(lsn, typ, payload) for lsn, typ, payload in items]


def test_collect_keeps_only_acknowledged_batches() -> None:
    raw = client_batch()

    def b(acks: int = -1) -> bytes:
        return encode_batch(BatchEntry(acks, 0, "t", None, None, raw))

    entries = _entries(
        (1, BATCH, b()),
        (2, BATCH, b()),  # in doubt
        (3, BATCH, b()),
        (4, BATCH, b(acks=0)),  # acks=0, never answered: not in doubt either
        (5, OUTCOME, encode_outcome(OutcomeEntry(1, Source.BROKER, 0, 40))),
        (6, OUTCOME, encode_outcome(OutcomeEntry(3, Source.BROKER, 6, -1))),  # refused
        (7, OUTCOME, encode_outcome(OutcomeEntry(3, Source.REPRODUCED, 0, 43, 99))),
    )
    f = collect(entries)
    assert [(a.lsn, a.base_offset, a.log_append_time) for a in f.acked] == [
        (1, 40, -1),
        (3, 43, 99),
    ]
    assert [lsn for lsn, _ in f.in_doubt] == [2]
    bad = _entries(
        (1, BATCH, encode_batch(BatchEntry(-1, 0, "t", None, None, raw[:-1]))),
        (2, OUTCOME, encode_outcome(OutcomeEntry(1, Source.BROKER, 0, 0))),
    )
    with pytest.raises(TailError, match="damaged"):
        collect(bad)


async def test_read_wal_reads_a_closed_wal_and_refuses_a_running_one() -> None:
    d = new_dir()
    try:
        cfg = WalConfig(segment_size=256 * 1024, prepare_spares=False)
        raw = client_batch()
        async with open_wal(d, cfg) as wal:
            for i in range(300):  # several segments
                lsn = await wal.append(
                    encode_batch(BatchEntry(-1, 0, "t", None, None, raw)), type=BATCH
                )
                await wal.append(
                    encode_outcome(OutcomeEntry(lsn, Source.BROKER, 0, 3 * i)), type=OUTCOME
                )
            await wal.trim(20)
            with pytest.raises(WalError, match="in use"):
                await trio.to_thread.run_sync(lambda: list(read_wal(d)))
        entries = list(read_wal(d))
        assert [e.lsn for e in entries] == list(range(21, 601))
        f = collect(entries)
        t = plan_tail(f, {("t", 0): 30}, {("t", 0): 0}, {})[("t", 0)]
        assert t.batches[0].base_offset == 30 and t.next_offset == 900
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_read_wal_missing_dir() -> None:
    with pytest.raises(WalError, match="does not exist"):
        list(read_wal("/nonexistent/wal"))
