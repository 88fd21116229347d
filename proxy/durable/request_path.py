"""The durable path's steps for a request other than Produce whose answer a client takes as
an acknowledgement (offset commits, EndTxn), written once.

:class:`DurableRequest` is the handler the connection calls for such a request (the
``proxy.net.connection.ProduceHandler`` contract, as
:class:`~proxy.durable.produce_path.DurableProduce`). For each request it

1. skims it (the subclass's skimmer; the frame stays as the client sent it) and queues one
   entry in the WAL (group commit shares its write and sync with produce batches); the
   connection forwards the frame once the entry is durable;
2. records the broker's answer as an outcome entry, and lets the response go to the client
   only once that entry is durable;
3. records the outcome as abandoned when the connection died before the answer.

A request whose WAL append fails is answered locally with the subclass's refusal (a
retriable error); once the WAL is fenced every later one is, so nothing is acknowledged that
the WAL does not hold. Until its outcome is durable the entry holds the WAL's trim (the
produce path's ledger). A subclass says what its entries hold: :meth:`_entry`,
:meth:`_refusal`, :meth:`_outcome`, :meth:`_abandoned`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import structlog

from proxy.durable.produce_path import DurableProduce
from proxy.kafka.produce_codec import PartitionKey
from wal import WalError
from wal.writer import Submission

S = TypeVar("S")


@dataclass(eq=False, slots=True)
class PreparedRequest(Generic[S]):
    """One request between the client reader and its answer; ``skim`` is what was read of it."""

    skim: S
    frame: bytes
    acks: int = 1  # always answered (the connection's PreparedProduce contract)
    local_response: bytes | None = None
    submission: Submission | None = None
    lsn: int = 0
    forwarded: bool = False


class DurableRequest(Generic[S]):
    """A request's entry and outcome over the produce path's WAL."""

    #: For log lines: "offset commit", "EndTxn"; and the logger's name.
    what: ClassVar[str]
    logger: ClassVar[str]
    #: The WAL entry types of the request and of its outcome.
    entry_type: ClassVar[int]
    outcome_type: ClassVar[int]
    #: What the ledger holds for an entry until its outcome is durable.
    unresolved_key: ClassVar[PartitionKey]

    def __init__(self, produce: DurableProduce) -> None:
        self.produce = produce
        self.wal = produce.wal
        self._log = structlog.get_logger(self.logger)

    # -- what a subclass says --------------------------------------------------------------
    def _skim(self, payload: memoryview) -> S:
        raise NotImplementedError

    def _entry(self, skim: S) -> bytes | None:
        """The encoded entry, or None when there is nothing to record (forwarded as is)."""
        raise NotImplementedError

    def _refusal(self, skim: S) -> bytes:
        """The local answer when the WAL cannot take the entry (counted by the subclass)."""
        raise NotImplementedError

    def _persisted(self) -> None:
        """The entry is durable (a metric)."""

    def _log_fields(self, skim: S) -> dict[str, Any]:
        return {}

    def _outcome(
        self, req: PreparedRequest[S], version: int, payload: memoryview
    ) -> tuple[bytes, Callable[[bool], None]]:
        """The encoded outcome of the broker's answer, and what to do once it is durable
        (``settled(waited)``, before the ledger resolves the entry)."""
        raise NotImplementedError

    def _abandoned(self, req: PreparedRequest[S]) -> bytes:
        """The encoded outcome of a request whose connection died before its answer."""
        raise NotImplementedError

    # -- the connection's contract ---------------------------------------------------------
    async def prepare(
        self, version: int, correlation_id: int, frame: bytes, payload: memoryview
    ) -> PreparedRequest[S]:
        skim = self._skim(payload)
        req = PreparedRequest(skim, frame)
        entry = self._entry(skim)
        if entry is None:
            return req
        if self.wal.fenced:
            req.local_response = self._refusal(skim)
            return req
        try:
            req.submission = await self.wal.submit_many([(self.entry_type, entry)])
        except WalError:
            req.local_response = self._refusal(skim)
        return req

    async def ready(self, prepared: PreparedRequest[S]) -> bytes | None:
        req = prepared
        if req.submission is None:
            return None  # nothing recorded: forwarded as is
        try:
            (req.lsn,) = await req.submission.wait()
        except WalError as exc:
            self._log.error(
                f"WAL append failed; refusing {self.what}",
                correlation_id=getattr(req.skim, "correlation_id", None),
                error=str(exc),
                **self._log_fields(req.skim),
            )
            return self._refusal(req.skim)
        self._persisted()
        self.produce.ledger.pending(req.lsn, self.unresolved_key)  # kept until its outcome
        return None

    def forwarded(self, prepared: PreparedRequest[S]) -> None:
        prepared.forwarded = True

    async def answered(
        self, prepared: PreparedRequest[S], version: int, payload: memoryview
    ) -> tuple[bytes | memoryview, Awaitable[None] | None]:
        req = prepared
        if not req.lsn:
            return payload, None
        outcome, on_durable = self._outcome(req, version, payload)
        submission = await self.wal.submit_many([(self.outcome_type, outcome)])
        lsn = req.lsn

        def settled(waited: bool) -> None:  # the outcome is durable (answered, if waited)
            on_durable(waited)
            self.produce.ledger.resolved((lsn,))

        return payload, self.produce.settlement(submission, settled)

    def proven_processed(self, prepared: list[PreparedRequest[S]]) -> None:
        """Never called: these requests are always answered."""

    def abandoned(self, prepared: list[PreparedRequest[S]]) -> None:
        """Never answered: recorded as abandoned so the entry may be trimmed."""
        done = [(req.lsn, self._abandoned(req)) for req in prepared if req.lsn]
        if done:
            nursery = self.produce.nursery
            if nursery is None:
                raise RuntimeError("DurableProduce.attach() was not called")
            nursery.start_soon(self._record_quietly, done)

    async def _record_quietly(self, done: list[tuple[int, bytes]]) -> None:
        try:
            submission = await self.wal.submit_many([(self.outcome_type, o) for _, o in done])
            await submission.wait()
        except WalError as exc:
            self._log.error(f"cannot record abandoned {self.what} requests", error=str(exc))
            return
        self.produce.ledger.resolved(lsn for lsn, _ in done)


__all__ = ["DurableRequest", "PreparedRequest"]
