"""The WAL tail of a rebuild: acknowledged batches the S3 copy does not cover yet.

The produce path writes a BATCH entry (the partition's records as the client sent them)
before forwarding and an OUTCOME entry (the base offset the broker assigned) before it
acknowledges. A batch with an OUTCOME of error 0 is acknowledged and sits in Kafka's log at
that offset; whatever of those lies at or past a partition's committed S3 ``next_offset``
is the tail that ``walproxy rebuild`` writes after the S3 segments.

A client's batch differs from the stored one only outside the CRC'd region, which the
planner patches (:func:`patch_batch`): ``baseOffset`` (the client sends 0) and
``partitionLeaderEpoch`` (the client sends -1; the broker stamps its leader epoch, which
the WAL does not record: the rebuild uses the latest epoch the manifest knows, which can be
lower than the real one when leadership changed after the last commit; Kafka only compares
epochs to detect divergence, and the rebuilt broker's next leadership bumps the epoch
anyway). For a topic with ``message.timestamp.type=LogAppendTime`` the broker also sets the
timestamp-type attribute and ``maxTimestamp`` to its append time, inside the CRC: the
OUTCOME entry carries that time, so the planner applies both and recomputes the CRC, giving
the broker's bytes again. A topic whose ``compression.type`` is not ``producer`` is
re-compressed by the broker; its tail batches are written as the client compressed them:
the same records at the same offsets, in other bytes.

Everything here is sans-IO: the entries come from :func:`wal.read_directory` (a WAL
directory that no writer holds, read without modifying it) or :func:`wal.read_s3_wal` (the
same for an S3 WAL's prefix).
"""

from __future__ import annotations

import itertools
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import crc32c

from proxy.durable.wal_entries import (
    BATCH,
    COMMIT,
    COMMIT_OUTCOME,
    END_TXN,
    END_TXN_OUTCOME,
    OUTCOME,
    BatchEntry,
    CommitEntry,
    CommitOutcomeEntry,
    EndTxnEntry,
    EndTxnOutcomeEntry,
    EntryError,
    OutcomeEntry,
    decode_batch,
    decode_commit,
    decode_commit_outcome,
    decode_end_txn,
    decode_end_txn_outcome,
    decode_outcome,
)
from proxy.kafka.record_batch import BatchError, BatchHeader, iter_batches
from wal import Entry

from .manifest import OpenTxn
from .txn_tail import EndIndex, EndTxnFact, TxnEnd, Unresolved, marker_batch

_I64 = struct.Struct(">q")
_I32 = struct.Struct(">i")
_ATTR = struct.Struct(">h")
_EPOCH_AT = 12  # partitionLeaderEpoch
_CRC_AT = 17
_ATTR_AT = 21  # the CRC covers attributes to the end of the batch
_MAX_TS_AT = 35
_CRC_FROM = 21
_LOG_APPEND_TIME = 0x08  # timestampType bit of the attributes


class TailError(ValueError):
    """The WAL tail cannot be placed after the S3 copy without losing or inventing offsets."""


# -- batch patching --------------------------------------------------------------------------
def patch_batch(
    batch: bytes | memoryview, base_offset: int, leader_epoch: int, log_append_time: int = -1
) -> bytes:
    """One record batch as the broker stored it: ``baseOffset`` and ``partitionLeaderEpoch``
    set (outside the CRC); with ``log_append_time >= 0`` also the LogAppendTime attribute and
    ``maxTimestamp`` (inside the CRC, which is recomputed)."""
    out = bytearray(batch)
    _I64.pack_into(out, 0, base_offset)
    _I32.pack_into(out, _EPOCH_AT, leader_epoch)
    if log_append_time >= 0:
        (attrs,) = _ATTR.unpack_from(out, _ATTR_AT)
        _ATTR.pack_into(out, _ATTR_AT, attrs | _LOG_APPEND_TIME)
        _I64.pack_into(out, _MAX_TS_AT, log_append_time)
        struct.pack_into(">I", out, _CRC_AT, crc32c.crc32c(memoryview(out)[_CRC_FROM:]))
    return bytes(out)


