"""The crash property tests of test_crash.py, against the S3 WAL (tests/wal/s3crashsim.py).

Negative controls prove the harness: the same checker must find violations in S3 WALs
broken on purpose (ack before the PUT returned, a frontier that lies, a taken slot taken
for success).
"""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.wal.s3crashsim import CFG, SimStore, _Late, run_s3_scenario
from wal.s3_layout import encode_object, object_name
from wal.s3_wal import S3Wal, open_s3_wal


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**64 - 1))
def test_s3_crash_recovery_property(seed: int) -> None:
    assert run_s3_scenario(random.Random(seed), rounds=4) == []


@pytest.mark.parametrize("seed", range(4))
def test_s3_crash_recovery_many_rounds(seed: int) -> None:
    """Longer histories: many epochs, markers, strays and trims over one prefix."""
    assert run_s3_scenario(random.Random(2000 + seed), rounds=10) == []


# ---------------------------------------------------------------- negative controls
class AckBeforePutWal(S3Wal):
    """BROKEN on purpose: a group counts as stored as soon as its PUT is started."""

    async def put_slot(self, slot: int, body: bytes) -> None:
        assert self._nursery is not None

        async def later() -> None:
            try:
                await S3Wal.put_slot(self, slot, body)
            except Exception:
                pass

        self._nursery.start_soon(later)
        await trio.sleep(0)


class FrontierLieWal(S3Wal):
    """BROKEN on purpose: keeps uploads in flight but records back = 0 (claims every
    earlier slot was acknowledged when it was issued)."""

    async def _upload(self, g, back):  # type: ignore[no-untyped-def]
        await super()._upload(g, 0)


class TakenSlotIsOursWal(S3Wal):
    """BROKEN on purpose: a slot found taken counts as our own earlier attempt."""

    async def _slot_taken(self, key, body, deadline):  # type: ignore[no-untyped-def]
        return True


def _first_violation(wal_class: type[S3Wal], max_seeds: int, **kw: object) -> list[str]:
    for seed in range(max_seeds):
        v = run_s3_scenario(random.Random(seed), wal_class=wal_class, **kw)  # type: ignore[arg-type]
        if v:
            return v
    return []


def test_negative_control_ack_before_put_is_detected() -> None:
    v = _first_violation(AckBeforePutWal, 40, p_land=0.0)
    assert any("lost or changed" in x for x in v), v


def test_negative_control_frontier_lie_is_detected() -> None:
    v = _first_violation(FrontierLieWal, 40)
    assert any("refused to open" in x for x in v), v


async def _late_upload_race(wal_class: type[S3Wal]) -> tuple[list[int], list[int]]:
    """Writer 1 leaves a PUT for slot k+1 stalled; writer 2 claims k and appends; the
    stalled PUT lands just before writer 2's PUT of k+1 (the adversarial order). Returns
    (LSNs writer 2 acknowledged, LSNs present after a reopen)."""
    store = SimStore()
    async with open_s3_wal(store, CFG) as first:
        await first.append(b"one")
        epoch, k = first.epoch, first._next_slot
    stalled = encode_object(
        epoch=epoch, slot=k + 1, first_lsn=2, back=2, entries=[(0, b"never acknowledged")]
    )
    store.late.append(_Late(object_name(k + 1), stalled, -1))
    async with open_s3_wal(store, CFG, wal_class=wal_class) as second:
        assert second._next_slot == k + 1
        acked = [await second.append(b"two")]
    async with open_s3_wal(store, CFG) as check:
        present = [e.lsn for e in await trio.to_thread.run_sync(lambda: list(check.read_from()))]
    return acked, present


async def test_a_superseded_writers_late_upload_in_our_slot_is_replaced() -> None:
    acked, present = await _late_upload_race(S3Wal)
    assert acked == [2] and present == [1, 2]


async def test_negative_control_taken_slot_as_success_is_detected() -> None:
    acked, present = await _late_upload_race(TakenSlotIsOursWal)
    assert acked == [2] and 2 not in present  # acknowledged and lost: what the checks catch


def test_correct_s3_wal_passes_the_controls_seeds() -> None:
    for seed in range(5):
        assert run_s3_scenario(random.Random(seed), p_land=1.0) == []
        assert run_s3_scenario(random.Random(seed), p_land=0.0) == []
