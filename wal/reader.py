"""Reading durable entries back (blocking; the async follower wraps it).

Readers re-validate every record (header CRC with the segment salt, body CRC,
LSN sequence) because media can rot after the write; a failure raises
WalCorruptionError naming file and offset.  If the segment was trimmed while
being read, WalTrimmedError is raised instead.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

from .backend import Backend, SegmentHandle
from .errors import WalCorruptionError, WalTrimmedError
from .record import HEADER_SIZE, TYPE_PAD, TYPE_SEAL, RecordError, check_body, decode_header
from .segment import SegmentHeader

READ_CHUNK = 4 << 20


class Entry(NamedTuple):
    """One durable WAL entry."""

    lsn: int
    type: int
    payload: bytes


@dataclass
class SegmentInfo:
    """In-memory index of one live segment (mutated only on the trio thread)."""

    name: str
    header: SegmentHeader
    size: int
    end: int  # durable end offset of the last group
    next_lsn: int  # LSN after the last durable record of this segment
    group_lsns: list[int] = field(default_factory=list)
    group_offsets: list[int] = field(default_factory=list)
    retired: bool = False

    @property
    def first_lsn(self) -> int:
        return self.header.first_lsn


def read_segment(
    backend: Backend,
    seg: SegmentInfo,
    from_lsn: int,
    upto_lsn: int,
    max_bytes: int,
    handle: SegmentHandle | None = None,
) -> list[Entry]:
    """Entries of `seg` with from_lsn <= lsn <= upto_lsn, stopping after ~max_bytes."""
    end = seg.end  # snapshot: only durable bytes
    idx = bisect.bisect_right(seg.group_lsns, from_lsn) - 1
    pos = seg.group_offsets[idx] if idx >= 0 else seg.header.data_offset
    salt_crc = seg.header.salt_crc
    own = handle is None
    try:
        if handle is None:
            handle = backend.open_segment(seg.name, write=False)
    except FileNotFoundError:
        raise WalTrimmedError(f"segment {seg.name} was trimmed") from None
    out: list[Entry] = []
    got_bytes = 0
    try:
        buf = b""
        buf_off = pos
        while pos < end:
            rel = pos - buf_off
            if rel + HEADER_SIZE > len(buf):
                buf = handle.read_at(pos, min(READ_CHUNK, end - pos))
                buf_off, rel = pos, 0
            hdr = decode_header(buf, rel, salt_crc)
            if not isinstance(hdr, RecordError) and rel + hdr.size > len(buf):
                buf = handle.read_at(pos, max(hdr.size, min(READ_CHUNK, end - pos)))
                buf_off, rel = pos, 0
            err: RecordError | None
            if isinstance(hdr, RecordError):
                err = hdr
            else:
                err = check_body(buf, rel, hdr)
            if err is not None:
                if seg.retired:
                    raise WalTrimmedError(f"segment {seg.name} was trimmed while reading")
                raise WalCorruptionError(
                    f"invalid record while reading ({err.value})", backend.describe(seg.name), pos
                )
            assert not isinstance(hdr, RecordError)
            if hdr.type == TYPE_SEAL:
                break
            if hdr.type != TYPE_PAD:
                if hdr.lsn > upto_lsn:
                    break
                if hdr.lsn >= from_lsn:
                    start = rel + HEADER_SIZE
                    out.append(Entry(hdr.lsn, hdr.type, bytes(buf[start : start + hdr.length])))
                    got_bytes += hdr.length
                    if got_bytes >= max_bytes:
                        break
            pos += hdr.size
    finally:
        if own:
            handle.close()
    return out
