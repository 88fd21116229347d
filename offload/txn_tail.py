"""Transactions in a rebuild's WAL tail, sans-IO: which END_TXN ended each transactional
batch, and the control batch (commit or abort marker) the rebuild writes for it.

The markers of a transaction are written broker to broker (``WriteTxnMarkers``), never
through walproxy, so a rebuilt log would hold a transaction's batches without the marker
that decides them. The proxy that sees a transaction's ``EndTxn`` (its coordinator's
sidecar, or the gateway) records it (END_TXN before forwarding, END_TXN_OUTCOME before the
answer: :mod:`proxy.durable.end_txn_path`). Where the same WAL holds the batches and the
end, the rebuild knows the outcome exactly and writes the marker itself.

Which end belongs to a batch: the first END_TXN after it in the WAL (LSN order) with the
batch's producer id and epoch. The EndTxn request carries the epoch of the transaction's
batches under both transaction versions: with transaction.version 1 every transaction of a
producer shares one epoch, and transactions are sequential, so the first end after the batch
is its own; with transaction.version 2 (KIP-890, EndTxn v5) the coordinator bumps the epoch
at each end, the response names the bumped one, the markers carry it and the producer's next
transaction uses it. So the marker's epoch is the response's (v5) or the request's (older).

Only an end proven by the WAL counts: an END_TXN whose END_TXN_OUTCOME is durable with error
0. An END_TXN answered with a code that Kafka returns before touching the transaction
(CONCURRENT_TRANSACTIONS, NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
COORDINATOR_LOAD_IN_PROGRESS) is passed over: the client retries it, and the retry is the
end. Anything else leaves the batch unresolved, with the reason:

* an END_TXN without an outcome, or abandoned (its connection died), and no retry after it
  answered: in doubt, it may have ended the transaction either way (a retry with the same
  producer id and epoch answered with error 0 decides it);
* an END_TXN answered with another error (PRODUCER_FENCED, INVALID_TXN_STATE, ...): the
  coordinator, not this request, decided the transaction (an abort by a fencing producer
  or a timeout), which the WAL does not see;
* no END_TXN after the batch: the transaction was still open when the WAL stopped, or (no
  END_TXN of that producer at all) its coordinator is another broker, whose sidecar saw the
  end (a sidecar of a cluster of several brokers sees only the transactions its broker
  coordinates).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.durable.wal_entries import EndTxnEntry, EndTxnOutcomeEntry, Source
from proxy.kafka.record_batch import build_batch

#: Kafka's codes for an EndTxn the coordinator refused before acting on it (the client
#: retries): NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS,
#: CONCURRENT_TRANSACTIONS.
NO_EFFECT_ERRORS = frozenset({16, 15, 14, 51})

#: The attributes of a control batch: transactional (bit 4) and control (bit 5).
CONTROL_ATTRIBUTES = 0x30
ABORT, COMMIT = 0, 1  # ControlRecordType
#: The coordinator epoch written into rebuilt markers. A partition leader fences a marker
#: whose coordinator epoch is below the last one it saw for the producer; 0 is the lowest a
#: coordinator has, so the real coordinator's markers (a retry after the rebuild, or the
#: abort of a timed-out transaction) are never refused because of ours.
MARKER_COORDINATOR_EPOCH = 0

_CONTROL_KEY = struct.Struct(">hh")  # version 0, type
_MARKER_VALUE = struct.Struct(">hi")  # version 0, coordinator epoch


@dataclass(frozen=True, slots=True)
class EndTxnFact:
    """An END_TXN entry and its END_TXN_OUTCOME (None: never recorded)."""

    lsn: int
    entry: EndTxnEntry
    outcome: EndTxnOutcomeEntry | None


@dataclass(frozen=True, slots=True)
class TxnEnd:
    """A transaction's end as the WAL proves it: what its markers say."""

    end_lsn: int
    transactional_id: str
    committed: bool
    producer_id: int
    marker_epoch: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Unresolved:
    """Why a transactional batch's outcome is not known from this WAL."""

    reason: str
    hint: str


