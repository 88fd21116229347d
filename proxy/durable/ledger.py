"""What the durable produce path knows of this process's WAL entries, sans-IO: which are
unresolved, which are in doubt, which are settled and waiting for S3, and so how far the WAL
may be trimmed.

``DurableProduce`` (the trio shell) tells the ledger what happened to each entry; the trim
loops ask it for a target. Nothing here sleeps, awaits or reads a clock: times are passed in
(trio's clock in the shell, plain numbers in the tests).

An entry's life: *persisted* (its BATCH is durable and about to be forwarded: unresolved)
-> its OUTCOME is durable (*settled*: resolved; a landed batch waits in the settled index
until the S3 copy covers it, when the offloader trims) — or its connection died without
learning its fate (*in doubt*, until the reconciler settles it). The WAL is never trimmed
past the first entry that is unresolved, in doubt, or settled but not yet covered.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Callable, Iterable
from itertools import chain

from proxy.kafka.produce_codec import PartitionKey

from .wal_entries import OutcomeEntry

__all__ = ["CoverKey", "Covers", "Ledger", "TxnGroupKey", "TxnPartitionKey", "cover_key"]

#: A transactional batch's partition and producer id: S3 covers it once it holds the batch
#: *and* its transaction's marker (a rebuild then needs nothing of it from the WAL; until then
#: the batch holds the trim, and so keeps the END_TXN after it in the WAL).
TxnPartitionKey = tuple[str | None, uuid.UUID | None, int, int]
#: A group and the producer id of a transactional offset commit (TxnOffsetCommit): covered
#: once the group's ``__consumer_offsets`` copy holds the commit and its marker.
TxnGroupKey = tuple[str, int]
#: What a settled WAL entry waits for S3 to cover: a partition's batch (a transactional one
#: with its producer id), or (a ``str``) a group's committed offsets, in that group's
#: ``__consumer_offsets`` partition (transactional ones with their producer id).
CoverKey = PartitionKey | TxnPartitionKey | str | TxnGroupKey
#: ``covers(key, last_offset or None, settled_at)``: does a committed S3 copy hold it?
Covers = Callable[[CoverKey, int | None, float], bool]


def cover_key(key: PartitionKey, producer_id: int) -> CoverKey:
    """What a batch of ``key`` waits for in S3: a transactional batch (``producer_id`` >= 0)
    its marker too."""
    return key if producer_id < 0 else (*key, producer_id)


class Ledger:
    """The entries of this process the WAL must keep, and the acknowledged end offsets."""

    __slots__ = ("_batch_meta", "_settled", "acked_end", "in_doubt", "track_settled", "unresolved")

    def __init__(self, *, track_settled: bool = False) -> None:
        #: LSN -> partition of every BATCH (or COMMIT) entry forwarded, or about to be, whose
        #: outcome is not durable yet.
        self.unresolved: dict[int, PartitionKey] = {}
        #: LSNs whose connection died without learning their fate.
        self.in_doubt: set[int] = set()
        #: partition -> end offset of the highest batch acknowledged to a client. A broker
        #: whose log ends below it has lost acknowledged records.
        self.acked_end: dict[PartitionKey, int] = {}
        #: With the S3 offloader trimming: keep the settled index (below).
        self.track_settled = track_settled
        #: LSN -> (what S3 must cover, record count) of BATCH entries between persistence
        #: and outcome.
        self._batch_meta: dict[int, tuple[CoverKey, int]] = {}
        #: Settled entries in LSN order (a heap): (LSN, what S3 must cover, last offset or
        #: None if unknown, settled at), until S3 covers them.
        self._settled: list[tuple[int, CoverKey, int | None, float]] = []

    # -- what happened ---------------------------------------------------------------------
    def persisted(
        self,
        lsns: Iterable[int],
        keys: Iterable[PartitionKey],
        counts: Iterable[int],
        producer_id: int = -1,
    ) -> None:
        """BATCH entries are durable and go to the broker next: unresolved until settled.
        ``producer_id``: a transactional request's producer (-1: not transactional)."""
        for lsn, key, count in zip(lsns, keys, counts, strict=True):
            self.unresolved[lsn] = key
            if self.track_settled:
                self._batch_meta[lsn] = (cover_key(key, producer_id), count)

    def pending(self, lsn: int, key: PartitionKey) -> None:
        """An entry (a COMMIT) is durable and goes to the broker next: unresolved until
        :meth:`resolved`."""
        self.unresolved[lsn] = key

    def resolved(self, lsns: Iterable[int]) -> None:
        """Their outcomes are durable (or they were abandoned): nothing holds the WAL for them."""
        for lsn in lsns:
            self.unresolved.pop(lsn, None)

    def outcomes_durable(self, outcomes: Iterable[OutcomeEntry], now: float) -> None:
        """Their OUTCOME entries are durable: the batches are settled. ``now`` matters only
        with :attr:`track_settled` (when settled entries wait for S3)."""
        for o in outcomes:
            self.unresolved.pop(o.batch_lsn, None)
            meta = self._batch_meta.pop(o.batch_lsn, None)
            if meta is not None:
                self.settled(o.batch_lsn, meta[0], o, meta[1], now)

    def settled(
        self, lsn: int, key: CoverKey, outcome: OutcomeEntry, record_count: int, now: float
    ) -> None:
        """A BATCH entry's outcome is durable. Failed ones are done with; landed ones wait in
        the index until the S3 copy covers their last offset."""
        self._batch_meta.pop(lsn, None)
        if not self.track_settled or outcome.error_code != 0:
            return
        last = outcome.base_offset + record_count - 1 if outcome.base_offset >= 0 else None
        heapq.heappush(self._settled, (lsn, key, last, now))

    def commit_settled(self, lsn: int, group_id: str, now: float, producer_id: int = -1) -> None:
        """A COMMIT entry's outcome is durable and some of its offsets were committed: it
        waits in the index until the S3 copy of the group's ``__consumer_offsets`` partition
        was synced after ``now`` (a commit's offset in that partition is not known here); a
        transactional one (``producer_id`` >= 0) until that copy holds its marker too."""
        if self.track_settled:
            key: CoverKey = group_id if producer_id < 0 else (group_id, producer_id)
            heapq.heappush(self._settled, (lsn, key, None, now))

    def acked(self, key: PartitionKey, end_offset: int) -> None:
        """A batch ending before ``end_offset`` was acknowledged to a client."""
        if end_offset > self.acked_end.get(key, 0):
            self.acked_end[key] = end_offset

    def doubt(self, lsns: Iterable[int]) -> None:
        self.in_doubt.update(lsns)

    def forget_partition(self, key: PartitionKey) -> None:
        """The partition no longer exists: nothing acknowledged in it can be lost any more."""
        self.acked_end.pop(key, None)

    def take_in_doubt(self) -> set[int]:
        """The LSNs in doubt, handed to the reconciler (which puts back what it cannot settle)."""
        taken, self.in_doubt = self.in_doubt, set()
        return taken

    # -- how far the WAL may be trimmed ------------------------------------------------------
    def first_unsettled(self) -> int | None:
        """The lowest LSN that is unresolved or in doubt."""
        return min(chain(self.unresolved, self.in_doubt), default=None)

    def retention_target(self, old_enough: int) -> int:
        """Without the offloader: up to ``old_enough`` (the last LSN durable for the whole
        retention), but never to an unsettled entry."""
        first = self.first_unsettled()
        return old_enough if first is None else min(old_enough, first - 1)

    def offload_target(
        self, old_enough: int, now: float, retention_s: float, covers: Covers
    ) -> int:
        """With the offloader: :meth:`retention_target`, and never past a settled entry the S3
        copy does not cover yet (or settled less than ``retention_s`` before ``now``). Entries
        found covered leave the index."""
        target = self.retention_target(old_enough)
        heap = self._settled
        while (
            heap
            and heap[0][0] <= target
            and heap[0][3] <= now - retention_s
            and covers(heap[0][1], heap[0][2], heap[0][3])
        ):
            heapq.heappop(heap)
        if heap and heap[0][0] <= target:
            target = heap[0][0] - 1
        return target
