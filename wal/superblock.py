"""Sans-IO superblock: the small per-directory state record, in two alternating slots.

Why two slots: a superblock update is an in-place overwrite, and a crash in the
middle of it may leave that slot torn.  Each update goes to the slot *other*
than the current one (slot = seq % 2), so the previous valid copy always
survives; readers take the valid slot with the highest `seq`.

Slot layout (64 bytes, little endian; slot i lives at byte i * SLOT_SIZE)::

    0  8s magic "WALSUPR1"
    8  u32 format version (2; 1 is read too)
    12 u32 flags  bit 0 = clean shutdown
    16 u64 seq    incremented on every write
    24 u64 epoch  writer epoch, bumped (durably) on every open
    32 u64 trim_lsn  entries with lsn <= trim_lsn are trimmed (0 = none)
    40 u64 last_lsn  last durable LSN at clean shutdown (0 when not clean)
    48 u64 reserved  0
    56 u32 reserved  0
    60 u32 crc32c of bytes 0..59
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from .record import crc

SB_MAGIC = b"WALSUPR1"
SB_VERSION = 2
#: Version 2 marks a directory whose segments may hold overlapping groups
#: (docs/wal-format.md, "In-flight window"); a version-1 reader must refuse it.
SB_READABLE_VERSIONS = (1, 2)
SB_STRUCT = struct.Struct("<8sIIQQQQQII")
SB_SIZE = SB_STRUCT.size  # 64
SLOT_SIZE = 4096
FLAG_CLEAN = 0x01

assert SB_SIZE == 64


@dataclass(frozen=True, slots=True)
class Superblock:
    seq: int
    epoch: int
    trim_lsn: int
    clean: bool
    last_lsn: int
    version: int = SB_VERSION

    @property
    def slot(self) -> int:
        return self.seq % 2

    def next(self, **changes: object) -> Superblock:
        """The next version of this superblock (seq + 1), with `changes` applied."""
        return replace(self, seq=self.seq + 1, **changes)  # type: ignore[arg-type]


def encode_superblock(sb: Superblock) -> bytes:
    """One full slot (SLOT_SIZE bytes, zero padded)."""
    body = SB_STRUCT.pack(
        SB_MAGIC,
        sb.version,
        FLAG_CLEAN if sb.clean else 0,
        sb.seq,
        sb.epoch,
        sb.trim_lsn,
        sb.last_lsn,
        0,
        0,
        0,
    )
    body = body[:60] + struct.pack("<I", crc(body[:60]))
    return body + bytes(SLOT_SIZE - SB_SIZE)


def decode_slot(data: bytes | memoryview) -> Superblock | None:
    """Decode one slot; None when it is not a valid superblock copy."""
    if len(data) < SB_SIZE:
        return None
    magic, version, flags, seq, epoch, trim, last, _r1, _r2, c = SB_STRUCT.unpack_from(data, 0)
    if magic != SB_MAGIC or crc(bytes(data[:60])) != c:
        return None
    return Superblock(
        seq=seq,
        epoch=epoch,
        trim_lsn=trim,
        clean=bool(flags & FLAG_CLEAN),
        last_lsn=last,
        version=version,
    )


def decode_superblock(data: bytes | None) -> tuple[Superblock | None, list[Superblock | None]]:
    """Decode both slots; return (the newest valid copy or None, [slot0, slot1])."""
    if not data:
        return None, [None, None]
    slots = [decode_slot(data[i * SLOT_SIZE : (i + 1) * SLOT_SIZE]) for i in range(2)]
    valid = [s for s in slots if s is not None]
    best = max(valid, key=lambda s: s.seq) if valid else None
    return best, slots


def initial_superblock() -> Superblock:
    """The superblock of a brand-new directory (epoch 0; the first open bumps it to 1)."""
    return Superblock(seq=0, epoch=0, trim_lsn=0, clean=True, last_lsn=0)
