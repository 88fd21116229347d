"""Kafka's checks of a client's record batch headers (LogValidator), before the WAL.

The integration test ``test_batch_the_broker_refuses_is_refused_with_its_own_code`` checks
the broker answers INVALID_RECORD to the same batches; this one covers each rule alone.
"""

from __future__ import annotations

import struct

import crc32c
import pytest

from proxy.durable.produce_path import DurableProduce
from proxy.durable.wal_entries import decode_batch
from proxy.kafka.produce_skim import skim_produce
from proxy.kafka.protocol import INVALID_RECORD
from proxy.kafka.record_batch import (
    CONTROL_FLAG,
    TRANSACTIONAL_FLAG,
    build_batch,
    iter_batches,
    produce_batch_problem,
)
from tests.integration.rawkafka import produce_frame_multi
from wal import WalConfig, open_wal
from wal.testing import MemoryBackend


def _patched(batch: bytes, offset: int, fmt: str, value: int) -> bytes:
    raw = bytearray(batch)
    struct.pack_into(fmt, raw, offset, value)
    struct.pack_into(">I", raw, 17, crc32c.crc32c(bytes(raw[21:])))
    return bytes(raw)


def _problem(blob: bytes) -> str | None:
    return produce_batch_problem(list(iter_batches(blob)))


@pytest.mark.parametrize(
    "batch",
    [
        build_batch([b"a"]),
        build_batch([b"a", b"b", b"c"], producer_id=4, producer_epoch=0, base_sequence=0),
        build_batch(
            [b"t"], producer_id=4, producer_epoch=0, base_sequence=7, attributes=TRANSACTIONAL_FLAG
        ),
    ],
)
def test_batches_clients_send_pass(batch: bytes) -> None:
    assert _problem(batch) is None


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (build_batch([b"a"]) + build_batch([b"b"], base_offset=1), "2 record batches"),
        (_patched(build_batch([b"a", b"b"]), 57, ">i", 3), "does not match"),
        (_patched(build_batch([b"a"]), 57, ">i", 0), "invalid record count 0"),
        (_patched(build_batch([b"a"]), 23, ">i", -2), "invalid offset range"),
        (build_batch([b"a"], attributes=CONTROL_FLAG), "control"),
        (build_batch([b"a"], producer_id=9, producer_epoch=0), "negative base sequence"),
    ],
)
def test_batches_kafka_refuses_are_named(blob: bytes, match: str) -> None:
    problem = _problem(blob)
    assert problem is not None and match in problem


async def test_produce_path_refuses_them_before_the_wal() -> None:
    """One intact but invalid batch next to a good one: INVALID_RECORD for it, only the good
    one goes to the WAL and upstream (the request re-encoded without the refused one)."""
    good, bad = build_batch([b"ok"]), build_batch([b"a"], attributes=CONTROL_FLAG)
    frame = produce_frame_multi("t", {0: good, 1: bad}, acks=-1, correlation_id=5)
    async with open_wal(MemoryBackend(), WalConfig(segment_size=1 << 20)) as wal:
        durable = DurableProduce(wal)
        durable.gate.open()
        req = await durable.prepare(9, 5, frame, memoryview(frame)[4:])
        assert req.refused == {("t", None, 1): INVALID_RECORD}
        assert req.keys == [("t", None, 0)] and req.counts == [1]
        forwarded = skim_produce(memoryview(req.frame)[4:])
        assert [p.partition for p in forwarded.partitions] == [0]
        assert req.local_response is None and await durable.ready(req) is None
        [entry] = list(wal.read_from(1))  # the good batch alone is in the WAL
        assert decode_batch(entry.payload).partition == 0
        assert bytes(decode_batch(entry.payload).records) == good
