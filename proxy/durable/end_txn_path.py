"""The durable EndTxn path: the end of a transaction is in the WAL before the client hears it.

:class:`DurableEndTxn` is the handler the connection calls for EndTxn requests (the
``proxy.net.connection.ProduceHandler`` contract, as
:class:`~proxy.durable.commit_path.DurableCommit`). For each one it

1. skims the request (:mod:`proxy.kafka.end_txn`: transactional id, producer id and epoch,
   committed flag; the frame stays as the client sent it);
2. queues one END_TXN entry in the WAL and lets the connection forward the frame once the
   entry is durable;
3. records the coordinator's answer (error code; from v5 the producer id and bumped epoch)
   as an END_TXN_OUTCOME entry, and lets the response go to the client only once that entry
   is durable.

Why: the commit or abort markers are written broker to broker, never through walproxy, so a
rebuild that restores a transaction's batches from the WAL needs the transaction's outcome
from the same WAL (:mod:`offload.wal_tail`). EndTxn is one request per transaction, so each
waits for its own group commit: simplicity over speed.

An EndTxn whose WAL append fails is answered COORDINATOR_NOT_AVAILABLE (clients look the
coordinator up again and retry); once the WAL is fenced every later one is. One whose
connection dies before the answer is recorded as abandoned: the rebuild treats it as in
doubt (it may have ended the transaction either way) and refuses its transaction's batches.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass

import structlog

from proxy.durable import metrics as pm
from proxy.durable.produce_path import DurableProduce
from proxy.durable.wal_entries import (
    END_TXN,
    END_TXN_OUTCOME,
    EndTxnEntry,
    EndTxnOutcomeEntry,
    Source,
    encode_end_txn,
    encode_end_txn_outcome,
)
from proxy.kafka.end_txn import SkimmedEndTxn, error_response, response_answer, skim_end_txn
from proxy.kafka.protocol import COORDINATOR_NOT_AVAILABLE
from wal import WalError
from wal.writer import Submission

log = structlog.get_logger("walproxy.txn")

#: What the produce path's trimming index holds for an END_TXN entry until its outcome is
#: durable (it waits for no S3 copy afterwards: its transaction's batches come before it in
#: the WAL, which is trimmed as a prefix, so it outlives them).
_UNRESOLVED_KEY = ("__transaction_state", None, -1)


@dataclass(eq=False, slots=True)
class PreparedEndTxn:
    """One EndTxn request between the client reader and its answer."""

    end: SkimmedEndTxn
    frame: bytes
    acks: int = 1  # always answered (the connection's PreparedProduce contract)
    local_response: bytes | None = None
    submission: Submission | None = None
    lsn: int = 0
    forwarded: bool = False


class DurableEndTxn:
    """EndTxn over the produce path's WAL (its trimming index holds the entries too)."""

    def __init__(self, produce: DurableProduce) -> None:
        self.produce = produce
        self.wal = produce.wal

    async def prepare(
        self, version: int, correlation_id: int, frame: bytes, payload: memoryview
    ) -> PreparedEndTxn:
        end = skim_end_txn(payload)
        req = PreparedEndTxn(end, frame)
        if self.wal.fenced:
            req.local_response = self._refuse(req)
            return req
        entry = EndTxnEntry(
            api_version=end.version,
            request_time_ms=time.time_ns() // 1_000_000,
            transactional_id=end.transactional_id,
            producer_id=end.producer_id,
            producer_epoch=end.producer_epoch,
            committed=end.committed,
        )
        try:
            req.submission = await self.wal.submit_many([(END_TXN, encode_end_txn(entry))])
        except WalError:
            req.local_response = self._refuse(req)
        return req

    def _refuse(self, req: PreparedEndTxn) -> bytes:
        pm.END_TXNS_REFUSED.inc()
        return error_response(req.end, COORDINATOR_NOT_AVAILABLE)

    async def ready(self, prepared: PreparedEndTxn) -> bytes | None:
        req = prepared
        assert req.submission is not None  # prepare() answered locally otherwise
        try:
            (req.lsn,) = await req.submission.wait()
        except WalError as exc:
            log.error(
                "WAL append failed; refusing EndTxn",
                transactional_id=req.end.transactional_id,
                correlation_id=req.end.correlation_id,
                error=str(exc),
            )
            return self._refuse(req)
        pm.END_TXNS_PERSISTED.inc()
        self.produce.ledger.pending(req.lsn, _UNRESOLVED_KEY)  # not trimmed before its outcome
        return None

    def forwarded(self, prepared: PreparedEndTxn) -> None:
        prepared.forwarded = True

    async def answered(
        self, prepared: PreparedEndTxn, version: int, payload: memoryview
    ) -> tuple[bytes | memoryview, Awaitable[None] | None]:
        req = prepared
        if not req.lsn:
            return payload, None
        answer = response_answer(version, payload)
        outcome = EndTxnOutcomeEntry(
            req.lsn, Source.BROKER, answer.error_code, answer.producer_id, answer.producer_epoch
        )
        submission = await self.wal.submit_many(
            [(END_TXN_OUTCOME, encode_end_txn_outcome(outcome))]
        )
        end = req.end

        def settled(waited: bool) -> None:  # the outcome is durable (answered, if waited)
            if waited:
                result = "commit" if end.committed else "abort"
                pm.END_TXNS_ACKED.labels(result, str(answer.error_code)).inc()
            self.produce.ledger.resolved((outcome.end_txn_lsn,))

        return payload, self.produce.settlement(submission, settled)

    def proven_processed(self, prepared: list[PreparedEndTxn]) -> None:
        """Never called: EndTxn is always answered."""

    def abandoned(self, prepared: list[PreparedEndTxn]) -> None:
        """Never answered: recorded as abandoned (in doubt to a rebuild) so the entry may be
        trimmed."""
        outcomes = [
            EndTxnOutcomeEntry(req.lsn, Source.ABANDONED, -1) for req in prepared if req.lsn
        ]
        if outcomes:
            nursery = self.produce.nursery
            if nursery is None:
                raise RuntimeError("DurableProduce.attach() was not called")
            nursery.start_soon(self._record_quietly, outcomes)

    async def _record_quietly(self, outcomes: list[EndTxnOutcomeEntry]) -> None:
        try:
            submission = await self.wal.submit_many(
                [(END_TXN_OUTCOME, encode_end_txn_outcome(o)) for o in outcomes]
            )
            await submission.wait()
        except WalError as exc:
            log.error("cannot record abandoned EndTxn requests", error=str(exc))
            return
        self.produce.ledger.resolved(o.end_txn_lsn for o in outcomes)


__all__ = ["DurableEndTxn", "PreparedEndTxn"]
