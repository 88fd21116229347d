"""The durable produce path: WAL before forward, acknowledgement after both.

:class:`DurableProduce` is the :class:`~proxy.net.connection.ProduceHandler` every connection
shares. For each Produce request it

1. skims the request (no copy of record bytes) and checks every record batch (magic 2,
   length, CRC32C) and what Kafka checks of a client's batch headers (one batch per
   partition, count and offset range agree, no control batch): a bad batch is refused with
   Kafka's own code, CORRUPT_MESSAGE or INVALID_RECORD, and reaches neither the WAL nor the
   broker, while the request's other partitions go on;
2. queues one BATCH entry per partition in the WAL, in request order, so group commit shares
   one write and one sync among every connection's appends;
3. lets the connection forward the request once its entries are durable (and no repair is
   running: a repair must finish before new data reaches the broker);
4. records each partition's outcome (OUTCOME entry) when the broker answers, and lets the
   response go to the client only once that outcome is durable.

Whatever a connection sends upstream but never learns the fate of is *in doubt*; the
reconciler (``proxy.durable.reconciler``) settles it. Produce with ``acks=0`` is persisted like any
other and is known to have landed once a later response arrives on the same connection
(Kafka closes the connection on an acks=0 error instead of answering).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from proxy.durable import metrics as pm
from proxy.durable.ledger import CoverKey, Covers, Ledger
from proxy.durable.wal_entries import (
    BATCH,
    OUTCOME,
    OutcomeEntry,
    Source,
    encode_batch_header,
    encode_outcome,
)
from proxy.kafka.produce_codec import (
    PartitionKey,
    error_response,
    request_without,
    response_outcomes,
    response_with_errors,
)
from proxy.kafka.produce_skim import skim_produce
from proxy.kafka.protocol import CORRUPT_MESSAGE, INVALID_RECORD, KAFKA_STORAGE_ERROR
from proxy.kafka.record_batch import BatchError, iter_batches, produce_batch_problem
from wal import Wal, WalError
from wal.s3_wal import S3Wal
from wal.writer import Submission

log = structlog.get_logger("walproxy.produce")


@dataclass(eq=False, slots=True)
class PreparedRequest:
    """One Produce request between the client reader and its acknowledgement."""

    version: int
    correlation_id: int
    acks: int
    frame: bytes
    keys: list[PartitionKey] = field(default_factory=list)  # one per WAL entry
    counts: list[int] = field(default_factory=list)  # offsets each entry takes in the log
    refused: dict[PartitionKey, int] = field(default_factory=dict)
    local_response: bytes | None = None
    submission: Submission | None = None  # the WAL submission of the BATCH entries
    lsns: list[int] = field(default_factory=list)
    #: a transactional request's producer id (its batches wait in S3 for their marker)
    producer_id: int = -1
    forwarded: bool = False
    received_at: float = 0.0
    durable_at: float = 0.0
    forwarded_at: float = 0.0


class _Gate:
    """Closed while a repair runs; produce requests wait at it before being forwarded."""

    def __init__(self) -> None:
        self._open = trio.Event()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        if self._open.is_set():
            self._open = trio.Event()

    async def wait(self) -> None:
        await self._open.wait()


class Settlement:
    """An answer's OUTCOME entries on their way to the WAL (:meth:`DurableProduce.settlement`):
    awaiting it waits for their durability and then settles their batches; awaiting it again
    (after a cancelled wait) is fine, and settling happens once."""

    __slots__ = ("_owner", "_settled", "done", "submission")

    def __init__(
        self, owner: DurableProduce, submission: Submission, settled: Callable[[bool], None]
    ) -> None:
        self._owner = owner
        self.submission = submission
        self._settled = settled
        self.done = False

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        await self.submission.wait()  # WalError propagates: the client is not answered
        self.finish(waited=True)

    def finish(self, *, waited: bool) -> None:
        if not self.done:
            self.done = True
            self._owner._settling.discard(self)
            self._settled(waited)


class DurableProduce:
    def __init__(self, wal: Wal | S3Wal) -> None:
        self.wal = wal
        #: Entries below this LSN were written by an earlier process: without an outcome,
        #: they are in doubt. From it on they are this process's, tracked in memory.
        self.session_start_lsn = wal.last_durable_lsn + 1
        self.gate = _Gate()  # opened by the first reconciliation
        #: Closed while committed offsets are checked and restored (start-up, and after the
        #: broker went away): the connections hold every group API at it (GROUP_APIS).
        self.group_gate = _Gate()
        #: Closed while lost batches are restored: OffsetForLeaderEpoch waits at it, so its
        #: answer is filtered with the restored ranges known (proxy/kafka/leader_epochs.py).
        self.epoch_gate = _Gate()
        #: What is unresolved, in doubt, settled; acknowledged ends (pure bookkeeping).
        self.ledger = Ledger()
        self.forwarded_unanswered = 0
        self.in_doubt_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        #: Answers' OUTCOME writes not yet known durable (see :meth:`settlement`).
        self._settling: set[Settlement] = set()

    @property
    def track_settled(self) -> bool:
        """Keep settled entries until S3 covers them (the offloader trims the WAL)."""
        return self.ledger.track_settled

    @track_settled.setter
    def track_settled(self, on: bool) -> None:
        self.ledger.track_settled = on

    def attach(self, nursery: trio.Nursery) -> None:
        """Where background outcome writes run (those a dying connection cannot await)."""
        self._nursery = nursery

    @property
    def nursery(self) -> trio.Nursery | None:
        return self._nursery

    # -- ProduceHandler ------------------------------------------------------------------
    async def prepare(
        self, version: int, correlation_id: int, frame: bytes, payload: memoryview
    ) -> PreparedRequest:
        skim = skim_produce(payload)
        req = PreparedRequest(
            version, correlation_id, skim.acks, frame, received_at=time.perf_counter()
        )
        entries: list[tuple[int, bytes]] = []
        for part in skim.partitions:
            key: PartitionKey = (part.topic, part.topic_id, part.partition)
            records = payload[part.start : part.end]
            count, producer_id, refuse_with, why = _check_records(records)
            if refuse_with is not None:
                req.refused[key] = refuse_with
                reason = "corrupt" if refuse_with == CORRUPT_MESSAGE else "invalid"
                pm.REFUSED.labels(reason).inc()
                log.warning(
                    f"refusing {reason} record batch",
                    api="Produce",
                    correlation_id=correlation_id,
                    topic=part.topic or str(part.topic_id),
                    partition=part.partition,
                    error=why,
                )
                continue
            if skim.transactional_id is not None:
                req.producer_id = producer_id
            header = encode_batch_header(
                acks=skim.acks,
                partition=part.partition,
                topic=part.topic,
                topic_id=part.topic_id,
                transactional_id=skim.transactional_id,
            )
            entries.append((BATCH, header + records))
            req.keys.append(key)
            req.counts.append(count)
        if req.refused:
            if skim.acks == 0:
                from proxy.net.connection import ClientRefused

                raise ClientRefused("refused record batch in an acks=0 produce request")
            if not entries:
                req.local_response = error_response(version, correlation_id, req.refused)
                return req
            rewritten = request_without(version, payload, req.refused)
            req.frame = len(rewritten).to_bytes(4, "big") + rewritten
        if self.wal.fenced:
            req.local_response = self._storage_error(req)
            return req
        try:
            req.submission = await self.wal.submit_many(entries)
        except WalError:
            req.local_response = self._storage_error(req)
        return req

    def _storage_error(self, req: PreparedRequest) -> bytes:
        pm.REFUSED.labels("wal_unavailable").inc(len(req.keys))
        errors = dict.fromkeys(req.keys, KAFKA_STORAGE_ERROR)
        errors.update(req.refused)
        return error_response(req.version, req.correlation_id, errors)

    async def ready(self, prepared: PreparedRequest) -> bytes | None:
        req = prepared
        try:
            assert req.submission is not None  # prepare() queued it, or answered locally
            req.lsns = await req.submission.wait()
        except WalError as exc:
            log.error(
                "WAL append failed; refusing produce",
                api="Produce",
                correlation_id=req.correlation_id,
                error=str(exc),
            )
            if req.acks == 0:
                return b""  # the connection refuses it (no response possible)
            return self._storage_error(req)
        req.durable_at = time.perf_counter()
        pm.WAL_SECONDS.observe(req.durable_at - req.received_at)
        pm.PERSISTED.inc(len(req.lsns))
        self.ledger.persisted(req.lsns, req.keys, req.counts, req.producer_id)
        if not self.gate.is_open:
            await self.gate.wait()
        return None

    def forwarded(self, prepared: PreparedRequest) -> None:
        prepared.forwarded = True
        prepared.forwarded_at = time.perf_counter()
        pm.FORWARD_SECONDS.observe(prepared.forwarded_at - prepared.durable_at)
        if prepared.acks != 0:  # acks=0 is settled by barriers, never waited for
            self.forwarded_unanswered += 1

    async def answered(
        self,
        prepared: PreparedRequest,
        version: int,
        payload: memoryview,
    ) -> tuple[bytes | memoryview, Awaitable[None] | None]:
        req = prepared
        self.forwarded_unanswered -= 1
        answered_at = time.perf_counter()
        pm.UPSTREAM_SECONDS.observe(answered_at - req.forwarded_at)
        by_key = {o.key: o for o in response_outcomes(version, payload)}
        outcomes = []
        for lsn, key, count in zip(req.lsns, req.keys, req.counts, strict=True):
            o = by_key.get(key)
            if o is None:  # the broker did not answer for it: treat as failed, never replayed
                outcome = OutcomeEntry(lsn, Source.BROKER, -1, -1, reason="missing in response")
            else:
                outcome = OutcomeEntry(
                    lsn,
                    Source.BROKER,
                    o.error_code,
                    o.base_offset if o.error_code == 0 else -1,
                    o.log_append_time,
                )
                if o.error_code == 0 and o.base_offset >= 0:
                    self.ledger.acked(key, o.base_offset + count)
            outcomes.append(outcome)
        if req.refused:
            payload = memoryview(response_with_errors(version, payload, req.refused))
        # Queued now, while the connection reads its next responses, so the outcomes of all
        # that arrive in one event-loop pass share one WAL group; the connection's client
        # writer waits for them before it writes the response.
        submission = await self._submit_outcomes(outcomes)

        def settled(waited: bool) -> None:
            if waited:
                pm.OUTCOME_SECONDS.observe(time.perf_counter() - answered_at)
            self._forget(outcomes)

        return payload, self.settlement(submission, settled)

    async def _submit_outcomes(self, outcomes: list[OutcomeEntry]) -> Submission:
        return await self.wal.submit_many([(OUTCOME, encode_outcome(o)) for o in outcomes])

    def _forget(self, outcomes: list[OutcomeEntry]) -> None:
        """Their OUTCOME entries are durable: the batches are settled."""
        # the clock only when settled entries are kept for S3 (not on every answer otherwise)
        now = trio.current_time() if self.ledger.track_settled else 0.0
        self.ledger.outcomes_durable(outcomes, now)

    def settlement(self, submission: Submission, settled: Callable[[bool], None]) -> Settlement:
        """What a response waits for before it is written: ``submission``'s durability, then
        ``settled(True)``. If nobody waits (the connection died first, or its wait was
        cancelled), :meth:`sweep_settlements` calls ``settled(False)`` once the WAL has the
        entries, so their batches do not stay unresolved (which would stop trimming)."""
        s = Settlement(self, submission, settled)
        self._settling.add(s)
        return s

    def sweep_settlements(self) -> None:
        """Finish the settlements whose entries are durable and that nobody waited for."""
        if not self._settling:
            return
        frontier = self.wal.last_durable_lsn
        for s in [s for s in self._settling if s.submission.last_lsn <= frontier]:
            s.finish(waited=False)

    def proven_processed(self, prepared: list[PreparedRequest]) -> None:
        outcomes = []
        for req in prepared:
            outcomes += [OutcomeEntry(lsn, Source.BROKER, 0, -1) for lsn in req.lsns]
        self._in_background(outcomes)

    def abandoned(self, prepared: list[PreparedRequest]) -> None:
        never_sent = []
        for req in prepared:
            if req.forwarded:
                if req.acks != 0:
                    self.forwarded_unanswered -= 1
                self.ledger.doubt(req.lsns)
            elif req.acks != 0:
                # Never reached the broker and never acknowledged: the client retries it.
                never_sent += [
                    OutcomeEntry(
                        lsn, Source.ABANDONED, -1, -1, reason="connection closed before forwarding"
                    )
                    for lsn in req.lsns
                ]
            else:
                self.ledger.doubt(req.lsns)  # acks=0: nobody retries, so replay it
        if never_sent:
            self._in_background(never_sent)
        if self.ledger.in_doubt:
            pm.IN_DOUBT.set(len(self.ledger.in_doubt))
            self.in_doubt_changed.set()

    def _in_background(self, outcomes: list[OutcomeEntry]) -> None:
        if not outcomes:
            return
        if self._nursery is None:
            raise RuntimeError("DurableProduce.attach() was not called")
        self._nursery.start_soon(self._record_quietly, outcomes)

    async def _record_quietly(self, outcomes: list[OutcomeEntry]) -> None:
        try:
            await (await self._submit_outcomes(outcomes)).wait()
        except WalError as exc:
            log.error("cannot record outcomes; they stay in doubt", error=str(exc))
            self.ledger.doubt(o.batch_lsn for o in outcomes)
            return
        self._forget(outcomes)

    # -- WAL life cycle ---------------------------------------------------------------------
    async def trim_loop(
        self,
        retention_s: float,
        interval_s: float = 1.0,
        hold: Callable[[], bool] = lambda: False,
    ) -> None:
        """Trim entries older than ``retention_s`` whose fate is settled.

        Only with ``offload.enabled = false`` (otherwise the WAL is trimmed after the S3
        commit): it assumes the broker's page cache reaches its disk within ``retention_s``
        (Linux writes dirty pages back after 30 s by default). Nothing is trimmed while the
        gate is closed or ``hold()`` says so (the broker is unreachable): a broker that comes
        back without its page cache must find the acknowledged batches still in the WAL.
        """
        checkpoints: deque[tuple[float, int]] = deque()
        trimmed = 0
        while True:
            await trio.sleep(interval_s)
            now = trio.current_time()
            checkpoints.append((now, self.wal.last_durable_lsn))
            self.sweep_settlements()
            if hold() or not self.gate.is_open:
                continue
            old_enough = 0
            while checkpoints and checkpoints[0][0] <= now - retention_s:
                old_enough = checkpoints.popleft()[1]
            target = self.ledger.retention_target(old_enough)
            if target > trimmed:
                await self.wal.trim(target)
                trimmed = target

    def note_settled(
        self, lsn: int, key: CoverKey, outcome: OutcomeEntry, record_count: int
    ) -> None:
        """A BATCH entry's outcome is durable (``Ledger.settled``, now)."""
        self.ledger.settled(lsn, key, outcome, record_count, trio.current_time())

    async def trim_after_offload(
        self,
        covers: Covers,
        interval_s: float = 0.5,
        progress: Callable[[int, int], None] = lambda trimmed, last: None,
        retention_s: float = 0.0,
        hold: Callable[[], bool] = lambda: False,
    ) -> None:
        """Trim the WAL up to the first entry S3 does not cover yet (replaces
        :meth:`trim_loop` when the offloader runs; needs ``track_settled``).

        An entry is trimmable once its outcome is durable, it has been durable (and, if it
        landed, settled) for ``retention_s``, and either it failed or a committed manifest
        covers its last offset (``covers``). S3 having a batch does not put it back into the
        broker's log: a broker that loses its page cache within the write-back window is
        repaired from the WAL, so the entry must outlive that window even once offloaded.
        Nothing is trimmed while the gate is closed or ``hold()`` says so (the broker is
        unreachable). The LSN bound is sampled one round earlier, so a batch made durable is
        registered before it can be considered. ``progress(trimmed_lsn, last_durable_lsn)``
        is told each round (the offloader's metrics).
        """
        trimmed = 0
        await self.gate.wait()  # the first reconciliation has indexed the older entries
        checkpoints: deque[tuple[float, int]] = deque([(trio.current_time(), 0)])
        bound = self.wal.last_durable_lsn
        while True:
            await trio.sleep(interval_s)
            now = trio.current_time()
            checkpoints.append((now, bound))
            bound = self.wal.last_durable_lsn
            self.sweep_settlements()
            if hold() or not self.gate.is_open:
                progress(trimmed, bound)
                continue
            old_enough = 0
            while len(checkpoints) > 1 and checkpoints[1][0] <= now - retention_s:
                checkpoints.popleft()
            if checkpoints[0][0] <= now - retention_s:
                old_enough = checkpoints[0][1]
            target = self.ledger.offload_target(old_enough, now, retention_s, covers)
            if target > trimmed and target >= self.wal.first_lsn:
                await self.wal.trim(target)
                trimmed = target
            progress(trimmed, bound)

    def note_commit_settled(self, lsn: int, group_id: str, producer_id: int = -1) -> None:
        """A COMMIT entry's outcome is durable (``Ledger.commit_settled``, now)."""
        self.ledger.commit_settled(lsn, group_id, trio.current_time(), producer_id)

    # -- for the reconciler ----------------------------------------------------------------
    def note_acked(self, key: PartitionKey, end_offset: int) -> None:
        self.ledger.acked(key, end_offset)

    def take_in_doubt(self) -> set[int]:
        self.in_doubt_changed = trio.Event()
        return self.ledger.take_in_doubt()

    async def quiesce(self, timeout: float) -> bool:
        """Wait until no acks!=0 request forwarded is unanswered (the gate must be closed).

        acks=0 requests are not waited for: their confirmation needs a later request on
        their connection. One landing during a repair can only shift a restored batch's
        offset, which the repair then reports as a mismatch.
        """
        with trio.move_on_after(timeout):
            while self.forwarded_unanswered > 0:
                await trio.sleep(0.01)
            return True
        return False


def _check_records(records: memoryview) -> tuple[int, int, int | None, str]:
    """``(record count, producer id, error code to refuse with or None, why)`` for one partition's
    records: CORRUPT_MESSAGE where the broker's CRC and size checks fail, INVALID_RECORD
    where its ``LogValidator`` refuses a client's batch."""
    try:
        headers = list(iter_batches(records))
        if not headers:
            raise BatchError("no record batch")
    except BatchError as exc:
        return 0, -1, CORRUPT_MESSAGE, str(exc)
    problem = produce_batch_problem(headers)
    if problem is not None:
        return 0, -1, INVALID_RECORD, problem
    return headers[0].record_count, headers[0].producer_id, None, ""