class EndIndex:
    """The END_TXN entries of a WAL by producer id and (request) epoch, in LSN order."""

    __slots__ = ("_by_producer", "_producers")

    def __init__(self, ends: Iterable[EndTxnFact]) -> None:
        self._by_producer: dict[tuple[int, int], list[EndTxnFact]] = {}
        for e in sorted(ends, key=lambda f: f.lsn):
            key = (e.entry.producer_id, e.entry.producer_epoch)
            self._by_producer.setdefault(key, []).append(e)
        self._producers = {pid for pid, _ in self._by_producer}

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_producer.values())

    def resolve(self, batch_lsn: int, producer_id: int, epoch: int) -> TxnEnd | Unresolved:
        """The end of the transaction a batch (its BATCH entry's LSN, producer id and
        epoch) belongs to, or why it is not known."""
        in_doubt: Unresolved | None = None
        for e in self._by_producer.get((producer_id, epoch), ()):
            if e.lsn < batch_lsn:
                continue
            o = e.outcome
            verb = "commit" if e.entry.committed else "abort"
            if o is None or o.source == Source.ABANDONED:
                # Its client did not learn the answer either and retries the same end with
                # the same producer id and epoch; a retry the coordinator answers with error
                # 0 decides (after an applied end the other verb is refused as an invalid
                # state transition, under both transaction versions).
                in_doubt = in_doubt or Unresolved(
                    f"its EndTxn ({verb}, LSN {e.lsn}) is in doubt: the coordinator's answer "
                    "never became durable in the WAL, and no retry answered follows it",
                    _WAIT_OR_GAPS,
                )
                continue
            if o.error_code in NO_EFFECT_ERRORS:
                continue  # refused before it acted; the client's retry follows
            if o.error_code != 0:
                return Unresolved(
                    f"its EndTxn ({verb}, LSN {e.lsn}) failed with error {o.error_code}: the "
                    "coordinator ended the transaction itself, which the WAL does not record",
                    _WAIT_OR_GAPS,
                )
            marker_epoch = e.entry.producer_epoch
            if o.producer_id >= 0:  # EndTxn v5: the epoch the coordinator's markers carry
                if o.producer_id != producer_id:
                    return Unresolved(
                        f"its EndTxn (LSN {e.lsn}) gave the producer a new id "
                        f"{o.producer_id} (epoch exhausted); the markers' epoch is not recorded",
                        _WAIT_OR_GAPS,
                    )
                marker_epoch = o.producer_epoch
            return TxnEnd(
                e.lsn,
                e.entry.transactional_id,
                e.entry.committed,
                producer_id,
                marker_epoch,
                e.entry.request_time_ms,
            )
        if in_doubt is not None:
            return in_doubt
        if producer_id in self._producers:
            return Unresolved(
                "no EndTxn of its producer and epoch follows it in the WAL: the transaction "
                "was still open when the WAL stopped",
                _WAIT_OR_GAPS,
            )
        return Unresolved(
            "the WAL holds no EndTxn of its producer at all: the transaction was open when "
            "the WAL stopped, or another broker coordinates it (with several brokers behind "
            "sidecars only the coordinator's sidecar sees EndTxn; a gateway sees every one)",
            _WAIT_OR_GAPS,
        )


_WAIT_OR_GAPS = (
    "the S3 copy must cover it (batch and marker) before a rebuild, or re-run with "
    "--allow-gaps to leave the transaction's batches out (a hole where they were)"
)


def control_key(marker_type: int) -> bytes:
    """A control record's key: version 0 and the type (0 abort, 1 commit)."""
    return _CONTROL_KEY.pack(0, marker_type)


def marker_value(coordinator_epoch: int) -> bytes:
    """An end transaction marker's value: version 0 and the coordinator epoch."""
    return _MARKER_VALUE.pack(0, coordinator_epoch)


def marker_batch(end: TxnEnd, offset: int, leader_epoch: int) -> bytes:
    """The control batch a partition leader appends for ``end`` at ``offset``."""
    return build_batch(
        [marker_value(MARKER_COORDINATOR_EPOCH)],
        keys=[control_key(COMMIT if end.committed else ABORT)],
        timestamp_ms=end.timestamp_ms,
        producer_id=end.producer_id,
        producer_epoch=end.marker_epoch,
        base_sequence=-1,
        attributes=CONTROL_ATTRIBUTES,
        base_offset=offset,
        partition_leader_epoch=leader_epoch,
    )


def decode_marker(key: bytes, value: bytes) -> tuple[int, int]:
    """``(type, coordinator epoch)`` of an end transaction marker record (for tests)."""
    version, kind = _CONTROL_KEY.unpack(key[: _CONTROL_KEY.size])
    vversion, epoch = _MARKER_VALUE.unpack(value[: _MARKER_VALUE.size])
    if version != 0 or vversion != 0:
        raise ValueError(f"control record versions {version}/{vversion} are not 0")
    return kind, epoch


__all__ = [
    "ABORT",
    "COMMIT",
    "EndIndex",
    "EndTxnFact",
    "TxnEnd",
    "Unresolved",
    "control_key",
    "decode_marker",
    "marker_batch",
    "marker_value",
]
