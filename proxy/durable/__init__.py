"""The durable produce path: nothing is acknowledged before its WAL entry is durable.

What this package owns: the WAL entry format (:mod:`.wal_entries`: BATCH before forwarding,
OUTCOME before the acknowledgement), the produce handler the connection calls
(:mod:`.produce_path`: :class:`DurableProduce`), reconciliation with the broker after
trouble (:mod:`.reconciler`) and its pure repair planner (:mod:`.repair_plan`), and the
produce path's metrics (:mod:`.metrics`).

The entry format is plain data that the offloader's rebuild reads too, so importing it must
not start the trio runtime: the handler and the reconciler are loaded on first use
(``proxy.durable.DurableProduce``) rather than with the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .wal_entries import BATCH, OUTCOME, BatchEntry, EntryError, OutcomeEntry, Source

if TYPE_CHECKING:
    from .produce_path import DurableProduce, PreparedRequest
    from .reconciler import Reconciler, Report

_RUNTIME = {
    "DurableProduce": "produce_path",
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
    "OUTCOME",
    "BatchEntry",
    "DurableProduce",
    "EntryError",
    "OutcomeEntry",
    "PreparedRequest",
    "Reconciler",
    "Report",
    "Source",
]
