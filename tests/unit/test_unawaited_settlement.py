"""An answer whose OUTCOME write nobody waits for (its connection died between the broker's
answer and the response being written) still settles its batch once the WAL has the entry.

Found by the nemesis run (seed 835264249): such a batch stayed "unresolved" for ever, and
trimming, which never passes an unresolved entry, stopped until the WAL was full.
"""

from __future__ import annotations

import trio

from proxy.durable.produce_path import DurableProduce
from proxy.kafka.produce_codec import error_response
from proxy.kafka.record_batch import build_batch
from tests.integration.rawkafka import produce_frame_multi
from wal import WalConfig, open_wal
from wal.testing import MemoryBackend

KEY = ("t", None, 0)


async def _answered_not_awaited(durable: DurableProduce) -> int:
    """A produce through the durable path up to the broker's answer; the returned wait is
    dropped, as a connection that dies then drops it. Returns the batch's LSN."""
    frame = produce_frame_multi("t", {0: build_batch([b"x"])}, acks=-1, correlation_id=5)
    req = await durable.prepare(9, 5, frame, memoryview(frame)[4:])
    assert await durable.ready(req) is None
    durable.forwarded(req)
    [lsn] = req.lsns
    assert lsn in durable.ledger.unresolved
    answer = memoryview(error_response(9, 5, {KEY: 0}))
    _, settlement = await durable.answered(req, 9, answer)
    assert settlement is not None  # dropped here: never awaited
    return lsn


async def test_a_settlement_nobody_awaits_is_swept_once_durable() -> None:
    async with open_wal(MemoryBackend(), WalConfig(segment_size=1 << 20, io="thread")) as wal:
        durable = DurableProduce(wal)
        durable.gate.open()
        lsn = await _answered_not_awaited(durable)
        with trio.fail_after(5):
            while wal.last_durable_lsn < lsn + 1:  # the OUTCOME entry reaches the disk
                await trio.sleep(0.01)
        assert lsn in durable.ledger.unresolved  # negative control: nothing settled it yet
        durable.sweep_settlements()  # what each trim round does first
        assert lsn not in durable.ledger.unresolved


async def test_a_settlement_is_finished_once_when_awaited_twice() -> None:
    async with open_wal(MemoryBackend(), WalConfig(segment_size=1 << 20)) as wal:
        durable = DurableProduce(wal)
        durable.gate.open()
        frame = produce_frame_multi("t", {0: build_batch([b"y"])}, acks=-1, correlation_id=7)
        req = await durable.prepare(9, 7, frame, memoryview(frame)[4:])
        assert await durable.ready(req) is None
        durable.forwarded(req)
        _, settlement = await durable.answered(req, 9, memoryview(error_response(9, 7, {KEY: 0})))
        assert settlement is not None
        with trio.move_on_after(0):  # a wait cancelled at once (a connection closing)
            await settlement
        await settlement  # awaited again: completes, settles once
        assert req.lsns[0] not in durable.ledger.unresolved
        durable.sweep_settlements()  # nothing left to sweep
