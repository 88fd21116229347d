"""Segment objects, sans-IO: Kafka ``.log`` bytes in, object bytes out, and back.

A segment object is record batches exactly as Kafka stored them (what a Fetch returns),
in offset order, optionally zstd-compressed as one frame. Its manifest entry
(:class:`~offload.manifest.SegmentRef`) carries the CRC32C and size of the uncompressed
bytes, so a reader verifies an object without trusting the store. Batch headers and CRCs
are read with :mod:`proxy.kafka.record_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import crc32c
import zstandard

from proxy.kafka.record_batch import HEADER_SIZE, BatchError, iter_batches

from .manifest import SegmentRef

_LOG_OVERHEAD = 12  # baseOffset + batchLength


class SegmentError(ValueError):
    """Segment bytes are not whole, valid, offset-ordered record batches, or fail a check."""


@dataclass(frozen=True, slots=True)
class LogInfo:
    """What the manifest needs to know about a run of record batches."""

    base_offset: int  # the offset the run covers from (<= the first batch's base offset)
    last_offset: int
    size: int
    crc32c: int
    max_timestamp: int
    batches: int
    leader_epochs: tuple[tuple[int, int], ...]  # (epoch, first offset) where it changes
    #: (producer id, epoch, base offset, control) of each transactional batch
    txn_batches: tuple[tuple[int, int, int, bool], ...] = ()


def whole_batches(buf: bytes | memoryview) -> int:
    """Length of the prefix of ``buf`` made of whole batches (a Fetch may end mid-batch).

    Only lengths are read here; :func:`describe` checks CRCs of what is kept.
    """
    return _whole_prefix(memoryview(buf))[0]


def _whole_prefix(view: memoryview) -> tuple[int, int]:
    """(length of the whole-batch prefix, start of its last batch; -1 if none)."""
    pos, last = 0, -1
    while len(view) - pos >= _LOG_OVERHEAD:
        length = int.from_bytes(view[pos + 8 : pos + 12], "big", signed=True) + _LOG_OVERHEAD
        if length < HEADER_SIZE:
            raise SegmentError(f"record batch at byte {pos} claims only {length} bytes")
        if pos + length > len(view):
            break
        last = pos
        pos += length
    return pos, last


def fetched_span(buf: bytes | memoryview, covers_from: int) -> tuple[int, int, int]:
    """``(length, base, last)`` of the whole batches at the start of a Fetch's records read
    at ``covers_from``: reads only batch lengths and offsets (``length`` 0: none whole).

    This is the tailer's per-fetch bookkeeping; :func:`describe` validates every batch (CRC,
    order) when the buffer is cut for upload, so each byte is validated once.
    """
    view = memoryview(buf)
    n, pos = _whole_prefix(view)
    if not n:
        return 0, covers_from, covers_from - 1
    first = int.from_bytes(view[0:8], "big", signed=True)
    base = int.from_bytes(view[pos : pos + 8], "big", signed=True)
    last = base + int.from_bytes(view[pos + 23 : pos + 27], "big", signed=True)
    if last < covers_from:
        raise SegmentError(f"batches end at {last}, below the fetch offset {covers_from}")
    return n, min(covers_from, first), last


def describe(log: bytes | memoryview, covers_from: int) -> LogInfo:
    """Validate ``log`` (whole batches, CRC32C, increasing offsets) and summarise it.

    ``covers_from`` is the offset the data was fetched at; the range starts there unless
    the first batch starts below it (Kafka returns the whole batch containing that offset).
    """
    if not log:
        raise SegmentError("a segment needs at least one record batch")
    last = -1
    first_base = None
    max_ts = -1
    count = 0
    epochs: list[tuple[int, int]] = []
    txns: list[tuple[int, int, int, bool]] = []
    try:
        for h in iter_batches(log):
            if h.base_offset < 0:  # no Kafka offset; segment keys and manifests need >= 0
                raise SegmentError(f"batch at negative offset {h.base_offset}")
            batch_last = h.base_offset + h.last_offset_delta
            if first_base is None:
                first_base = h.base_offset
            elif h.base_offset <= last:
                raise SegmentError(f"batch at offset {h.base_offset} does not follow offset {last}")
            if batch_last < h.base_offset:
                raise SegmentError(f"batch at offset {h.base_offset} has a negative delta")
            last = batch_last
            max_ts = max(max_ts, h.max_timestamp)
            if h.partition_leader_epoch >= 0 and (
                not epochs or h.partition_leader_epoch > epochs[-1][0]
            ):
                epochs.append((h.partition_leader_epoch, h.base_offset))
            if h.is_transactional:
                txns.append((h.producer_id, h.producer_epoch, h.base_offset, h.is_control))
            count += 1
    except BatchError as exc:
        raise SegmentError(str(exc)) from None
    assert first_base is not None
    base = min(covers_from, first_base)
    if last < covers_from:
        raise SegmentError(f"batches end at {last}, below the fetch offset {covers_from}")
    return LogInfo(
        base, last, len(log), crc32c.crc32c(log), max_ts, count, tuple(epochs), tuple(txns)
    )


def _identities(blob: bytes | memoryview) -> dict[int, tuple[int, ...]]:
    """Per batch (by base offset) what a repair's re-append keeps of it: offsets, attributes,
    producer, sequence, count, base timestamp and the CRC32C of its records. Left out: the
    partition leader epoch (a restored batch is appended under a newer one) and, with them,
    the max timestamp and the batch CRC (under ``LogAppendTime`` the broker stamps the
    append time again)."""
    out: dict[int, tuple[int, ...]] = {}
    view = memoryview(blob)
    pos = 0
    for h in iter_batches(view):
        records = crc32c.crc32c(view[pos + HEADER_SIZE : pos + h.length])
        out[h.base_offset] = (
            h.last_offset_delta,
            h.attributes,
            h.base_timestamp,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.record_count,
            records,
        )
        pos += h.length
    return out


def first_difference(stored: bytes | memoryview, fetched: bytes | memoryview) -> str | None:
    """Does the broker's log (``fetched``, read from the first offset of ``stored``) hold the
    batches of a stored segment at the same offsets? None if it does, else the first
    difference (see :func:`_identities` for what is compared)."""
    fetched = memoryview(fetched)[: whole_batches(fetched)]  # a Fetch may end mid-batch
    try:
        theirs = _identities(fetched)
        for base, mine in _identities(stored).items():
            other = theirs.get(base)
            if other is None:
                return f"the broker's log has no batch at offset {base}"
            if other != mine:
                return (
                    f"the broker's batch at offset {base} differs from the S3 copy (its "
                    "records, producer, sequence or timestamps)"
                )
    except BatchError as exc:
        return f"cannot compare: {exc}"
    return None


def encode(log: bytes | memoryview, compression: str, level: int = 3) -> bytes:
    """The object bytes for ``log`` (``compression``: "none" or "zstd")."""
    if compression == "none":
        return bytes(log)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(log)
    raise SegmentError(f"unknown compression {compression!r}")


def decode(stored: bytes, ref: SegmentRef) -> bytes:
    """The Kafka ``.log`` bytes of a segment object, verified against its manifest entry:
    stored size, size, CRC32C, whole valid batches, and the offset range. Raises
    :class:`SegmentError` naming the object."""
    if len(stored) != ref.stored_size:
        raise SegmentError(
            f"{ref.key}: {len(stored)} bytes stored, manifest says {ref.stored_size}"
        )
    if ref.compression == "zstd":
        try:
            # python-zstandard allocates what the frame header announces (max_output_size
            # only bounds frames without a size): a garbled 1 TiB claim was a MemoryError.
            announced = zstandard.frame_content_size(stored)
            if announced not in (-1, ref.size):
                raise SegmentError(
                    f"{ref.key}: zstd frame announces {announced} bytes, manifest says {ref.size}"
                )
            log = zstandard.ZstdDecompressor().decompress(stored, max_output_size=ref.size)
        except zstandard.ZstdError as exc:
            raise SegmentError(f"{ref.key}: zstd: {exc}") from None
    elif ref.compression == "none":
        log = stored
    else:
        raise SegmentError(f"{ref.key}: unknown compression {ref.compression!r}")
    if len(log) != ref.size:
        raise SegmentError(f"{ref.key}: {len(log)} bytes, manifest says {ref.size}")
    actual = crc32c.crc32c(log)
    if actual != ref.crc32c:
        raise SegmentError(f"{ref.key}: CRC32C {actual:#010x}, manifest says {ref.crc32c:#010x}")
    info = describe(log, ref.base_offset)
    if (info.base_offset, info.last_offset, info.batches) != (
        ref.base_offset,
        ref.last_offset,
        ref.batches,
    ):
        raise SegmentError(
            f"{ref.key}: batches cover {info.base_offset}..{info.last_offset} "
            f"({info.batches} batches), manifest says {ref.base_offset}..{ref.last_offset} "
            f"({ref.batches})"
        )
    return log


def segment_ref(key: str, info: LogInfo, stored: bytes, compression: str) -> SegmentRef:
    return SegmentRef(
        key=key,
        base_offset=info.base_offset,
        last_offset=info.last_offset,
        size=info.size,
        stored_size=len(stored),
        crc32c=info.crc32c,
        compression=compression,
        max_timestamp=info.max_timestamp,
        batches=info.batches,
    )
