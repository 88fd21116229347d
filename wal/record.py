"""Sans-IO record format: encode groups of records, decode and scan byte buffers.

Nothing here does I/O, so the format can be property-tested exhaustively and a
reader in another language can be checked against `docs/wal-format.md`.

Layout of one record (all integers little endian), see docs/wal-format.md::

    0  u32 magic       0x52574C57 ("WLWR" read as little-endian bytes "WLWR")
    4  u8  type        caller type 0..239, 0xFE = SEAL, 0xFF = PAD
    5  u8  flags       bit 0 = first record of a group (aligned write)
    6  u16 back        group start only: blocks from the durable frontier to this
                       group (0 = every earlier byte was durable when it was issued)
    8  u32 length      payload length in bytes
    12 u32 body_crc    CRC32C(payload)  (0 for PAD)
    16 u64 lsn         log sequence number (0 for PAD)
    24 u32 group_len   for the first record of a group: bytes in the group; else 0
    28 u32 header_crc  CRC32C(salt || bytes 0..27)

followed by the payload and zero bytes up to a multiple of RECORD_ALIGN.  The
16-byte *salt* is (epoch, segno) of the segment the record lives in; it is not
stored in the record.  A record written by an earlier incarnation of the same
space (recycled segment file, a previous writer epoch) therefore can never
validate, which is what makes scanning preallocated/recycled space safe.

`back` (format version 2) is what lets the writer keep several groups in
flight: a group records how far behind it the last byte known durable was when
it was issued, so recovery can tell a hole inside that in-flight window (a
crash: torn tail) from a bad record the writer had already seen durable
(corruption).  Version-1 files have 0 there, which means the same thing as
before: nothing was in flight ahead of the group.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

import crc32c

RECORD_MAGIC = 0x52574C57
RECORD_HEADER = struct.Struct("<IBBHIIQII")
HEADER_SIZE = RECORD_HEADER.size  # 32
RECORD_ALIGN = 32
FLAG_GROUP_START = 0x01

#: Largest `back` a group start can record (u16, in blocks).
MAX_BACK_BLOCKS = 0xFFFF

#: Highest record type a caller may use; 0xF0..0xFF are the WAL's own.
MAX_USER_TYPE = 0xEF
TYPE_SEAL = 0xFE
TYPE_PAD = 0xFF

assert HEADER_SIZE == 32


def crc(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C (Castagnoli), continuing from `value` (crc(a+b) == crc(b, crc(a)))."""
    return crc32c.crc32c(data, value=value)


def make_salt(epoch: int, segno: int) -> bytes:
    """The 16 bytes mixed into every header CRC of a segment."""
    return struct.pack("<QQ", epoch, segno)


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def record_size(payload_len: int) -> int:
    """Bytes a record occupies on disk including its alignment padding."""
    return align_up(HEADER_SIZE + payload_len, RECORD_ALIGN)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    type: int
    flags: int
    length: int
    body_crc: int
    lsn: int
    group_len: int
    header_crc: int
    back: int = 0  # group start only: blocks from the durable frontier to this group

    @property
    def group_start(self) -> bool:
        return bool(self.flags & FLAG_GROUP_START)

    @property
    def size(self) -> int:
        return record_size(self.length)


