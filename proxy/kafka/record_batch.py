"""Kafka record batches (magic v2), sans-IO: header parsing, validation, and a builder.

The proxy never decompresses or rewrites records; it only needs each batch's fixed header
(producer id/epoch/sequence, record count, transactional and control flags) and to know the
batch is intact (length and CRC32C) before it is persisted or forwarded. The builder makes
uncompressed batches for tools and tests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import crc32c

#: baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
#: baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount.
_HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = _HEADER.size  # 61
_LOG_OVERHEAD = 12  # baseOffset + batchLength: bytes not counted in batchLength
_CRC_START = 21  # the CRC covers attributes to the end of the batch

TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20


class BatchError(ValueError):
    """A record batch is truncated, of another magic, or fails its CRC."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    length: int  # the whole batch, including baseOffset and batchLength
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def compression(self) -> int:
        return self.attributes & 0x07


def parse_header(buf: bytes | memoryview, pos: int = 0) -> BatchHeader:
    if len(buf) - pos < HEADER_SIZE:
        raise BatchError(f"record batch truncated at byte {pos}: {len(buf) - pos} bytes left")
    f = _HEADER.unpack_from(buf, pos)
    if f[3] != 2:
        raise BatchError(f"record batch at byte {pos} has magic {f[3]}; only magic 2 is accepted")
    return BatchHeader(f[0], f[1] + _LOG_OVERHEAD, *f[2:])


def iter_batches(blob: bytes | memoryview, *, check_crc: bool = True) -> Iterator[BatchHeader]:
    """Each batch in a partition's records blob, validated; raises :class:`BatchError`."""
    pos = 0
    view = memoryview(blob)
    while pos < len(view):
        header = parse_header(view, pos)
        end = pos + header.length
        if header.length < HEADER_SIZE or end > len(view):
            raise BatchError(
                f"record batch at byte {pos} claims {header.length} bytes; "
                f"{len(view) - pos} are there"
            )
        if check_crc:
            actual = crc32c.crc32c(view[pos + _CRC_START : end])
            if actual != header.crc:
                raise BatchError(
                    f"record batch at byte {pos}: CRC32C {actual:#010x} != {header.crc:#010x}"
                )
        yield header
        pos = end


def produce_batch_problem(headers: Sequence[BatchHeader]) -> str | None:
    """Why Kafka refuses a client's (intact) records for one partition with INVALID_RECORD,
    or ``None``: the checks of its ``LogValidator`` on a client append that need only the
    batch headers. Refusing these before the WAL keeps entries the broker would never
    take out of it, and gives the client the broker's own answer."""
    if len(headers) != 1:
        return f"{len(headers)} record batches for one partition; magic 2 allows exactly one"
    h = headers[0]
    if h.last_offset_delta < 0:
        return f"invalid offset range: last offset delta {h.last_offset_delta}"
    if h.record_count <= 0:
        return f"invalid record count {h.record_count}"
    if h.record_count != h.last_offset_delta + 1:
        return (
            f"record count {h.record_count} does not match the offset range "
            f"(last offset delta {h.last_offset_delta})"
        )
    if h.is_control:
        return "clients may not write control batches"
    if h.producer_id >= 0 and h.base_sequence < 0:
        return f"producer id {h.producer_id} with negative base sequence {h.base_sequence}"
    return None


def _varint(value: int) -> bytes:
    zz = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zz >= 0x80:
        out.append((zz & 0x7F) | 0x80)
        zz >>= 7
    out.append(zz)
    return bytes(out)


def _record(
    offset_delta: int,
    ts_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> bytes:
    body = bytearray(b"\x00")  # attributes
    body += _varint(ts_delta) + _varint(offset_delta)
    body += _varint(-1) if key is None else _varint(len(key)) + key
    body += _varint(-1) if value is None else _varint(len(value)) + value
    body += _varint(len(headers))
    for hk, hv in headers:
        raw = hk.encode()
        body += _varint(len(raw)) + raw + _varint(len(hv)) + hv
    return _varint(len(body)) + bytes(body)


def build_batch(
    values: Sequence[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    timestamp_ms: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    attributes: int = 0,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    headers: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """An uncompressed magic-2 batch of ``values`` with a correct CRC32C."""
    if not values:
        raise ValueError("a record batch needs at least one record")
    keys = keys if keys is not None else [None] * len(values)
    records = b"".join(
        _record(i, 0, k, v, headers) for i, (k, v) in enumerate(zip(keys, values, strict=True))
    )
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            attributes,
            len(values) - 1,
            timestamp_ms,
            timestamp_ms,
            producer_id,
            producer_epoch,
            base_sequence,
            len(values),
        )
        + records
    )
    crc = crc32c.crc32c(after_crc)
    length = 4 + 1 + 4 + len(after_crc)  # leader epoch, magic, crc, rest
    return struct.pack(">qiibI", base_offset, length, partition_leader_epoch, 2, crc) + after_crc