# -- planning --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AckedBatch:
    """A BATCH entry with its successful OUTCOME: where the broker put it."""

    lsn: int
    topic: str | None
    topic_id: uuid.UUID | None
    partition: int
    base_offset: int
    log_append_time: int
    headers: tuple[BatchHeader, ...]
    records: bytes | memoryview

    @property
    def last_offset(self) -> int:
        return self.base_offset + sum(h.last_offset_delta + 1 for h in self.headers) - 1

    @property
    def transactional(self) -> bool:
        return any(h.is_transactional for h in self.headers)

    @property
    def producer(self) -> tuple[int, int]:
        """Producer id and epoch (one per BATCH entry: one batch per partition and request)."""
        return self.headers[0].producer_id, self.headers[0].producer_epoch


@dataclass(frozen=True, slots=True)
class AckedCommit:
    """One partition's offset from a COMMIT entry whose COMMIT_OUTCOME gave it error 0."""

    lsn: int
    group_id: str
    topic: str | None
    topic_id: uuid.UUID | None
    partition: int
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_time_ms: int
    transactional_id: str | None  # TxnOffsetCommit: counts once its transaction commits
    producer_id: int = -1
    producer_epoch: int = -1


@dataclass
class WalFacts:
    """What a WAL scan found: acknowledged batches and the ones still in doubt, and the
    acknowledged offset commits (in LSN order)."""

    acked: list[AckedBatch] = field(default_factory=list)
    #: BATCH entries without an outcome (never acknowledged; maybe in the log, maybe not).
    in_doubt: list[tuple[int, BatchEntry]] = field(default_factory=list)
    entries: int = 0
    commits: list[AckedCommit] = field(default_factory=list)
    #: COMMIT entries without an outcome (never acknowledged).
    commits_in_doubt: int = 0
    #: END_TXN entries with their outcome, if any (LSN order).
    end_txns: list[EndTxnFact] = field(default_factory=list)

    def latest_commits(
        self, *, transactional: bool = False
    ) -> dict[tuple[str, str | None, uuid.UUID | None, int], AckedCommit]:
        """The last acknowledged commit (by WAL order) per (group, topic, topic id,
        partition): the offset the client was last told is committed. Transactional ones
        only with ``transactional`` (they count only if their transaction committed)."""
        out: dict[tuple[str, str | None, uuid.UUID | None, int], AckedCommit] = {}
        for c in self.commits:
            if c.transactional_id is None or transactional:
                out[(c.group_id, c.topic, c.topic_id, c.partition)] = c
        return out


def collect(entries: Iterable[Entry]) -> WalFacts:
    """Fold WAL entries into acknowledged batches (latest OUTCOME per BATCH wins)."""
    batches: dict[int, BatchEntry] = {}
    outcomes: dict[int, OutcomeEntry] = {}
    commits: dict[int, CommitEntry] = {}
    commit_outcomes: dict[int, CommitOutcomeEntry] = {}
    ends: dict[int, EndTxnEntry] = {}
    end_outcomes: dict[int, EndTxnOutcomeEntry] = {}
    facts = WalFacts()
    for entry in entries:
        facts.entries += 1
        try:
            if entry.type == BATCH:
                batches[entry.lsn] = decode_batch(entry.payload)
            elif entry.type == OUTCOME:
                decoded = decode_outcome(entry.payload)
                outcomes[decoded.batch_lsn] = decoded
            elif entry.type == COMMIT:
                commits[entry.lsn] = decode_commit(entry.payload)
            elif entry.type == COMMIT_OUTCOME:
                c = decode_commit_outcome(entry.payload)
                commit_outcomes[c.commit_lsn] = c
            elif entry.type == END_TXN:
                ends[entry.lsn] = decode_end_txn(entry.payload)
            elif entry.type == END_TXN_OUTCOME:
                e = decode_end_txn_outcome(entry.payload)
                end_outcomes[e.end_txn_lsn] = e
            # any other type is not the rebuild's (a newer writer's): passed by
        except EntryError as exc:
            raise TailError(f"WAL entry at LSN {entry.lsn} does not decode: {exc}") from exc
    facts.commits, facts.commits_in_doubt = _acked_commits(commits, commit_outcomes)
    facts.end_txns = [EndTxnFact(lsn, e, end_outcomes.get(lsn)) for lsn, e in sorted(ends.items())]
    for lsn, b in sorted(batches.items()):
        o = outcomes.get(lsn)
        if o is None:
            if not b.acks0:
                facts.in_doubt.append((lsn, b))
            continue
        if o.error_code != 0 or o.base_offset < 0:
            continue
        try:
            headers = tuple(iter_batches(b.records))
        except BatchError as exc:
            raise TailError(f"WAL batch at LSN {lsn} is damaged: {exc}") from exc
        if not headers:
            continue
        facts.acked.append(
            AckedBatch(
                lsn,
                b.topic,
                b.topic_id,
                b.partition,
                o.base_offset,
                o.log_append_time,
                headers,
                b.records,
            )
        )
    return facts


