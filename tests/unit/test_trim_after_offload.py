"""The WAL's trim once S3 covers an entry still keeps it ``wal.retention_s``: S3 having a
batch does not put it back into a broker that lost its page cache, the WAL does."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
import trio.testing

from proxy.durable.produce_path import DurableProduce
from proxy.durable.wal_entries import OutcomeEntry, Source

KEY = ("t", None, 0)


@dataclass
class FakeWal:
    """What the trimmer reads and calls of a WAL."""

    last_durable_lsn: int = 0
    first_lsn: int = 1
    trims: list[int] = field(default_factory=list)

    async def trim(self, lsn: int) -> None:
        self.trims.append(lsn)
        self.first_lsn = lsn + 1


def _settle(durable: DurableProduce, wal: FakeWal, lsn: int) -> None:
    wal.last_durable_lsn = lsn
    durable.note_settled(lsn, KEY, OutcomeEntry(lsn, Source.BROKER, 0, lsn * 10), record_count=10)


async def _run(retention_s: float, hold: list[bool], steps: list[tuple[float, int | None]]):
    """For each step settle its LSN (if any), then let its seconds pass; return the WAL's
    trim calls seen after each step."""
    wal = FakeWal()
    durable = DurableProduce(wal)  # type: ignore[arg-type]
    durable.track_settled = True
    durable.gate.open()
    seen: list[list[int]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: durable.trim_after_offload(
                lambda key, last, at: True,  # S3 covers everything at once
                0.5,
                retention_s=retention_s,
                hold=lambda: hold[0],
            )
        )
        for seconds, lsn in steps:
            if lsn is not None:
                _settle(durable, wal, lsn)
            await trio.sleep(seconds)
            seen.append(list(wal.trims))
        nursery.cancel_scope.cancel()
    return seen


async def test_a_covered_entry_is_kept_for_the_retention(autojump_clock: trio.abc.Clock) -> None:
    # entry 1 settles at 0 s, entry 2 at 5 s; looked at 5, 11 and 17 s. The trimmer's LSN
    # bound is sampled a round (0.5 s) late, so an entry goes up to retention + 2 rounds after
    # it settled: look well clear of the exact tick, where the order of wake-ups decides.
    seen = await _run(10.0, [False], [(5.0, 1), (6.0, 2), (6.0, None)])
    assert seen[0] == [], "trimmed 5 s after it settled, before wal.retention_s = 10"
    assert seen[1] == [1], "entry 1 (11 s old) trimmed, entry 2 (6 s old) kept"
    assert seen[2] == [1, 2]


async def test_without_retention_s3_coverage_is_enough(autojump_clock: trio.abc.Clock) -> None:
    seen = await _run(0.0, [False], [(2.0, 1)])
    assert seen[0] == [1]


async def test_nothing_is_trimmed_while_held(autojump_clock: trio.abc.Clock) -> None:
    hold = [True]
    seen = await _run(0.0, hold, [(5.0, 1)])
    assert seen[0] == [], "trimmed while the broker was unreachable"
