"""Sans-IO layout of the S3 WAL: object keys, the object and lease encodings, recovery planning.

Nothing here does I/O; the trio/boto3 shell is :mod:`wal.s3_wal`.  docs/wal-format.md
("S3 backend") is the specification; the rules in short:

* One group commit = one object ``<prefix><slot:020d>.wal``.  *Slots* are dense (0, 1, 2,
  ...): every writer competes for the same next slot with ``If-None-Match: *``, which is
  what fences a zombie (its next PUT finds the slot taken).  Writer epoch and LSN range are
  in the object's header, not its key: with the epoch in the key two writers would never
  collide and the condition could fence nobody.
* An object is a 64-byte header and the records of one group in the file format
  (:func:`wal.record.encode_group` with 32-byte alignment, salt = (epoch, slot)).
* ``<prefix>LEASE`` (JSON, replaced with ``If-Match``) holds the writer epoch and the trim
  point; every writer bumps the epoch on open, every trim is a conditional replace.
* Each object records ``back``: how many slots behind it the last acknowledged one was
  when it was issued.  Recovery takes the contiguous run of slots from the trim point,
  ending at the first missing slot or at an object of a lower epoch than one before it (a
  zombie's late PUT, never acknowledged).  An object past that end whose frontier
  (``slot - back``) is at or past the end was issued after the end slot was acknowledged:
  corruption.  Otherwise everything past the end is a torn tail.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .record import (
    HEADER_SIZE,
    MAX_USER_TYPE,
    RECORD_ALIGN,
    RecordError,
    check_body,
    crc,
    decode_header,
    encode_group,
    make_salt,
    record_size,
)

OBJECT_MAGIC = b"WALS3OB1"
OBJECT_VERSION = 1
# magic, version, count, epoch, slot, first_lsn, back, records_len, reserved, crc
_OBJ_HEADER = struct.Struct("<8sIIQQQIIQII")
OBJECT_HEADER_SIZE = _OBJ_HEADER.size
assert OBJECT_HEADER_SIZE == 64
LEASE_NAME = "LEASE"
OBJECT_SUFFIX = ".wal"
_SLOT_DIGITS = 20
LEASE_FORMAT = 1


def object_name(slot: int) -> str:
    """The key of slot `slot` below the WAL's prefix (zero-padded: lexical = numeric order)."""
    return f"{slot:0{_SLOT_DIGITS}d}{OBJECT_SUFFIX}"


def parse_object_name(name: str) -> int | None:
    """The slot of an object name, None for anything else (the lease, foreign keys)."""
    stem = name[: -len(OBJECT_SUFFIX)] if name.endswith(OBJECT_SUFFIX) else ""
    if len(stem) != _SLOT_DIGITS or not stem.isdigit():
        return None
    return int(stem)


@dataclass(frozen=True, slots=True)
class ObjectHeader:
    epoch: int
    slot: int
    first_lsn: int
    count: int  # entries in the object (0 for an epoch's opening marker)
    back: int  # slots from the acknowledged frontier to this one when it was issued
    records_len: int

    @property
    def next_lsn(self) -> int:
        return self.first_lsn + self.count

    @property
    def frontier(self) -> int:
        """Every slot up to this one was acknowledged before this object was issued."""
        return self.slot - self.back


@dataclass(frozen=True, slots=True)
class DecodedObject:
    header: ObjectHeader
    entries: list[tuple[int, int, bytes]]  # (lsn, type, payload)


class ObjectFormatError(ValueError):
    """An object's bytes are not a valid WAL object (S3 objects are never torn: corruption)."""


def object_size(payload_lens: Sequence[int]) -> int:
    return OBJECT_HEADER_SIZE + sum(record_size(n) for n in payload_lens)


