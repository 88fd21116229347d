"""Property tests: random appends/trims, power loss at any point, then recovery.

The harness is proven by negative controls: the same checker must find
violations in deliberately broken WALs (no sync, ack before sync, no CRC check).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wal.reader
import wal.segment
from tests.wal.crashsim import run_scenario
from wal import Wal
from wal.record import (
    HEADER_SIZE,
    RECORD_HEADER,
    RECORD_MAGIC,
    RecordError,
    RecordHeader,
)

#: The writer's I/O modes (WalConfig.io): in-flight window, inline one at a time, and both.
IO_MODES = pytest.mark.parametrize("io", ["thread", "inline", "auto"])


@IO_MODES
@settings(max_examples=70, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**64 - 1))
def test_crash_recovery_property(io: str, seed: int) -> None:
    # A seed, not st.randoms(): thread timing decides when the injected power
    # loss fires, so the number of draws per run is not deterministic.
    violations = run_scenario(random.Random(seed), rounds=4, io=io)
    assert violations == []


@IO_MODES
@pytest.mark.parametrize("seed", range(12))
def test_crash_recovery_many_rounds(io: str, seed: int) -> None:
    """Longer histories: stale bytes of earlier epochs must never validate."""
    assert run_scenario(random.Random(1000 + seed), rounds=10, io=io) == []


# ---------------------------------------------------------------- negative controls
class AckBeforeSyncWal(Wal):
    """BROKEN on purpose: acknowledges a group after its write, before its sync.

    Each group's sync is deferred to the next group's write (a realistic
    "sync later" bug), so the acked group is volatile until then.
    """

    def _write_group_sync(self, handle, offset, buf, size):  # type: ignore[no-untyped-def]
        real = handle.sync
        handle.sync = lambda: None  # type: ignore[method-assign]
        try:
            real()  # the *previous* group's writes become durable only now
            return super()._write_group_sync(handle, offset, buf, size)
        finally:
            handle.sync = real  # type: ignore[method-assign]


class NoWindowRecordWal(Wal):
    """BROKEN on purpose: keeps several groups in flight but records back = 0,
    i.e. claims every earlier group was durable when it was not."""

    def _issue(self, g, back):  # type: ignore[no-untyped-def]
        super()._issue(g, 0)


def _lax_decode_header(data, pos, salt_crc):  # type: ignore[no-untyped-def]
    if pos + HEADER_SIZE > len(data):
        return RecordError.SHORT
    magic, typ, flags, _res, length, bcrc, lsn, glen, hcrc = RECORD_HEADER.unpack_from(data, pos)
    if magic != RECORD_MAGIC:
        return RecordError.MAGIC
    return RecordHeader(typ, flags, length, bcrc, lsn, glen, hcrc, _res)


def _lax_check_body(data, pos, hdr):  # type: ignore[no-untyped-def]
    if pos + HEADER_SIZE + hdr.length > len(data):
        return RecordError.SHORT
    return None


@contextlib.contextmanager
def _no_crc_check() -> Iterator[None]:
    """BROKEN on purpose: readers and recovery ignore CRCs (magic/length only)."""
    mp = pytest.MonkeyPatch()
    for mod in (wal.segment, wal.reader):
        mp.setattr(mod, "decode_header", _lax_decode_header)
        mp.setattr(mod, "check_body", _lax_check_body)
    try:
        yield
    finally:
        mp.undo()


def _first_violation(max_seeds: int, **kw: object) -> tuple[int, list[str]] | None:
    for seed in range(max_seeds):
        try:
            v = run_scenario(random.Random(seed), rounds=4, **kw)  # type: ignore[arg-type]
        except Exception as e:  # the broken WAL blew up: also a detected failure
            v = [f"exception: {e!r}"]
        if v:
            return seed, v
    return None


@IO_MODES
def test_negative_control_no_sync_is_detected(io: str) -> None:
    found = _first_violation(200, ignore_sync=True, io=io)
    assert found is not None, "checker failed to detect a WAL that never syncs"
    # acked entries lost, or holes that make the log unreadable: both are caught
    assert any("acknowledged" in x or "refused to open" in x for x in found[1]), found


@IO_MODES
def test_negative_control_ack_before_sync_is_detected(io: str) -> None:
    found = _first_violation(300, wal_class=AckBeforeSyncWal, io=io)
    assert found is not None, "checker failed to detect ack-before-sync"
    assert any("acknowledged" in x for x in found[1]), found


def test_negative_control_unrecorded_window_is_detected() -> None:
    """Overlapping group writes without `back`: a crash leaves a hole before a
    valid group, which recovery must then call corruption (a false refusal).
    Thread I/O only: inline I/O never has two groups in flight."""
    found = _first_violation(200, wal_class=NoWindowRecordWal, io="thread")
    assert found is not None, "the crash harness never produced a hole inside the window"
    assert any("refused to open" in x for x in found[1]), found


@IO_MODES
def test_negative_control_no_crc_check_is_detected(io: str) -> None:
    with _no_crc_check():
        found = _first_violation(200, io=io)
    assert found is not None, "checker failed to detect a reader that skips CRC checks"


@IO_MODES
def test_correct_wal_passes_the_seeds_the_controls_use(io: str) -> None:
    """The same seeds that expose the broken variants are clean for the real WAL."""
    for seed in range(40):
        assert run_scenario(random.Random(seed), rounds=4, io=io) == [], seed