def _acked_commits(
    commits: dict[int, CommitEntry], outcomes: dict[int, CommitOutcomeEntry]
) -> tuple[list[AckedCommit], int]:
    acked: list[AckedCommit] = []
    in_doubt = 0
    for lsn, c in sorted(commits.items()):
        o = outcomes.get(lsn)
        if o is None:
            in_doubt += 1
            continue
        if len(o.error_codes) != len(c.offsets):
            raise TailError(
                f"COMMIT_OUTCOME of the commit at LSN {lsn} has {len(o.error_codes)} error "
                f"codes for {len(c.offsets)} partitions"
            )
        for off, code in zip(c.offsets, o.error_codes, strict=True):
            if code != 0:
                continue
            acked.append(
                AckedCommit(
                    lsn,
                    c.group_id,
                    off.topic,
                    off.topic_id,
                    off.partition,
                    off.offset,
                    off.leader_epoch,
                    off.metadata,
                    c.commit_time_ms,
                    c.transactional_id,
                    c.producer_id,
                    c.producer_epoch,
                )
            )
    return acked, in_doubt


@dataclass(frozen=True, slots=True)
class TailBatch:
    """One record batch to append, already patched."""

    base_offset: int
    last_offset: int
    data: bytes
    lsn: int


@dataclass
class PartitionTail:
    topic: str
    partition: int
    start: int  # the S3 copy's next_offset: where the tail must begin
    batches: list[TailBatch] = field(default_factory=list)
    skipped_covered: int = 0  # acknowledged batches the S3 copy already has
    gap_filled: int = 0  # in-doubt batches placed in a gap the S3 copy and acks left
    #: control batches written for transactions whose end the WAL proves, by end LSN
    markers: dict[int, TxnEnd] = field(default_factory=dict)
    #: transactional batches left out with --allow-gaps (their end is not known), and why
    txn_left_out: list[str] = field(default_factory=list)
    #: transactions open at the S3 copy's end (``Manifest.open_transactions``) with batches
    #: in the WAL, by producer id: their end (a marker is planned) or why it is not known
    #: (--allow-gaps: the transaction stays open in the rebuilt log)
    s3_open: dict[int, TxnEnd | str] = field(default_factory=dict)

    @property
    def next_offset(self) -> int:
        return self.batches[-1].last_offset + 1 if self.batches else self.start

    @property
    def size(self) -> int:
        return sum(len(b.data) for b in self.batches)


@dataclass(slots=True)
class _Txn:
    """A transaction with batches in this partition's tail: its end and its last batch."""

    end: TxnEnd
    last_offset: int


