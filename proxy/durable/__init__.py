"""The durable produce path: nothing is acknowledged before its WAL entry is durable.

What this package owns: the WAL entry format (:mod:`.wal_entries`: BATCH before forwarding,
OUTCOME before the acknowledgement), the produce handler the connection calls
(:mod:`.produce_path`: :class:`DurableProduce`), reconciliation with the broker after
trouble (:mod:`.reconciler`) and its pure repair planner (:mod:`.repair_plan`), and the
produce path's metrics (:mod:`.metrics`).
"""

from .produce_path import DurableProduce, PreparedRequest
from .reconciler import Reconciler, Report
from .wal_entries import BATCH, OUTCOME, BatchEntry, EntryError, OutcomeEntry, Source

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
