"""The durable EndTxn path: the end of a transaction is in the WAL before the client hears it.

:class:`DurableEndTxn` is the handler the connection calls for EndTxn requests (the steps
are :class:`~proxy.durable.request_path.DurableRequest`'s, as for offset commits). For each
one it

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
from collections.abc import Callable

from proxy.durable import metrics as pm
from proxy.durable.request_path import DurableRequest, PreparedRequest
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

#: One EndTxn request between the client reader and its answer.
PreparedEndTxn = PreparedRequest[SkimmedEndTxn]


class DurableEndTxn(DurableRequest[SkimmedEndTxn]):
    """EndTxn over the produce path's WAL (its trimming index holds the entries too)."""

    what = "EndTxn"
    logger = "walproxy.txn"
    entry_type = END_TXN
    outcome_type = END_TXN_OUTCOME
    #: Held until the outcome is durable; it waits for no S3 copy afterwards: its
    #: transaction's batches come before it in the WAL, which is trimmed as a prefix, so it
    #: outlives them.
    unresolved_key = ("__transaction_state", None, -1)

    def _skim(self, payload: memoryview) -> SkimmedEndTxn:
        return skim_end_txn(payload)

    def _entry(self, end: SkimmedEndTxn) -> bytes:
        return encode_end_txn(
            EndTxnEntry(
                api_version=end.version,
                request_time_ms=time.time_ns() // 1_000_000,
                transactional_id=end.transactional_id,
                producer_id=end.producer_id,
                producer_epoch=end.producer_epoch,
                committed=end.committed,
            )
        )

    def _refusal(self, end: SkimmedEndTxn) -> bytes:
        pm.END_TXNS_REFUSED.inc()
        return error_response(end, COORDINATOR_NOT_AVAILABLE)

    def _persisted(self) -> None:
        pm.END_TXNS_PERSISTED.inc()

    def _log_fields(self, end: SkimmedEndTxn) -> dict[str, object]:
        return {"transactional_id": end.transactional_id}

    def _outcome(
        self, req: PreparedEndTxn, version: int, payload: memoryview
    ) -> tuple[bytes, Callable[[bool], None]]:
        answer = response_answer(version, payload)
        outcome = EndTxnOutcomeEntry(
            req.lsn, Source.BROKER, answer.error_code, answer.producer_id, answer.producer_epoch
        )
        result = "commit" if req.skim.committed else "abort"

        def on_durable(waited: bool) -> None:
            if waited:
                pm.END_TXNS_ACKED.labels(result, str(answer.error_code)).inc()

        return encode_end_txn_outcome(outcome), on_durable

    def _abandoned(self, req: PreparedEndTxn) -> bytes:
        """In doubt to a rebuild: it may have ended the transaction either way."""
        return encode_end_txn_outcome(EndTxnOutcomeEntry(req.lsn, Source.ABANDONED, -1))


__all__ = ["DurableEndTxn", "PreparedEndTxn"]