def plan_tail(
    facts: WalFacts,
    covered: Mapping[tuple[str, int], int],
    leader_epoch: Mapping[tuple[str, int], int],
    topic_names: Mapping[uuid.UUID, str],
    *,
    allow_gaps: bool = False,
    open_at_start: Mapping[tuple[str, int], Iterable[OpenTxn]] | None = None,
) -> dict[tuple[str, int], PartitionTail]:
    """Per partition the acknowledged batches from ``covered[tp]`` (the S3 ``next_offset``)
    on, patched and in offset order, with a commit or abort marker after each transaction
    whose end the WAL proves (:mod:`offload.txn_tail`).

    ``open_at_start[tp]`` are the transactions open at the S3 copy's end (the manifest's
    ``open_transactions``): the copy can end between a transaction's batches and its marker.
    A WAL batch the copy covers belongs to such a transaction when it is transactional, of
    its producer id and at or after its first offset; its end (from the WAL, as for a tail
    batch) gives the marker, due from the start of the tail (after the transaction's last
    tail batch if it has some). Without it the rebuilt log would keep the transaction open:
    its LSO stuck, read_committed consumers stalled.

    Offsets between acknowledged batches (gaps) are filled in this order: first the markers
    that are due (their transaction's last batch in the partition is placed), unless
    in-doubt batches fill the whole gap exactly and none of the due markers' producers
    writes next (then those markers wait for the next gap); then in-doubt batches that fit
    what is left exactly (:func:`_gap_filler`), as the reconciler fills a lost tail. A
    marker goes at the first offset after its transaction's last batch that no acknowledged
    batch occupies: the real marker's offset is free too and no earlier, so it is never
    after it. Markers still due at the end follow the last batch.

    Raises :class:`TailError` when a batch straddles the S3 end, two batches claim one
    offset with different records, the tail does not continue the S3 copy and nothing fills
    the gap (unless ``allow_gaps``), a transactional batch's end is not known from this WAL
    (unless ``allow_gaps``: the batch is left out), a producer's next transactional batch
    leaves no offset for its previous transaction's marker, or a batch's partition is
    unknown. An S3-open transaction whose end is not known refuses too (unless
    ``allow_gaps``: S3 holds its batches, so it stays open; :attr:`PartitionTail.s3_open`
    says why)."""
    by_tp: dict[tuple[str, int], list[AckedBatch]] = {}
    for a in facts.acked:
        name = a.topic if a.topic is not None else topic_names.get(a.topic_id)  # type: ignore[arg-type]
        if name is None:
            raise TailError(
                f"WAL batch at LSN {a.lsn} names topic id {a.topic_id}, which the broker "
                "metadata in the offload target does not list"
            )
        by_tp.setdefault((name, a.partition), []).append(a)
    doubt = _in_doubt_by_partition(facts, topic_names)
    ends = EndIndex(facts.end_txns)
    out: dict[tuple[str, int], PartitionTail] = {}
    for tp, acked in sorted(by_tp.items()):
        if tp not in covered:
            raise TailError(
                f"{tp[0]}-{tp[1]}: the WAL holds acknowledged batches but the offload target "
                "has no manifest for this partition"
            )
        opened = {t.producer_id: t for t in (open_at_start or {}).get(tp, ())}
        out[tp] = _plan_partition(
            tp,
            acked,
            covered[tp],
            leader_epoch.get(tp, 0),
            doubt.get(tp, []),
            ends,
            allow_gaps,
            opened,
        )
    return out


def open_without_wal(
    open_at_start: Mapping[tuple[str, int], Iterable[OpenTxn]],
    tails: Mapping[tuple[str, int], PartitionTail],
) -> list[tuple[tuple[str, int], OpenTxn]]:
    """The transactions open at the S3 copy's end of which the WAL holds no batch (trimmed
    by an older walproxy, ``--no-wal``, or another WAL's): nothing proves their end, so the
    rebuilt log keeps them open."""
    out = []
    for tp, txns in sorted(open_at_start.items()):
        tail = tails.get(tp)
        for t in txns:
            if tail is None or t.producer_id not in tail.s3_open:
                out.append((tp, t))
    return out


