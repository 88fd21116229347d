"""What the durable paths write to the WAL, sans-IO: plain functions over bytes.

Two entry types of the produce path, both little more than fixed headers:

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

Two more for offset commits (OffsetCommit and TxnOffsetCommit), written the same way:

``COMMIT`` — one commit request's offsets, written (durably) before it is forwarded::

    u8   format version (1)
    u8   flags            bit 0: TxnOffsetCommit (the offsets count once its transaction commits)
    i16  api key, i16 api version (of the request)
    i64  commit time      ms since the epoch, the proxy's clock when the request arrived
    u16  group id length, then UTF-8 bytes
    i16  transactional id length (-1: none), then UTF-8 bytes
    i64  producer id      -1 unless TxnOffsetCommit
    i16  producer epoch   -1 unless TxnOffsetCommit
    u32  partition count, then per partition:
         16B topic id     all zero when the request named the topic
         u16 topic name length, then UTF-8 bytes (0 when the request used the topic id)
         i32 partition, i64 offset, i32 leader epoch (-1: none)
         i32 metadata length (-1: null), then UTF-8 bytes

``COMMIT_OUTCOME`` — the broker's answer to a COMMIT entry, written before the client is
answered::

    u8   format version (1)
    u8   source           1 broker response, 4 abandoned (never answered by the broker)
    u64  LSN of the COMMIT entry
    u32  partition count (the COMMIT entry's), then one i16 error code per partition, in the
         COMMIT entry's order (0: committed; -1: the broker's response did not name it)

A commit is *acknowledged* for a partition when its COMMIT_OUTCOME gives that partition
error 0.

Two for the end of a transaction (EndTxn), so that a rebuild knows whether the transactional
batches of the same WAL committed or aborted (:mod:`offload.wal_tail`):

``END_TXN`` — one EndTxn request, written (durably) before it is forwarded::

    u8   format version (1)
    u8   flags            bit 0: committed (the request asks to commit; else abort)
    i16  api version (of the request)
    i64  request time     ms since the epoch, the proxy's clock when the request arrived
    i64  producer id
    i16  producer epoch   as the request carries it: the transaction's batches' epoch
    u16  transactional id length, then UTF-8 bytes

``END_TXN_OUTCOME`` — the coordinator's answer to an END_TXN entry, written before the
client is answered::

    u8   format version (1)
    u8   source           1 broker response, 4 abandoned (never answered by the broker)
    u64  LSN of the END_TXN entry
    i16  error code       0: the transaction ended as the END_TXN entry asked
    i64  producer id      from the response (EndTxn v5+, transaction.version 2), else -1
    i16  producer epoch   likewise: the bumped epoch the markers carry under TV2, else -1

Readers that do not know a type skip it (the WAL stores opaque payloads with a type; every
reader here, the reconciler's and the commit repair's scans and the rebuild's
:func:`offload.wal_tail.collect`, dispatches on the type and ignores the others), so a WAL
written before END_TXN existed reads as before, and an older reader passes these by.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum

BATCH = 1
OUTCOME = 2
COMMIT = 3
COMMIT_OUTCOME = 4
END_TXN = 5
END_TXN_OUTCOME = 6

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


# -- offset commits --------------------------------------------------------------------------
_COMMIT_HEAD = struct.Struct(">BBhhq")
_PRODUCER = struct.Struct(">qh")
_U32 = struct.Struct(">I")
_COMMIT_PART = struct.Struct(">iqi")
_I32 = struct.Struct(">i")
_COMMIT_OUTCOME_HEAD = struct.Struct(">BBQI")
FLAG_TXN = 0x01


@dataclass(frozen=True, slots=True)
class CommitOffset:
    topic: str | None
    topic_id: uuid.UUID | None
    partition: int
    offset: int
    leader_epoch: int
    metadata: str | None


@dataclass(frozen=True, slots=True)
class CommitEntry:
    api_key: int
    api_version: int
    commit_time_ms: int
    group_id: str
    transactional_id: str | None
    producer_id: int
    producer_epoch: int
    offsets: tuple[CommitOffset, ...]

    @property
    def transactional(self) -> bool:
        return self.transactional_id is not None


@dataclass(frozen=True, slots=True)
class CommitOutcomeEntry:
    commit_lsn: int
    source: Source
    error_codes: tuple[int, ...]  # one per CommitEntry.offsets, same order


def _str16(value: str) -> bytes:
    raw = value.encode()
    return _U16.pack(len(raw)) + raw


def _nullable16(value: str | None) -> bytes:
    if value is None:
        return _I16.pack(-1)
    raw = value.encode()
    return _I16.pack(len(raw)) + raw


def encode_commit(entry: CommitEntry) -> bytes:
    parts = [
        _COMMIT_HEAD.pack(
            _FORMAT,
            FLAG_TXN if entry.transactional else 0,
            entry.api_key,
            entry.api_version,
            entry.commit_time_ms,
        ),
        _str16(entry.group_id),
        _nullable16(entry.transactional_id),
        _PRODUCER.pack(entry.producer_id, entry.producer_epoch),
        _U32.pack(len(entry.offsets)),
    ]
    for o in entry.offsets:
        parts += [
            o.topic_id.bytes if o.topic_id else _NO_TOPIC_ID,
            _str16(o.topic or ""),
            _COMMIT_PART.pack(o.partition, o.offset, o.leader_epoch),
        ]
        if o.metadata is None:
            parts.append(_I32.pack(-1))
        else:
            raw = o.metadata.encode()
            parts += [_I32.pack(len(raw)), raw]
    return b"".join(parts)


class _Reader:
    __slots__ = ("pos", "view")

    def __init__(self, payload: bytes | memoryview) -> None:
        self.view = memoryview(payload)
        self.pos = 0

    def unpack(self, st: struct.Struct) -> tuple[int, ...]:
        values = st.unpack_from(self.view, self.pos)
        self.pos += st.size
        return values

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.view):
            raise EntryError("COMMIT entry is truncated")
        raw = bytes(self.view[self.pos : self.pos + n])
        self.pos += n
        return raw

    def str16(self) -> str:
        return self.take(self.unpack(_U16)[0]).decode()


def decode_commit(payload: bytes | memoryview) -> CommitEntry:
    r = _Reader(payload)
    try:
        version, _flags, api_key, api_version, commit_time = r.unpack(_COMMIT_HEAD)
        if version != _FORMAT:
            raise EntryError(f"COMMIT entry format {version} is not {_FORMAT}")
        group = r.str16()
        (t,) = r.unpack(_I16)
        txn = r.take(t).decode() if t >= 0 else None
        producer_id, producer_epoch = r.unpack(_PRODUCER)
        (n,) = r.unpack(_U32)
        offsets = []
        for _ in range(n):
            tid = r.take(16)
            name = r.str16()
            partition, offset, epoch = r.unpack(_COMMIT_PART)
            (m,) = r.unpack(_I32)
            metadata = r.take(m).decode() if m >= 0 else None
            offsets.append(
                CommitOffset(
                    name or None,
                    None if tid == _NO_TOPIC_ID else uuid.UUID(bytes=tid),
                    partition,
                    offset,
                    epoch,
                    metadata,
                )
            )
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryError(f"COMMIT entry does not decode: {exc}") from exc
    if r.pos != len(r.view):
        raise EntryError(f"COMMIT entry has {len(r.view) - r.pos} trailing bytes")
    return CommitEntry(
        api_key, api_version, commit_time, group, txn, producer_id, producer_epoch, tuple(offsets)
    )


def encode_commit_outcome(entry: CommitOutcomeEntry) -> bytes:
    codes = entry.error_codes
    return _COMMIT_OUTCOME_HEAD.pack(
        _FORMAT, int(entry.source), entry.commit_lsn, len(codes)
    ) + struct.pack(f">{len(codes)}h", *codes)


def decode_commit_outcome(payload: bytes | memoryview) -> CommitOutcomeEntry:
    try:
        version, source, lsn, n = _COMMIT_OUTCOME_HEAD.unpack_from(payload, 0)
        if version != _FORMAT:
            raise EntryError(f"COMMIT_OUTCOME entry format {version} is not {_FORMAT}")
        size = _COMMIT_OUTCOME_HEAD.size + 2 * n
        if len(payload) != size:
            raise EntryError(f"COMMIT_OUTCOME entry is {len(payload)} bytes, not {size}")
        codes = struct.unpack_from(f">{n}h", payload, _COMMIT_OUTCOME_HEAD.size)
        return CommitOutcomeEntry(lsn, Source(source), tuple(codes))
    except (struct.error, ValueError) as exc:
        if isinstance(exc, EntryError):
            raise
        raise EntryError(f"COMMIT_OUTCOME entry does not decode: {exc}") from exc


# -- transaction ends --------------------------------------------------------------------------
_END_TXN_HEAD = struct.Struct(">BBhqqh")
_END_TXN_OUTCOME = struct.Struct(">BBQhqh")
FLAG_COMMITTED = 0x01


@dataclass(frozen=True, slots=True)
class EndTxnEntry:
    api_version: int
    request_time_ms: int
    transactional_id: str
    producer_id: int
    producer_epoch: int
    committed: bool


@dataclass(frozen=True, slots=True)
class EndTxnOutcomeEntry:
    end_txn_lsn: int
    source: Source
    error_code: int  # -1 when abandoned
    producer_id: int = -1  # the response's (EndTxn v5+), else -1
    producer_epoch: int = -1


def encode_end_txn(entry: EndTxnEntry) -> bytes:
    return _END_TXN_HEAD.pack(
        _FORMAT,
        FLAG_COMMITTED if entry.committed else 0,
        entry.api_version,
        entry.request_time_ms,
        entry.producer_id,
        entry.producer_epoch,
    ) + _str16(entry.transactional_id)


def decode_end_txn(payload: bytes | memoryview) -> EndTxnEntry:
    r = _Reader(payload)
    try:
        version, flags, api_version, when, pid, epoch = r.unpack(_END_TXN_HEAD)
        if version != _FORMAT:
            raise EntryError(f"END_TXN entry format {version} is not {_FORMAT}")
        txn = r.str16()
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryError(f"END_TXN entry does not decode: {exc}") from exc
    if r.pos != len(r.view):
        raise EntryError(f"END_TXN entry has {len(r.view) - r.pos} trailing bytes")
    return EndTxnEntry(api_version, when, txn, pid, epoch, bool(flags & FLAG_COMMITTED))


def encode_end_txn_outcome(entry: EndTxnOutcomeEntry) -> bytes:
    return _END_TXN_OUTCOME.pack(
        _FORMAT,
        int(entry.source),
        entry.end_txn_lsn,
        entry.error_code,
        entry.producer_id,
        entry.producer_epoch,
    )


def decode_end_txn_outcome(payload: bytes | memoryview) -> EndTxnOutcomeEntry:
    if len(payload) != _END_TXN_OUTCOME.size:
        raise EntryError(
            f"END_TXN_OUTCOME entry is {len(payload)} bytes, not {_END_TXN_OUTCOME.size}"
        )
    version, source, lsn, err, pid, epoch = _END_TXN_OUTCOME.unpack_from(payload, 0)
    if version != _FORMAT:
        raise EntryError(f"END_TXN_OUTCOME entry format {version} is not {_FORMAT}")
    try:
        return EndTxnOutcomeEntry(lsn, Source(source), err, pid, epoch)
    except ValueError as exc:
        raise EntryError(f"END_TXN_OUTCOME entry does not decode: {exc}") from exc
