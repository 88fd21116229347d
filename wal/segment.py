"""Sans-IO segment format: the segment header and scanning a segment's bytes.

A segment file is ``seg-<segno as 16 hex digits>.wal``.  Its first `data_offset`
bytes (one or more blocks) hold the header; records follow, written in
block-aligned *groups* (one group = one write + one sync).  See
docs/wal-format.md for the full description.

Header layout (64 bytes, little endian)::

    0  8s magic "WALSEG01"
    8  u32 format version (2; 1 = written before groups could overlap, read alike)
    12 u32 block_size     alignment of every group write in this segment
    16 u64 epoch          writer epoch that created this segment instance  } the salt
    24 u64 segno          segment number (strictly increasing in a dir)     }
    32 u64 first_lsn      LSN of the first record of this segment
    40 u64 segment_size   preallocated size in bytes
    48 u32 data_offset    where the first group starts
    52 u64 reserved       0
    60 u32 crc32c of bytes 0..59
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from .record import (
    HEADER_SIZE,
    TYPE_PAD,
    TYPE_SEAL,
    RecordError,
    RecordHeader,
    check_body,
    crc,
    decode_header,
    make_salt,
)

SEG_MAGIC = b"WALSEG01"
SEG_VERSION = 2
#: Versions this code reads.  Version 1 files never have a non-zero `back`,
#: which version 2 reads as "nothing was in flight": the same rules apply.
SEG_READABLE_VERSIONS = (1, 2)
SEG_STRUCT = struct.Struct("<8sIIQQQQIQI")
SEG_HEADER_SIZE = SEG_STRUCT.size
SEG_PREFIX = "seg-"
SEG_SUFFIX = ".wal"

assert SEG_HEADER_SIZE == 64


def segment_name(segno: int) -> str:
    return f"{SEG_PREFIX}{segno:016x}{SEG_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The segment number encoded in a file name, or None for other files."""
    if not (name.startswith(SEG_PREFIX) and name.endswith(SEG_SUFFIX)):
        return None
    digits = name[len(SEG_PREFIX) : -len(SEG_SUFFIX)]
    if len(digits) != 16:
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    block_size: int
    epoch: int
    segno: int
    first_lsn: int
    segment_size: int
    data_offset: int
    version: int = SEG_VERSION

    @property
    def salt(self) -> bytes:
        return make_salt(self.epoch, self.segno)

    @property
    def salt_crc(self) -> int:
        return crc(self.salt)


def encode_segment_header(h: SegmentHeader) -> bytes:
    """The header block: 64 meaningful bytes, zero padded to `data_offset`."""
    body = SEG_STRUCT.pack(
        SEG_MAGIC,
        h.version,
        h.block_size,
        h.epoch,
        h.segno,
        h.first_lsn,
        h.segment_size,
        h.data_offset,
        0,
        0,
    )
    body = body[:60] + struct.pack("<I", crc(body[:60]))
    return body + bytes(h.data_offset - SEG_HEADER_SIZE)


def decode_segment_header(data: bytes | memoryview) -> SegmentHeader | None:
    if len(data) < SEG_HEADER_SIZE:
        return None
    magic, ver, block, epoch, segno, first, size, doff, _r, c = SEG_STRUCT.unpack_from(data, 0)
    if magic != SEG_MAGIC or crc(bytes(data[:60])) != c:
        return None
    if block < 512 or block % 32 or doff < SEG_HEADER_SIZE or doff % block:
        return None
    if ver not in SEG_READABLE_VERSIONS:
        return None
    return SegmentHeader(block, epoch, segno, first, size, doff, ver)


class EndKind(Enum):
    """How the scan of a segment stopped."""

    SEAL = "sealed"  # a valid SEAL record: the writer finished this segment on purpose
    EOF = "eof"  # the data ended exactly at a record boundary (e.g. truncated on recovery)
    BAD = "bad"  # an invalid record at `bad_offset` (torn tail or corruption, see caller)


@dataclass(slots=True)
class SegmentScan:
    """Result of scanning one segment's bytes; pure data, no judgement across segments."""

    header: SegmentHeader
    end_kind: EndKind = EndKind.EOF
    end_offset: int = 0  # offset just after the last complete valid group
    next_lsn: int = 0  # LSN after the last complete group (the next record's LSN)
    records: int = 0  # valid data records seen (excluding PAD/SEAL; may include a torn group's)
    bad_offset: int | None = None
    bad_reason: RecordError | None = None
    # a later valid group whose writer already knew the bad spot durable => corruption
    later_group_offset: int | None = None
    group_lsns: list[int] = field(default_factory=list)  # sparse index: first LSN of each group
    group_offsets: list[int] = field(default_factory=list)  # ... and its offset

    @property
    def last_lsn(self) -> int:
        return self.next_lsn - 1