def _plan_partition(
    tp: tuple[str, int],
    acked: list[AckedBatch],
    start: int,
    epoch: int,
    doubt: list[AckedBatch],
    ends: EndIndex,
    allow_gaps: bool,
    opened: Mapping[int, OpenTxn],
) -> PartitionTail:
    where = f"{tp[0]}-{tp[1]}"
    tail = PartitionTail(tp[0], tp[1], start)
    ordered = sorted(acked, key=lambda x: (x.base_offset, x.lsn))
    txns = _transactions(where, ordered, start, ends, tail, allow_gaps)
    # transactions whose last batch is placed, marker not yet: from the start, those open at
    # the S3 end with no batch in the tail
    due = _s3_open(where, ordered, start, ends, tail, allow_gaps, opened, txns)
    last: AckedBatch | None = None  # the data batch placed last, for the sequence check
    seen: dict[int, AckedBatch] = {}
    for a in ordered:
        if a.last_offset < tail.start:
            tail.skipped_covered += 1
            continue
        if a.base_offset < tail.start:
            raise TailError(
                f"{where}: WAL batch at LSN {a.lsn} covers offsets "
                f"{a.base_offset}..{a.last_offset} across the S3 copy's end {tail.start}"
            )
        prev = seen.get(a.base_offset)
        if prev is not None:
            if bytes(prev.records) != bytes(a.records):
                raise TailError(
                    f"{where}: WAL batches at LSN {prev.lsn} and {a.lsn} both "
                    f"claim offset {a.base_offset} with different records"
                )
            continue  # a retry the broker de-duplicated: same records, same offset
        seen[a.base_offset] = a
        if a.transactional and a.lsn not in txns:
            continue  # left out (--allow-gaps): its end is not known
        if a.base_offset < tail.next_offset:
            raise TailError(
                f"{where}: WAL batch at LSN {a.lsn} (offsets {a.base_offset}.."
                f"{a.last_offset}) overlaps the batch before it"
            )
        if a.base_offset != tail.next_offset:
            _fill_gap(where, tail, a, last, due, doubt, epoch, allow_gaps)
        blocking = [t for t in due if t.end.producer_id == a.producer[0]]
        if blocking:
            raise TailError(
                f"{where}: the marker of producer {blocking[0].end.producer_id}'s transaction "
                f"(EndTxn LSN {blocking[0].end.end_lsn}) finds no free offset between its last "
                f"batch at {blocking[0].last_offset} and the producer's next batch at "
                f"{a.base_offset} (LSN {a.lsn})"
            )
        _append(tail, a, a.base_offset, epoch, a.log_append_time)
        last = a
        t = txns.get(a.lsn)
        if t is not None and t.last_offset == a.last_offset:
            due.append(t)
    _place_markers(tail, due, len(due), epoch)
    return tail


def _transactions(
    where: str,
    ordered: list[AckedBatch],
    start: int,
    ends: EndIndex,
    tail: PartitionTail,
    allow_gaps: bool,
) -> dict[int, _Txn]:
    """BATCH LSN -> its transaction, for every transactional batch of the tail whose end the
    WAL proves (one :class:`_Txn` per end, holding the last batch in this partition).
    An unknown end refuses, or (``allow_gaps``) leaves the batch out."""
    by_end: dict[int, _Txn] = {}
    out: dict[int, _Txn] = {}
    for a in ordered:
        if not a.transactional or a.last_offset < start:
            continue
        pid, producer_epoch = a.producer
        end = ends.resolve(a.lsn, pid, producer_epoch)
        if isinstance(end, Unresolved):
            what = (
                f"{where}: transactional WAL batch at LSN {a.lsn} (offset {a.base_offset}, "
                f"producer id {pid}, epoch {producer_epoch}): {end.reason}"
            )
            if not allow_gaps:
                raise TailError(f"{what}; {end.hint}")
            tail.txn_left_out.append(what)
            continue
        t = by_end.setdefault(end.end_lsn, _Txn(end, a.last_offset))
        t.last_offset = max(t.last_offset, a.last_offset)
        out[a.lsn] = t
    return out


