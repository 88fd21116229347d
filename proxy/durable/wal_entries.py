"""What the produce path writes to the WAL, sans-IO: plain functions over bytes.

Two entry types, both little more than fixed headers:

``BATCH`` — one partition's records from one Produce request, written (durably) before the
request is forwarded::

    u8   format version (1)
    u8   flags            bit 0: acks=0 (no client will ever see an outcome)
    i16  acks
    i32  partition
    16B  topic id         all zero when the request named the topic (Produce < v13)
    u16  topic name length, then UTF-8 bytes (0 when the request used the topic id)
    i16  transactional id length (-1: none), then UTF-8 bytes
    ...  the partition's record batches, byte for byte as the client sent them

``OUTCOME`` — what became of a BATCH entry, written before the client is answered::

    u8   format version (1)
    u8   source           1 broker response, 2 found in the log by reconciliation,
                          3 re-produced by reconciliation, 4 abandoned (see ``reason``)
    u64  LSN of the BATCH entry
    i16  error code       0: the batch is in the log at base_offset
    i64  base offset      -1 unless error code is 0
    i64  log append time  -1 unless the topic uses LogAppendTime
    u16  reason length, then UTF-8 bytes (why a batch was abandoned; empty otherwise)

Producer id, epoch, base sequence, record count and the transactional flag are not copied
out: they are in the batch header itself (:mod:`proxy.kafka.record_batch`).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum

BATCH = 1
OUTCOME = 2

_FORMAT = 1
_BATCH_HEAD = struct.Struct(">BBhi16s")
_OUTCOME = struct.Struct(">BBQhqq")
_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")

FLAG_ACKS0 = 0x01
_NO_TOPIC_ID = bytes(16)


class EntryError(ValueError):
    """A WAL entry of the produce path does not decode (version or length is wrong)."""


class Source(IntEnum):
    BROKER = 1
    FOUND = 2
    REPRODUCED = 3
    ABANDONED = 4


@dataclass(frozen=True, slots=True)
class BatchEntry:
    acks: int
    partition: int
    topic: str | None
    topic_id: uuid.UUID | None
    transactional_id: str | None
    records: bytes | memoryview

    @property
    def acks0(self) -> bool:
        return self.acks == 0


@dataclass(frozen=True, slots=True)
class OutcomeEntry:
    batch_lsn: int
    source: Source
    error_code: int
    base_offset: int
    log_append_time: int = -1
    reason: str = ""


def encode_batch_header(
    *,
    acks: int,
    partition: int,
    topic: str | None,
    topic_id: uuid.UUID | None,
    transactional_id: str | None,
) -> bytes:
    """The BATCH header; the entry is this followed by the records (no copy needed)."""
    name = (topic or "").encode()
    parts = [
        _BATCH_HEAD.pack(
            _FORMAT,
            FLAG_ACKS0 if acks == 0 else 0,
            acks,
            partition,
            topic_id.bytes if topic_id else _NO_TOPIC_ID,
        ),
        _U16.pack(len(name)),
        name,
    ]
    if transactional_id is None:
        parts.append(_I16.pack(-1))
    else:
        raw = transactional_id.encode()
        parts += [_I16.pack(len(raw)), raw]
    return b"".join(parts)


def encode_batch(entry: BatchEntry) -> bytes:
    return encode_batch_header(
        acks=entry.acks,
        partition=entry.partition,
        topic=entry.topic,
        topic_id=entry.topic_id,
        transactional_id=entry.transactional_id,
    ) + bytes(entry.records)


def decode_batch(payload: bytes | memoryview) -> BatchEntry:
    view = memoryview(payload)
    try:
        version, _flags, acks, partition, tid = _BATCH_HEAD.unpack_from(view, 0)
        if version != _FORMAT:
            raise EntryError(f"BATCH entry format {version} is not {_FORMAT}")
        pos = _BATCH_HEAD.size
        (n,) = _U16.unpack_from(view, pos)
        pos += 2
        topic = bytes(view[pos : pos + n]).decode() if n else None
        pos += n
        (t,) = _I16.unpack_from(view, pos)
        pos += 2
        txn = None
        if t >= 0:
            txn = bytes(view[pos : pos + t]).decode()
            pos += t
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryError(f"BATCH entry does not decode: {exc}") from exc
    if pos > len(view):
        raise EntryError("BATCH entry is truncated")
    return BatchEntry(
        acks=acks,
        partition=partition,
        topic=topic,
        topic_id=None if tid == _NO_TOPIC_ID else uuid.UUID(bytes=tid),
        transactional_id=txn,
        records=view[pos:],
    )


def encode_outcome(entry: OutcomeEntry) -> bytes:
    reason = entry.reason.encode()
    return (
        _OUTCOME.pack(
            _FORMAT,
            int(entry.source),
            entry.batch_lsn,
            entry.error_code,
            entry.base_offset,
            entry.log_append_time,
        )
        + _U16.pack(len(reason))
        + reason
    )


def decode_outcome(payload: bytes | memoryview) -> OutcomeEntry:
    try:
        version, source, lsn, err, base, lat = _OUTCOME.unpack_from(payload, 0)
        (n,) = _U16.unpack_from(payload, _OUTCOME.size)
        start = _OUTCOME.size + 2
        reason = bytes(payload[start : start + n]).decode()
        if version != _FORMAT:
            raise EntryError(f"OUTCOME entry format {version} is not {_FORMAT}")
        return OutcomeEntry(lsn, Source(source), err, base, lat, reason)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, EntryError):
            raise
        raise EntryError(f"OUTCOME entry does not decode: {exc}") from exc
