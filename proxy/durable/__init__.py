"""The durable produce path: nothing is acknowledged before its WAL entry is durable.

What this package owns: the WAL entry format (:mod:`.wal_entries`: BATCH before forwarding,
OUTCOME before the acknowledgement; COMMIT and COMMIT_OUTCOME for offset commits), the
pure ledger of this process's entries (:mod:`.ledger`: what is unresolved, in doubt, settled,
and how far the WAL may be trimmed), the produce handler the connection calls
(:mod:`.produce_path`: :class:`DurableProduce`, the ledger's trio shell), the
offset commit handler (:mod:`.commit_path`: :class:`DurableCommit`), the EndTxn handler
(:mod:`.end_txn_path`: :class:`DurableEndTxn`; END_TXN and END_TXN_OUTCOME), both on the
durable steps of a request that is not Produce (:mod:`.request_path`), reconciliation with
the broker after trouble (:mod:`.reconciler`) and its pure repair planner
(:mod:`.repair_plan`), and the produce path's metrics (:mod:`.metrics`).

The entry format is plain data that the offloader's rebuild reads too, so importing it must
not start the trio runtime: the handler and the reconciler are loaded on first use
(``proxy.durable.DurableProduce``) rather than with the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .wal_entries import (
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
    Source,
)

if TYPE_CHECKING:
    from .commit_path import DurableCommit, PreparedCommit
    from .end_txn_path import DurableEndTxn, PreparedEndTxn
    from .ledger import Ledger
    from .produce_path import DurableProduce, PreparedRequest
    from .reconciler import Reconciler, Report

_RUNTIME = {
    "DurableCommit": "commit_path",
    "PreparedCommit": "commit_path",
    "DurableEndTxn": "end_txn_path",
    "PreparedEndTxn": "end_txn_path",
    "DurableProduce": "produce_path",
    "Ledger": "ledger",
    "PreparedRequest": "produce_path",
    "Reconciler": "reconciler",
    "Report": "reconciler",
}


def __getattr__(name: str) -> Any:
    module = _RUNTIME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "BATCH",
    "COMMIT",
    "COMMIT_OUTCOME",
    "END_TXN",
    "END_TXN_OUTCOME",
    "OUTCOME",
    "BatchEntry",
    "CommitEntry",
    "CommitOutcomeEntry",
    "DurableCommit",
    "DurableEndTxn",
    "DurableProduce",
    "EndTxnEntry",
    "EndTxnOutcomeEntry",
    "EntryError",
    "Ledger",
    "OutcomeEntry",
    "PreparedCommit",
    "PreparedEndTxn",
    "PreparedRequest",
    "Reconciler",
    "Report",
    "Source",
]