def _s3_open(
    where: str,
    ordered: list[AckedBatch],
    start: int,
    ends: EndIndex,
    tail: PartitionTail,
    allow_gaps: bool,
    opened: Mapping[int, OpenTxn],
    txns: dict[int, _Txn],
) -> list[_Txn]:
    """Resolve the transactions open at the S3 end from their covered WAL batches (recorded
    in ``tail.s3_open``); returns those whose marker is due from the start of the tail. One
    that continues in the tail shares its tail batches' :class:`_Txn` (same end), whose
    marker follows the last of them. An unknown end refuses, or (``allow_gaps``) leaves the
    transaction open: its batches are in S3 already and cannot be left out."""
    due: dict[int, _Txn] = {}
    tail_txns = {t.end.end_lsn: t for t in txns.values()}
    for a in ordered:
        if a.last_offset >= start or not a.transactional:
            continue
        pid, producer_epoch = a.producer
        o = opened.get(pid)
        if o is None or a.base_offset < o.first_offset:
            continue  # not of a transaction open at the S3 end (its marker is in S3)
        known = tail.s3_open.get(pid)
        if isinstance(known, str):
            continue  # already unresolved: the first batch's reason stands
        end = ends.resolve(a.lsn, pid, producer_epoch)
        if isinstance(end, Unresolved) or (known is not None and known != end):
            why = _s3_open_unresolved(where, a, o, end, known)
            if not allow_gaps:
                raise TailError(why)
            tail.s3_open[pid] = why
            due.pop(pid, None)
            continue
        tail.s3_open[pid] = end
        if end.end_lsn not in tail_txns:
            due.setdefault(pid, _Txn(end, a.last_offset)).last_offset = a.last_offset
    return list(due.values())


def _s3_open_unresolved(
    where: str, a: AckedBatch, o: OpenTxn, end: TxnEnd | Unresolved, known: TxnEnd | None
) -> str:
    pid, epoch = a.producer
    if isinstance(end, Unresolved):
        reason = end.reason
    else:
        first = known.end_lsn if known is not None else "?"
        reason = (
            f"its batches resolve to different EndTxn entries (LSN {first} and "
            f"{end.end_lsn}), which the S3 copy (no marker between them) contradicts"
        )
    return (
        f"{where}: the transaction of producer id {pid}, epoch {epoch} is open at the S3 "
        f"copy's end (first offset {o.first_offset}; its WAL batch at LSN {a.lsn}, offset "
        f"{a.base_offset}): {reason}; the rebuilt log would keep it open (LSO stuck at "
        f"{o.first_offset}, read_committed consumers stalled). Wait for the offloader to copy "
        f"its marker, or re-run with --allow-gaps to rebuild with it open and then, once its "
        f"coordinator's state shows it aborted or never ended, {abort_hint(where, o)}"
    )


def abort_hint(where: str, o: OpenTxn) -> str:
    """The operator's remedy for a transaction left open in a rebuilt log (Kafka's tool)."""
    topic, _, partition = where.rpartition("-")
    return (
        "find it with `kafka-transactions.sh --bootstrap-server HOST:PORT find-hanging "
        "--broker-id N` and abort it with `kafka-transactions.sh --bootstrap-server HOST:PORT "
        f"abort --topic {topic} --partition {partition} --start-offset {o.first_offset}` "
        "(never for one its coordinator committed: that drops committed records; a "
        "coordinator that still has it ongoing aborts it itself after transaction.timeout.ms)"
    )


def _fill_gap(
    where: str,
    tail: PartitionTail,
    a: AckedBatch,
    last: AckedBatch | None,
    due: list[_Txn],
    doubt: list[AckedBatch],
    epoch: int,
    allow_gaps: bool,
) -> None:
    """Fill the offsets from the tail's end to ``a`` (see :func:`plan_tail` for the order)."""
    gap = f"offsets {tail.next_offset}..{a.base_offset - 1}"
    whole = _gap_filler(doubt, tail.next_offset, last, a)
    if whole and not any(t.end.producer_id == a.producer[0] for t in due):
        filler = whole  # the in-doubt batches fit exactly: the markers wait
    else:
        _place_markers(tail, due, a.base_offset - tail.next_offset, epoch, a.producer[0])
        filler = []
        if tail.next_offset < a.base_offset:
            filler = _gap_filler(doubt, tail.next_offset, last, a)
    for f in filler:
        doubt.remove(f)
        _append(tail, f, tail.next_offset, epoch, a.log_append_time)
    tail.gap_filled += len(filler)
    if tail.next_offset < a.base_offset and not allow_gaps:
        raise TailError(
            f"{where}: {gap} are neither in the S3 copy nor acknowledged "
            f"in the WAL (next acknowledged batch: LSN {a.lsn} at {a.base_offset}); "
            "they were written past the proxy or never acknowledged. Wait for the "
            "offloader to catch up, or re-run with --allow-gaps to leave the hole"
        )