def encode_group(
    buf: memoryview | bytearray,
    *,
    salt_crc: int,
    first_lsn: int,
    entries: list[tuple[int, bytes | bytearray | memoryview]],
    block: int,
    back: int = 0,
) -> int:
    """Encode `entries` (type, payload) with consecutive LSNs, padded to `block`.

    Returns the group length (a multiple of `block`).  The first record carries
    FLAG_GROUP_START, the group length and `back` (see the module docstring); a
    PAD record fills the rest of the last block so the next group starts
    block-aligned.  Because records are 32-byte aligned and blocks are multiples
    of 32, the gap is either 0 or at least one header long.

    This is the WAL's per-entry hot path, hence the inlined record encoding:
    one header pack, two CRC calls and one payload copy per entry.
    """
    if not 0 <= back <= MAX_BACK_BLOCKS:
        raise ValueError(f"back {back} does not fit the record header")
    total = 0
    for _, p in entries:
        total += (len(p) + HEADER_SIZE + RECORD_ALIGN - 1) & -RECORD_ALIGN
    glen = align_up(total, block)
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    zeros = _zeros(max(block, RECORD_ALIGN))
    pack = _HEAD28.pack
    crcf = crc32c.crc32c
    pos = 0
    lsn = first_lsn
    flags, group_len, bk = FLAG_GROUP_START, glen, back
    for typ, payload in entries:
        n = len(payload)
        head = pack(RECORD_MAGIC, typ, flags, bk, n, crcf(payload), lsn, group_len)
        end = pos + HEADER_SIZE + n
        view[pos : pos + 28] = head
        _U32.pack_into(view, pos + 28, crcf(head, value=salt_crc))
        view[pos + HEADER_SIZE : end] = payload
        pos = (end + RECORD_ALIGN - 1) & -RECORD_ALIGN
        if pos != end:
            view[end:pos] = zeros[: pos - end]
        lsn += 1
        flags = group_len = bk = 0
    if pos < glen:
        pad_len = glen - pos - HEADER_SIZE
        head = _HEAD28.pack(RECORD_MAGIC, TYPE_PAD, 0, 0, pad_len, 0, 0, 0)
        view[pos : pos + 28] = head
        _U32.pack_into(view, pos + 28, crcf(head, value=salt_crc))
        view[pos + HEADER_SIZE : glen] = zeros[:pad_len]
    return glen


_HEAD28 = struct.Struct("<IBBHIIQI")  # the header without its CRC
_U32 = struct.Struct("<I")
_ZEROS: memoryview = memoryview(bytes(4096))


def _zeros(n: int) -> memoryview:
    """A read-only zero buffer of at least `n` bytes (grown on demand, shared)."""
    global _ZEROS
    if len(_ZEROS) < n:
        _ZEROS = memoryview(bytes(n))
    return _ZEROS


class RecordError(Enum):
    """Why the bytes at an offset are not a valid record."""

    SHORT = "short read (end of data inside the record)"
    MAGIC = "bad magic"
    HEADER_CRC = "header CRC mismatch"
    BODY_CRC = "body CRC mismatch"
    RESERVED = "back field set outside a group start"
    LSN = "LSN out of sequence"
    GROUP = "group structure violated (group start/length)"
    SIZE = "record extends past its group or the segment"


def decode_header(
    data: bytes | bytearray | memoryview, pos: int, salt_crc: int
) -> RecordHeader | RecordError:
    """Validate and decode the header at `pos` (body not checked)."""
    if pos + HEADER_SIZE > len(data):
        return RecordError.SHORT
    magic, typ, flags, back, length, body_crc, lsn, glen, hcrc = RECORD_HEADER.unpack_from(
        data, pos
    )
    if magic != RECORD_MAGIC:
        return RecordError.MAGIC
    if crc(memoryview(data)[pos : pos + 28], salt_crc) != hcrc:
        return RecordError.HEADER_CRC
    if back and not flags & FLAG_GROUP_START:
        return RecordError.RESERVED
    return RecordHeader(typ, flags, length, body_crc, lsn, glen, hcrc, back)


def check_body(
    data: bytes | bytearray | memoryview, pos: int, hdr: RecordHeader
) -> RecordError | None:
    """Check that the whole body is present and (except for PAD) matches its CRC."""
    start = pos + HEADER_SIZE
    if start + hdr.length > len(data):
        return RecordError.SHORT
    if hdr.type != TYPE_PAD and crc(memoryview(data)[start : start + hdr.length]) != hdr.body_crc:
        return RecordError.BODY_CRC
    return None