def encode_object(
    *,
    epoch: int,
    slot: int,
    first_lsn: int,
    back: int,
    entries: Sequence[tuple[int, bytes | bytearray | memoryview]],
) -> bytes:
    """One group's object: header, then its records (payloads copied once)."""
    records_len = sum(record_size(len(p)) for _, p in entries)
    buf = bytearray(OBJECT_HEADER_SIZE + records_len)
    if entries:
        glen = encode_group(
            memoryview(buf)[OBJECT_HEADER_SIZE:],
            salt_crc=crc(make_salt(epoch, slot)),
            first_lsn=first_lsn,
            entries=list(entries),
            block=RECORD_ALIGN,
        )
        assert glen == records_len
    head = _OBJ_HEADER.pack(
        OBJECT_MAGIC,
        OBJECT_VERSION,
        len(entries),
        epoch,
        slot,
        first_lsn,
        back,
        records_len,
        0,
        0,
        0,
    )
    buf[: OBJECT_HEADER_SIZE - 4] = head[: OBJECT_HEADER_SIZE - 4]
    struct.pack_into("<I", buf, OBJECT_HEADER_SIZE - 4, crc(head[: OBJECT_HEADER_SIZE - 4]))
    return bytes(buf)


def decode_object_header(data: bytes | memoryview) -> ObjectHeader:
    if len(data) < OBJECT_HEADER_SIZE:
        raise ObjectFormatError(f"{len(data)} bytes: shorter than the object header")
    magic, version, count, epoch, slot, first, back, rlen, _r1, _r2, hcrc = _OBJ_HEADER.unpack_from(
        data
    )
    if magic != OBJECT_MAGIC:
        raise ObjectFormatError("bad object magic")
    if crc(memoryview(data)[: OBJECT_HEADER_SIZE - 4]) != hcrc:
        raise ObjectFormatError("object header CRC mismatch")
    if version != OBJECT_VERSION:
        raise ObjectFormatError(f"unknown object version {version}")
    return ObjectHeader(epoch, slot, first, count, back, rlen)


def decode_object(data: bytes | memoryview, slot: int) -> DecodedObject:
    """Validate every byte of an object (header CRC, each record's CRCs, LSN sequence)."""
    h = decode_object_header(data)
    if h.slot != slot:
        raise ObjectFormatError(f"object header names slot {h.slot}, its key slot {slot}")
    if len(data) != OBJECT_HEADER_SIZE + h.records_len:
        raise ObjectFormatError(
            f"object is {len(data)} bytes, its header says {OBJECT_HEADER_SIZE + h.records_len}"
        )
    view = memoryview(data)[OBJECT_HEADER_SIZE:]
    salt_crc = crc(make_salt(h.epoch, h.slot))
    entries: list[tuple[int, int, bytes]] = []
    pos = 0
    for i in range(h.count):
        rec = decode_header(view, pos, salt_crc)
        if isinstance(rec, RecordError):
            raise ObjectFormatError(f"record {i} at offset {OBJECT_HEADER_SIZE + pos}: {rec.value}")
        if rec.lsn != h.first_lsn + i or rec.type > MAX_USER_TYPE:
            raise ObjectFormatError(f"record {i}: LSN or type out of sequence")
        if rec.group_start != (i == 0) or rec.back:
            raise ObjectFormatError(f"record {i}: group structure violated")
        err = check_body(view, pos, rec)
        if err is not None:
            raise ObjectFormatError(f"record {i} at offset {OBJECT_HEADER_SIZE + pos}: {err.value}")
        start = pos + HEADER_SIZE
        entries.append((rec.lsn, rec.type, bytes(view[start : start + rec.length])))
        pos += rec.size
    if pos != h.records_len:
        raise ObjectFormatError(f"{h.records_len - pos} bytes after the last record")
    return DecodedObject(h, entries)