def _place_markers(
    tail: PartitionTail, due: list[_Txn], room: int, epoch: int, next_producer: int = -1
) -> None:
    """Up to ``room`` due markers at the tail's end, in the order of their EndTxn (the
    coordinator's order of decisions); the rest stay due. The marker of ``next_producer``
    (whose batch follows the gap) goes first: the real one was before that batch, while
    the others may have landed after it (the coordinator writes each transaction's markers
    on its own, so a later EndTxn's marker can land first)."""
    due.sort(key=lambda t: (t.end.producer_id != next_producer, t.end.end_lsn))
    for t in due[:room]:
        offset = tail.next_offset
        data = marker_batch(t.end, offset, epoch)
        tail.batches.append(TailBatch(offset, offset, data, t.end.end_lsn))
        tail.markers[t.end.end_lsn] = t.end
    del due[:room]


def _append(
    tail: PartitionTail, a: AckedBatch, offset: int, epoch: int, log_append_time: int
) -> None:
    pos = 0
    view = memoryview(a.records)
    for h in a.headers:
        data = patch_batch(view[pos : pos + h.length], offset, epoch, log_append_time)
        tail.batches.append(TailBatch(offset, offset + h.last_offset_delta, data, a.lsn))
        offset += h.last_offset_delta + 1
        pos += h.length


def _in_doubt_by_partition(
    facts: WalFacts, topic_names: Mapping[uuid.UUID, str]
) -> dict[tuple[str, int], list[AckedBatch]]:
    """The in-doubt batches that could fill a gap, per partition in WAL order, as batches
    not yet placed (``base_offset`` -1). Transactional ones never fill one (their markers
    are the broker's), nor damaged ones or those of a topic id no metadata names."""
    out: dict[tuple[str, int], list[AckedBatch]] = {}
    for lsn, b in facts.in_doubt:
        name = b.topic if b.topic is not None else topic_names.get(b.topic_id)  # type: ignore[arg-type]
        try:
            headers = tuple(iter_batches(b.records))
        except BatchError:
            continue
        if name is None or not headers or any(h.is_transactional for h in headers):
            continue
        placed = AckedBatch(lsn, b.topic, b.topic_id, b.partition, -1, -1, headers, b.records)
        out.setdefault((name, b.partition), []).append(placed)
    return out


def _gap_filler(
    candidates: Sequence[AckedBatch], start: int, before: AckedBatch | None, after: AckedBatch
) -> list[AckedBatch]:
    """In-doubt batches (WAL order) that fill the offsets from ``start`` to
    ``after.base_offset`` exactly, or none. The broker held records there that S3 had not
    copied and the WAL never saw answered: a batch forwarded before its connection died, or
    one a reconciliation produced again before its outcome was durable. Idempotent batches
    must continue their producer's sequence from ``before`` into ``after`` (same producer id
    and epoch), so an in-doubt batch cannot take another batch's place."""
    gap = after.base_offset - start
    chosen: list[AckedBatch] = []
    size = 0
    for c in candidates:
        count = sum(h.last_offset_delta + 1 for h in c.headers)
        prev = chosen[-1] if chosen else before
        if size + count > gap or (prev is not None and not _sequence_fits([prev, c])):
            continue
        chosen.append(c)
        size += count
        if size == gap:
            break
    return chosen if size == gap and _sequence_fits([*chosen[-1:], after]) else []


def _sequence_fits(batches: Sequence[AckedBatch]) -> bool:
    """Consecutive batches of one idempotent producer (id and epoch) must continue its
    sequence; batches of different producers, or without one, say nothing."""
    for prev, nxt in itertools.pairwise(batches):
        p, n = prev.headers[-1], nxt.headers[0]
        if p.producer_id < 0 or p.producer_id != n.producer_id:
            continue
        if p.producer_epoch == n.producer_epoch and n.base_sequence != _next_sequence(p):
            return False
    return True


def _next_sequence(h: BatchHeader) -> int:
    """The sequence after the batch's last record (Kafka wraps past Int.MAX to 0)."""
    return (h.base_sequence + h.last_offset_delta + 1) % 2**31
