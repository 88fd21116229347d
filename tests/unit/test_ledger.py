"""The durable produce path's ledger (proxy/durable/ledger.py), without trio: what may be
trimmed and what may not."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from proxy.durable.ledger import Ledger
from proxy.durable.wal_entries import OutcomeEntry, Source

KEY = ("t", None, 0)


def landed(lsn: int, base: int = 0) -> OutcomeEntry:
    return OutcomeEntry(lsn, Source.BROKER, 0, base)


def test_unresolved_and_in_doubt_entries_hold_the_trim() -> None:
    led = Ledger()
    led.persisted([5, 6, 7], [KEY] * 3, [1, 1, 1])
    assert led.retention_target(100) == 4
    led.outcomes_durable([landed(5), landed(6)], now=0.0)
    assert led.retention_target(100) == 6 and led.unresolved == {7: KEY}
    led.doubt([3])  # an older entry whose connection died
    assert led.retention_target(100) == 2 and led.retention_target(1) == 1
    assert led.take_in_doubt() == {3} and not led.in_doubt
    led.outcomes_durable([landed(7)], now=0.0)
    assert led.retention_target(100) == 100 and led.first_unsettled() is None


def test_with_the_offloader_a_settled_batch_waits_for_its_s3_copy() -> None:
    led = Ledger(track_settled=True)
    led.persisted([1, 2], [KEY, KEY], [10, 10])
    led.outcomes_durable([landed(1, 0), OutcomeEntry(2, Source.BROKER, 6, -1)], now=5.0)
    covered: dict[tuple, int] = {}

    def covers(key: object, last: int | None, at: float) -> bool:
        return last is not None and covered.get(key, -1) >= last  # type: ignore[call-overload]

    assert led.offload_target(50, now=10.0, retention_s=0.0, covers=covers) == 0
    covered[KEY] = 9  # the S3 copy holds offsets 0..9: batch 1 (the failed 2 never waits)
    assert led.offload_target(50, now=10.0, retention_s=30.0, covers=covers) == 0  # too fresh
    assert led.offload_target(50, now=40.0, retention_s=30.0, covers=covers) == 50
    led.commit_settled(60, "group", now=41.0)
    assert led.offload_target(80, now=100.0, retention_s=0.0, covers=covers) == 59


def test_acknowledged_ends_only_grow() -> None:
    led = Ledger()
    led.acked(KEY, 10)
    led.acked(KEY, 7)
    assert led.acked_end == {KEY: 10}
    led.forget_partition(KEY)  # the topic was deleted
    assert led.acked_end == {}


def test_a_pending_commit_holds_the_trim_until_resolved() -> None:
    led = Ledger()
    led.pending(4, KEY)
    assert led.retention_target(100) == 3
    led.resolved([4, 99])  # an LSN it never held is no error
    assert led.retention_target(100) == 100 and not led.unresolved


@given(
    st.lists(st.sampled_from(["persist", "settle", "doubt", "cover"]), max_size=40),
    st.integers(0, 60),
)
def test_the_target_never_passes_an_entry_the_wal_must_keep(ops: list[str], bound: int) -> None:
    led = Ledger(track_settled=True)
    lsn, s3_end = 0, -1
    open_: list[int] = []
    landed_at: dict[int, int] = {}  # lsn -> last offset
    for op in ops:
        if op == "persist":
            lsn += 1
            led.persisted([lsn], [KEY], [1])
            open_.append(lsn)
        elif op == "settle" and open_:
            done = open_.pop(0)
            led.outcomes_durable([landed(done, done)], now=0.0)
            landed_at[done] = done
        elif op == "doubt" and open_:
            led.doubt([open_.pop()])
        elif op == "cover":
            s3_end += 2
    target = led.offload_target(
        bound,
        now=1.0,
        retention_s=0.0,
        covers=lambda k, last, at: last is not None and last <= s3_end,
    )
    assert target <= bound
    kept = [*open_, *led.in_doubt, *(n for n, last in landed_at.items() if last > s3_end)]
    assert all(target < n for n in kept), (target, kept)


def test_a_transactional_batch_holds_the_trim_until_s3_has_its_marker() -> None:
    from offload.coverage import Coverage

    tid = uuid.uuid4()
    cov = Coverage()
    led = Ledger(track_settled=True)
    led.persisted([1], [KEY], [2], producer_id=7)  # transactional: offsets 0..1
    led.persisted([2], [KEY], [1])  # a plain batch after it (offset 2)
    led.outcomes_durable([landed(1, 0), landed(2, 2)], now=0.0)
    # an END_TXN at LSN 3 is resolved (nothing holds it but what comes before it)
    cov.update("t", tid, 0, 3, 1.0, {7: 0})  # S3 has offsets 0..2, the transaction is open
    assert led.offload_target(10, now=5.0, retention_s=0.0, covers=cov.covers) == 0
    cov.update("t", tid, 0, 4, 2.0, {})  # the copy reached the marker at 3
    assert led.offload_target(10, now=5.0, retention_s=0.0, covers=cov.covers) == 10