RecordCallback = Callable[[int, RecordHeader, RecordError | None], None]


def scan_segment(
    data: bytes | bytearray | memoryview,
    header: SegmentHeader,
    *,
    on_record: RecordCallback | None = None,
) -> SegmentScan:
    """Walk the records of a segment image and stop at the first invalid one.

    `data` is the whole file (header included).  Every record must validate
    (magic, header CRC with the segment salt, body CRC), carry the expected LSN
    and respect group boundaries.  At the first failure we additionally look
    for a *proof of corruption*: a valid group start at a later block boundary
    whose durable frontier (its offset minus `back` blocks) lies beyond the
    start of the bad group.  Its writer issued it only after the bad group was
    durable, so the bad group was once intact: corruption, not a torn write.
    A later valid group whose frontier is at or before the bad group was in
    flight together with it (the in-flight window) and proves nothing: a crash
    can leave such a hole.  The caller decides what BAD means for the log.
    """
    view = memoryview(data)
    salt_crc = header.salt_crc
    block = header.block_size
    res = SegmentScan(header=header, next_lsn=header.first_lsn, end_offset=header.data_offset)
    pos = header.data_offset
    group_end: int | None = None  # end of the current group, None between groups
    group_start, group_lsn, sealing = pos, header.first_lsn, False
    expect = header.first_lsn

    def bad(reason: RecordError, hdr: RecordHeader | None) -> SegmentScan:
        res.end_kind = EndKind.BAD
        res.bad_offset = pos
        res.bad_reason = reason
        if on_record is not None and hdr is not None:
            on_record(pos, hdr, reason)
        # where a later write could start: after the current group if we know it
        search_from = pos + 1
        if group_end is not None and group_end > pos:
            search_from = group_end
        res.later_group_offset = find_corruption_proof(
            view, salt_crc, block, search_from, expect, res.end_offset
        )
        return res

    size = len(view)
    while True:
        if pos == size and group_end is None:
            res.end_kind = EndKind.EOF
            return res
        got = decode_header(view, pos, salt_crc)
        if isinstance(got, RecordError):
            return bad(got, None)
        hdr = got
        if group_end is None:
            if not hdr.group_start or hdr.group_len == 0 or hdr.group_len % block or pos % block:
                return bad(RecordError.GROUP, hdr)
            group_end = pos + hdr.group_len
            if group_end > size:
                return bad(RecordError.SHORT, hdr)
        elif hdr.group_start:
            return bad(RecordError.GROUP, hdr)
        if (hdr.type == TYPE_SEAL and not hdr.group_start) or (
            hdr.type == TYPE_PAD and hdr.group_start
        ):
            return bad(RecordError.GROUP, hdr)
        if pos + hdr.size > group_end:
            return bad(RecordError.SIZE, hdr)
        if hdr.type not in (TYPE_PAD, TYPE_SEAL) and hdr.lsn != expect:
            return bad(RecordError.LSN, hdr)
        if hdr.type == TYPE_SEAL and (hdr.lsn != expect or hdr.length != 0):
            return bad(RecordError.LSN, hdr)
        body_err = check_body(view, pos, hdr)
        if body_err is not None:
            return bad(body_err, hdr)
        if on_record is not None:
            on_record(pos, hdr, None)
        if hdr.group_start:
            group_start, group_lsn, sealing = pos, expect, hdr.type == TYPE_SEAL
        if hdr.type not in (TYPE_PAD, TYPE_SEAL):
            expect += 1
            res.records += 1
        pos += hdr.size
        if pos == group_end:
            # A group counts only once complete: it was one write, acked as a whole.
            group_end = None
            res.end_offset = pos
            res.next_lsn = expect
            if sealing:
                res.end_kind = EndKind.SEAL
                return res
            res.group_lsns.append(group_lsn)
            res.group_offsets.append(group_start)


def find_corruption_proof(
    view: memoryview, salt_crc: int, block: int, start: int, min_lsn: int, bad_group: int
) -> int | None:
    """First block-aligned offset >= start holding a valid group start (this salt)
    that was issued after the group at `bad_group` was durable, or None.

    "Issued after it was durable" means its frontier, offset - back * block, is
    beyond `bad_group`.  Valid group starts within the in-flight window (frontier
    <= bad_group) are skipped: they were written concurrently with the bad group.
    """
    pos = (start + block - 1) // block * block
    n = len(view)
    while pos + HEADER_SIZE <= n:
        got = decode_header(view, pos, salt_crc)
        if (
            isinstance(got, RecordHeader)
            and got.group_start
            and got.group_len
            and (got.type == TYPE_SEAL or got.lsn >= min_lsn)
            and pos - got.back * block > bad_group
        ):
            return pos
        pos += block
    return None