# -- lease ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Lease:
    """The WAL's single mutable object: writer epoch and trim point."""

    epoch: int = 0
    trim_slot: int = 0  # first slot not deleted by trim
    trim_slot_lsn: int = 1  # first LSN of trim_slot (the next LSN when no object is left)
    trim_lsn: int = 0  # entries <= trim_lsn are trimmed logically

    def encode(self) -> bytes:
        return json.dumps(
            {
                "format": LEASE_FORMAT,
                "epoch": self.epoch,
                "trim_slot": self.trim_slot,
                "trim_slot_lsn": self.trim_slot_lsn,
                "trim_lsn": self.trim_lsn,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Lease:
        try:
            raw = json.loads(data)
            if raw.get("format") != LEASE_FORMAT:
                raise ObjectFormatError(f"unknown lease format {raw.get('format')!r}")
            lease = cls(
                int(raw["epoch"]),
                int(raw["trim_slot"]),
                int(raw["trim_slot_lsn"]),
                int(raw["trim_lsn"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            if isinstance(exc, ObjectFormatError):
                raise
            raise ObjectFormatError(f"lease is not valid: {exc}") from None
        if min(lease.epoch, lease.trim_slot, lease.trim_lsn) < 0 or lease.trim_slot_lsn < 1:
            raise ObjectFormatError("lease has negative fields")
        return lease


# -- recovery planning ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunObject:
    slot: int
    first_lsn: int
    count: int
    size: int

    @property
    def next_lsn(self) -> int:
        return self.first_lsn + self.count


@dataclass
class RecoveryPlan:
    run: list[RunObject] = field(default_factory=list)  # the recovered log, in slot order
    next_slot: int = 0  # where the next writer's first object goes
    next_lsn: int = 1
    torn: list[int] = field(default_factory=list)  # slots past the end: never acknowledged
    obsolete: list[int] = field(default_factory=list)  # below the trim slot: finish the trim
    torn_reason: str = ""
    corruption: str | None = None  # refuse to start
    corrupt_slot: int | None = None
    newest_epoch: int = 0  # highest epoch of any object


HeaderOrError = ObjectHeader | ObjectFormatError


def plan_recovery(lease: Lease, listing: Mapping[int, tuple[int, HeaderOrError]]) -> RecoveryPlan:
    """Judge a listing: slot -> (object size, its decoded header or why it is invalid).

    The caller validates whole objects (records too) of the run it will serve; a record
    error is reported to this function as the object's ObjectFormatError.
    """
    p = RecoveryPlan(next_slot=lease.trim_slot, next_lsn=lease.trim_slot_lsn)
    slots = sorted(listing)
    p.obsolete = [s for s in slots if s < lease.trim_slot]
    live = [s for s in slots if s >= lease.trim_slot]
    for s in live:
        h = listing[s][1]
        if isinstance(h, ObjectHeader):
            p.newest_epoch = max(p.newest_epoch, h.epoch)
    run_epoch = 0
    end = lease.trim_slot
    lsn = lease.trim_slot_lsn
    for s in live:
        size, h = listing[s]
        if s != end:
            p.torn_reason = f"slot {end} is missing"
            break
        if isinstance(h, ObjectFormatError):
            p.corruption = f"object {object_name(s)} is damaged: {h}"
            p.corrupt_slot = s
            return p
        if h.epoch < run_epoch:
            p.torn_reason = (
                f"object {object_name(s)} has epoch {h.epoch} after epoch {run_epoch}: a "
                "superseded writer's late upload"
            )
            break
        if h.first_lsn != lsn:
            p.corruption = f"object {object_name(s)} starts at LSN {h.first_lsn}, expected {lsn}"
            p.corrupt_slot = s
            return p
        p.run.append(RunObject(s, h.first_lsn, h.count, size))
        run_epoch = h.epoch
        lsn = h.next_lsn
        end = s + 1
    p.next_slot, p.next_lsn = end, lsn
    p.torn = [s for s in live if s >= end]
    for s in p.torn:
        h = listing[s][1]
        if isinstance(h, ObjectFormatError):
            p.corruption = f"object {object_name(s)} is damaged: {h}"
            p.corrupt_slot = s
            return p
        if h.frontier >= end and h.epoch >= run_epoch:
            p.corruption = (
                f"object {object_name(end)} is missing or superseded, but "
                f"{object_name(s)} was issued after it was acknowledged (frontier "
                f"{h.frontier})"
            )
            p.corrupt_slot = end
            return p
    return p
