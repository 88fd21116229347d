"""The durable commit path: offset commits are in the WAL before the client hears of them.

:class:`DurableCommit` is the handler the connection calls for OffsetCommit and
TxnOffsetCommit requests (the same contract as :class:`~proxy.durable.produce_path.DurableProduce`,
``proxy.net.connection.ProduceHandler``). For each commit request it

1. skims the request (:mod:`proxy.kafka.commit_skim`: group, and per partition the topic,
   offset, leader epoch and metadata; the frame stays as the client sent it);
2. queues one COMMIT entry in the WAL (group commit shares its write and sync with produce
   batches), and lets the connection forward the frame once the entry is durable;
3. records the broker's answer (each partition's error code) as a COMMIT_OUTCOME entry, and
   lets the response go to the client only once that entry is durable.

A commit whose WAL append fails is answered COORDINATOR_NOT_AVAILABLE, which clients retry
(the coordinator answers so itself when it cannot append to ``__consumer_offsets``); once the
WAL is fenced every later commit is, so nothing is acknowledged that the WAL does not hold.

A commit whose connection dies before its answer was never acknowledged: its outcome is
recorded as abandoned, and nothing restores it (the client retries, or resumes from its
previous commit, as it would with Kafka alone).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass

import structlog

from proxy.durable import metrics as pm
from proxy.durable.produce_path import DurableProduce
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
from proxy.kafka.commit_codec import error_response, response_errors
from proxy.kafka.commit_skim import SkimmedCommit, skim_commit
from proxy.kafka.groups import CONSUMER_OFFSETS
from proxy.kafka.protocol import COORDINATOR_NOT_AVAILABLE
from wal import WalError
from wal.writer import Submission

log = structlog.get_logger("walproxy.commit")

#: What the produce path's trimming index holds for a commit entry: the group's
#: ``__consumer_offsets`` partition is resolved by the coverage (it knows the partition count).
_UNRESOLVED_KEY = (CONSUMER_OFFSETS, None, -1)


@dataclass(eq=False, slots=True)
class PreparedCommit:
    """One commit request between the client reader and its acknowledgement."""

    commit: SkimmedCommit
    frame: bytes
    acks: int = 1  # always answered (the connection's PreparedProduce contract)
    local_response: bytes | None = None
    submission: Submission | None = None
    lsn: int = 0
    forwarded: bool = False


class DurableCommit:
    """Offset commits over the produce path's WAL (its trimming index guards them too)."""

    def __init__(self, produce: DurableProduce) -> None:
        self.produce = produce
        self.wal = produce.wal

    async def prepare(
        self, version: int, correlation_id: int, frame: bytes, payload: memoryview
    ) -> PreparedCommit:
        commit = skim_commit(payload)
        req = PreparedCommit(commit, frame)
        if not commit.partitions:
            return req  # nothing to commit: forwarded like any other request
        if self.wal.fenced:
            req.local_response = self._refuse(req)
            return req
        entry = CommitEntry(
            api_key=commit.api_key,
            api_version=commit.version,
            commit_time_ms=time.time_ns() // 1_000_000,
            group_id=commit.group_id,
            transactional_id=commit.transactional_id,
            producer_id=commit.producer_id,
            producer_epoch=commit.producer_epoch,
            offsets=tuple(
                CommitOffset(p.topic, p.topic_id, p.partition, p.offset, p.leader_epoch, p.metadata)
                for p in commit.partitions
            ),
        )
        try:
            req.submission = await self.wal.submit_many([(COMMIT, encode_commit(entry))])
        except WalError:
            req.local_response = self._refuse(req)
        return req

    def _refuse(self, req: PreparedCommit) -> bytes:
        pm.COMMITS_REFUSED.inc()
        return error_response(req.commit, COORDINATOR_NOT_AVAILABLE)

    async def ready(self, prepared: PreparedCommit) -> bytes | None:
        req = prepared
        if req.submission is None:
            return None  # an empty commit
        try:
            (req.lsn,) = await req.submission.wait()
        except WalError as exc:
            log.error(
                "WAL append failed; refusing offset commit",
                group=req.commit.group_id,
                correlation_id=req.commit.correlation_id,
                error=str(exc),
            )
            return self._refuse(req)
        pm.COMMITS_PERSISTED.inc()
        self.produce.ledger.pending(req.lsn, _UNRESOLVED_KEY)  # not trimmed before its outcome
        return None

    def forwarded(self, prepared: PreparedCommit) -> None:
        prepared.forwarded = True

    async def answered(
        self, prepared: PreparedCommit, version: int, payload: memoryview
    ) -> tuple[bytes | memoryview, Awaitable[None] | None]:
        req = prepared
        if not req.lsn:
            return payload, None
        errors = response_errors(req.commit.api_key, version, payload)
        codes = tuple(
            errors.get((p.topic, p.topic_id, p.partition), -1) for p in req.commit.partitions
        )
        outcome = CommitOutcomeEntry(req.lsn, Source.BROKER, codes)
        submission = await self.wal.submit_many([(COMMIT_OUTCOME, encode_commit_outcome(outcome))])
        group_id = req.commit.group_id

        def settled(waited: bool) -> None:  # the outcome is durable (answered, if waited)
            acked = sum(1 for code in outcome.error_codes if code == 0)
            if waited:
                pm.COMMITTED_OFFSETS_ACKED.inc(acked)
            self.produce.ledger.resolved((outcome.commit_lsn,))
            if acked:
                self.produce.note_commit_settled(outcome.commit_lsn, group_id)

        return payload, self.produce.settlement(submission, settled)

    def proven_processed(self, prepared: list[PreparedCommit]) -> None:
        """Never called: commits are always answered."""

    def abandoned(self, prepared: list[PreparedCommit]) -> None:
        """Never acknowledged: recorded as abandoned so the entry may be trimmed."""
        outcomes = [
            CommitOutcomeEntry(req.lsn, Source.ABANDONED, (-1,) * len(req.commit.partitions))
            for req in prepared
            if req.lsn
        ]
        if outcomes:
            nursery = self.produce.nursery
            if nursery is None:
                raise RuntimeError("DurableProduce.attach() was not called")
            nursery.start_soon(self._record_quietly, outcomes)

    async def _record_quietly(self, outcomes: list[CommitOutcomeEntry]) -> None:
        try:
            submission = await self.wal.submit_many(
                [(COMMIT_OUTCOME, encode_commit_outcome(o)) for o in outcomes]
            )
            await submission.wait()
        except WalError as exc:
            log.error("cannot record abandoned commits", error=str(exc))
            return
        self.produce.ledger.resolved(o.commit_lsn for o in outcomes)


__all__ = ["DurableCommit", "PreparedCommit"]
