"""A WAL that fences while a reconciliation writes its outcomes stops the reconciler, not the
server (found by the nemesis run: the sidecar's WAL volume filled during a repair and the
WalFencedError ended the whole process; docs/operations.md says it stays up, unready)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio

from proxy.durable.produce_path import _Gate
from proxy.durable.reconciler import Reconciler, Report
from wal import WalError
from wal.errors import WalFencedError


@dataclass
class _Wal:
    fenced: bool


@dataclass
class _Durable:
    """What Reconciler.run touches of DurableProduce."""

    wal: _Wal
    gate: _Gate = field(default_factory=_Gate)
    group_gate: _Gate = field(default_factory=_Gate)
    epoch_gate: _Gate = field(default_factory=_Gate)
    in_doubt: set[int] = field(default_factory=set)
    in_doubt_changed: trio.Event = field(default_factory=trio.Event)

    async def quiesce(self, timeout: float) -> bool:
        return True


class _FailingReconciler(Reconciler):
    def __init__(self, durable: _Durable, error: WalError) -> None:
        super().__init__(durable, ("127.0.0.1", 1))  # type: ignore[arg-type]
        self.error = error
        self.passes = 0

    async def reconcile(self, *, startup: bool) -> Report:
        self.passes += 1
        raise self.error


async def test_a_fenced_wal_parks_the_reconciler_with_the_gate_closed() -> None:
    durable = _Durable(_Wal(fenced=True))
    durable.gate.open()
    rec = _FailingReconciler(durable, WalFencedError("fenced after ENOSPC"))
    with trio.move_on_after(1.0) as scope:
        await rec.run()
    assert scope.cancelled_caught, "run() returned or raised instead of parking"
    assert rec.passes == 1  # no retry loop against a WAL that accepts nothing
    assert not durable.gate.is_open  # produce stays held (and refused by the fenced WAL)
    assert durable.group_gate.is_open  # group APIs flow (commits are refused by their path)
    assert durable.epoch_gate.is_open  # nothing will be restored: epochs are the broker's
    assert not rec.completed.is_set()


async def test_another_wal_error_still_ends_it() -> None:
    rec = _FailingReconciler(_Durable(_Wal(fenced=False)), WalError("closed"))
    with pytest.raises(WalError, match="closed"):
        await rec.run()
