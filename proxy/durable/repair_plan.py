"""Reconciliation planning, sans-IO: what to do with each WAL batch of one partition.

Given what the WAL holds for a partition (batches, with their recorded outcomes if any) and
what the broker's log holds (its end offset and the batches in a recent window), decide:

* a batch that was acknowledged (outcome recorded) but is no longer in the log — the broker
  lost its page cache — is restored by producing it again, in offset order, where it was;
* a batch in doubt (durable in the WAL, no outcome: the proxy or its connection died in
  between) is looked for in the log, by producer id/epoch/sequence when idempotent, else by
  CRC and record count; found, its offset is recorded; not found, it is produced again;
* a transactional batch is never produced again blindly (its transaction may have ended,
  and the broker writes the markers); it is abandoned, loudly when it had been acknowledged.

The plan is a list of actions in the order they must run. The shell (``proxy.durable.reconciler``)
fetches the facts, runs the actions against the broker and writes OUTCOME entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from proxy.kafka.record_batch import BatchHeader


@dataclass(frozen=True, slots=True)
class WalBatch:
    lsn: int
    headers: tuple[BatchHeader, ...]  # the batches of the entry's records blob, in order
    acks0: bool
    #: From the OUTCOME entry: the base offset the broker assigned, or None when in doubt.
    acked_offset: int | None = None

    @property
    def record_count(self) -> int:
        """Offsets the entry occupies in the log (last offset delta + 1 per batch)."""
        return sum(h.last_offset_delta + 1 for h in self.headers)

    @property
    def transactional(self) -> bool:
        return any(h.is_transactional for h in self.headers)

    @property
    def idempotent(self) -> bool:
        return self.headers[0].producer_id >= 0

    @property
    def first(self) -> BatchHeader:
        return self.headers[0]


@dataclass(frozen=True, slots=True)
class LogBatch:
    """A batch as the broker's log holds it (from a Fetch)."""

    base_offset: int
    last_offset: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    crc: int
    record_count: int

    @classmethod
    def of(cls, h: BatchHeader) -> LogBatch:
        return cls(
            h.base_offset,
            h.base_offset + h.last_offset_delta,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.crc,
            h.record_count,
        )


@dataclass(frozen=True, slots=True)
class Found:
    lsn: int
    base_offset: int


@dataclass(frozen=True, slots=True)
class Reproduce:
    lsn: int
    #: Where it must land (a lost acknowledged batch), or None (an in-doubt one: anywhere).
    expected_offset: int | None


@dataclass(frozen=True, slots=True)
class Abandon:
    lsn: int
    reason: str
    was_acked: bool  # an acknowledged record is lost: operators must hear about it


@dataclass(frozen=True, slots=True)
class Mismatch:
    """An acknowledged batch cannot go back to its offset; it is restored elsewhere."""

    lsn: int
    expected_offset: int
    reason: str


Action = Found | Reproduce | Abandon | Mismatch


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    #: Acknowledged batches the log holds at their offsets (nothing to do).
    intact: int = 0

    @property
    def loud(self) -> list[Action]:
        return [
            a
            for a in self.actions
            if isinstance(a, Mismatch) or (isinstance(a, Abandon) and a.was_acked)
        ]


def _matches(b: WalBatch, log: LogBatch) -> bool:
    first = b.first
    if b.idempotent:
        return (log.producer_id, log.producer_epoch, log.base_sequence) == (
            first.producer_id,
            first.producer_epoch,
            first.base_sequence,
        )
    return log.crc == first.crc and log.record_count == first.record_count


def plan_partition(
    batches: Sequence[WalBatch], log_end: int, log_batches: Iterable[LogBatch]
) -> Plan:
    """Decide every batch's fate; ``log_batches`` covers the window the in-doubt may be in."""
    plan = Plan()
    in_log = list(log_batches)
    by_offset = {lb.base_offset: lb for lb in in_log}
    acked = sorted(
        (b for b in batches if b.acked_offset is not None), key=lambda b: b.acked_offset or 0
    )
    in_doubt = [b for b in batches if b.acked_offset is None]

    # 1. Acknowledged batches: still where they were, or lost with the broker's page cache.
    lost: list[WalBatch] = []
    for b in acked:
        assert b.acked_offset is not None
        end = b.acked_offset + b.record_count
        if end <= log_end:
            seen = by_offset.get(b.acked_offset)
            if seen is not None and not _matches(b, seen):
                plan.actions.append(
                    Abandon(
                        b.lsn,
                        f"offset {b.acked_offset} holds another batch than the one "
                        "walproxy acknowledged",
                        was_acked=True,
                    )
                )
            else:
                plan.intact += 1
        elif b.acked_offset < log_end:
            plan.actions.append(
                Abandon(
                    b.lsn,
                    f"the log ends at {log_end}, inside the acknowledged batch at "
                    f"{b.acked_offset}..{end - 1}",
                    was_acked=True,
                )
            )
        else:
            lost.append(b)

    # 2. In-doubt batches found in the log keep their offsets; the rest may fill gaps.
    unplaced: list[WalBatch] = []
    for b in in_doubt:
        hit = next((lb for lb in in_log if _matches(b, lb)), None)
        if hit is not None:
            plan.actions.append(Found(b.lsn, hit.base_offset))
        else:
            unplaced.append(b)

    # 3. Restore lost acknowledged batches in offset order, starting at the log end.
    expected = log_end
    for b in lost:
        assert b.acked_offset is not None
        if b.transactional:
            plan.actions.append(
                Abandon(
                    b.lsn,
                    f"acknowledged transactional batch at offset {b.acked_offset} was lost "
                    "by the broker; its transaction has ended, so it is not replayed",
                    was_acked=True,
                )
            )
            continue
        if b.acked_offset > expected:
            filler = _fill_gap(unplaced, b.acked_offset - expected)
            for f in filler:
                unplaced.remove(f)
                plan.actions.append(Reproduce(f.lsn, expected))
                expected += f.record_count
        if b.acked_offset == expected:
            plan.actions.append(Reproduce(b.lsn, expected))
        else:
            plan.actions.append(
                Mismatch(
                    b.lsn,
                    b.acked_offset,
                    f"{b.acked_offset - expected} offsets before it "
                    f"(from {expected}) are not in the WAL",
                )
            )
        expected = max(expected, b.acked_offset) + b.record_count

    # 4. What is still in doubt goes to the end of the log (transactions excepted).
    for b in unplaced:
        if b.transactional:
            plan.actions.append(
                Abandon(
                    b.lsn,
                    "in-doubt transactional batch is not in the log; the client was never "
                    "acknowledged and its transaction will not commit it",
                    was_acked=False,
                )
            )
        else:
            plan.actions.append(Reproduce(b.lsn, None))
    return plan


def _fill_gap(candidates: Sequence[WalBatch], gap: int) -> list[WalBatch]:
    """In-doubt batches (WAL order) that exactly fill ``gap`` offsets, or none."""
    chosen: list[WalBatch] = []
    size = 0
    for b in candidates:
        if b.transactional:
            continue
        if size + b.record_count <= gap:
            chosen.append(b)
            size += b.record_count
        if size == gap:
            return chosen
    return []
