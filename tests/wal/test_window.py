"""The in-flight window (format version 2): a hole is a torn tail only inside it.

Sans-IO: segment images are built with `encode_group` exactly as the writer
lays them out (each group start records `back`, its distance in blocks to the
durable frontier when it was issued), then damaged the way a crash or bit rot
would, then scanned.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.wal.helpers import new_dir
from wal import WalConfig, WalCorruptionError, open_wal
from wal.file_backend import FileBackend
from wal.record import FLAG_GROUP_START, RecordError, decode_header, encode_group
from wal.recovery import analyze
from wal.segment import (
    SEG_STRUCT,
    EndKind,
    SegmentHeader,
    decode_segment_header,
    encode_segment_header,
    scan_segment,
)
from wal.superblock import SB_VERSION, decode_superblock

BLOCK = 512
HDR = SegmentHeader(
    block_size=BLOCK, epoch=3, segno=7, first_lsn=1, segment_size=64 * BLOCK, data_offset=BLOCK
)


@dataclass
class Placed:
    offset: int
    size: int
    first_lsn: int
    count: int
    back: int  # blocks


def build(group_entries: list[int], backs: list[int]) -> tuple[bytearray, list[Placed]]:
    """A segment image holding groups of `group_entries[i]` entries with `backs[i]`."""
    img = bytearray(HDR.segment_size)
    img[: HDR.data_offset] = encode_segment_header(HDR)
    pos, lsn, placed = HDR.data_offset, 1, []
    for n, back in zip(group_entries, backs, strict=True):
        entries = [(1, struct.pack("<Q", lsn + i) * (1 + (lsn + i) % 40)) for i in range(n)]
        view = memoryview(img)[pos:]
        size = encode_group(
            view, salt_crc=HDR.salt_crc, first_lsn=lsn, entries=entries, block=BLOCK, back=back
        )
        placed.append(Placed(pos, size, lsn, n, back))
        pos += size
        lsn += n
    return img, placed


def wreck(img: bytearray, g: Placed, how: str, rng: random.Random) -> None:
    """Damage group `g` as a crash could: zero it, garble it, or tear it mid-way."""
    if how == "zero":
        img[g.offset : g.offset + g.size] = bytes(g.size)
    elif how == "garble":
        img[g.offset : g.offset + g.size] = rng.randbytes(g.size)
    else:  # torn: a random prefix of sectors reached the disk, the rest is zero
        keep = rng.randrange(0, g.size // BLOCK) * BLOCK
        img[g.offset + keep : g.offset + g.size] = bytes(g.size - keep)


def test_hole_inside_the_window_is_a_torn_tail() -> None:
    # groups 0, 1 durable; 2 and 3 in flight together (3 records back = size of 2)
    img, gs = build([2, 3, 1, 2], [0, 0, 0, 0])
    img, gs = build([2, 3, 1, 2], [0, 0, 0, gs[2].size // BLOCK])
    wreck(img, gs[2], "zero", random.Random(0))
    sc = scan_segment(img, HDR)
    assert sc.end_kind is EndKind.BAD and sc.later_group_offset is None
    assert sc.end_offset == gs[2].offset and sc.next_lsn == gs[2].first_lsn


def test_hole_before_a_group_issued_after_it_was_durable_is_corruption() -> None:
    img, gs = build([2, 3, 1, 2], [0, 0, 0, 0])  # group 3 says: all before me was durable
    wreck(img, gs[2], "zero", random.Random(0))
    sc = scan_segment(img, HDR)
    assert sc.end_kind is EndKind.BAD and sc.later_group_offset == gs[3].offset


def test_window_slides_a_valid_in_window_group_hides_nothing_older() -> None:
    # 1 was in flight with 2, 2 with 3: rot in group 1 is proven by group 3
    img, gs = build([1, 1, 1, 1], [0, 0, 0, 0])
    backs = [0, 0, gs[1].size // BLOCK, gs[2].size // BLOCK]
    img, gs = build([1, 1, 1, 1], backs)
    img[gs[1].offset + 40] ^= 0x01  # a body bit of group 1
    sc = scan_segment(img, HDR)
    assert sc.bad_offset == gs[1].offset and sc.bad_reason is RecordError.BODY_CRC
    assert sc.later_group_offset == gs[3].offset


def test_back_outside_a_group_start_is_refused() -> None:
    img, gs = build([3], [0])
    second = gs[0].offset + 32 + 8 * 2  # record 2 of the group
    second = (second + 31) // 32 * 32
    assert not img[second + 5] & FLAG_GROUP_START
    struct.pack_into("<H", img, second + 6, 1)
    from wal.record import RECORD_HEADER, crc

    fields = list(RECORD_HEADER.unpack_from(img, second))
    fields[-1] = 0
    RECORD_HEADER.pack_into(img, second, *fields)
    struct.pack_into("<I", img, second + 28, crc(bytes(img[second : second + 28]), HDR.salt_crc))
    assert decode_header(img, second, HDR.salt_crc) is RecordError.RESERVED


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=12),
    window=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_crash_inside_the_window_recovers_every_acked_group(
    sizes: list[int], window: int, seed: int
) -> None:
    """Simulate the writer's issue/complete order with `window` writes in flight,
    crash at a random moment, damage the unfinished writes at random: the scan
    never reports corruption, keeps every acknowledged group and only returns
    whole groups in order."""
    rng = random.Random(seed)
    # first pass for the sizes, second with the real `back` values
    _, gs = build(sizes, [0] * len(sizes))
    backs, inflight, done, acked = [], [], set(), 0
    completed_at_crash: set[int] = set()
    crash_at = rng.randrange(0, 2 * len(sizes) + 1)
    step = 0
    frontier = gs[0].offset
    for i, g in enumerate(gs):
        while len(inflight) >= window:  # wait for some write to finish (any order)
            j = inflight.pop(rng.randrange(len(inflight)))
            done.add(j)
            step += 1
            while acked in done:  # publish in order
                frontier = gs[acked].offset + gs[acked].size
                acked += 1
        backs.append((g.offset - frontier) // BLOCK)
        inflight.append(i)
        step += 1
        if step >= crash_at:
            break
    completed_at_crash = set(done)
    issued = len(backs)
    img, gs = build(sizes[:issued], backs)
    img.extend(bytes(HDR.segment_size - len(img)))
    for i in range(issued):
        if i not in completed_at_crash:  # still in flight: anything may be on disk
            how = rng.choice(["intact", "zero", "garble", "torn"])
            if how != "intact":
                wreck(img, gs[i], how, rng)
    sc = scan_segment(img, HDR)
    assert sc.later_group_offset is None, "a crash inside the window looked like corruption"
    assert sc.next_lsn - 1 >= (gs[acked - 1].first_lsn + gs[acked - 1].count - 1 if acked else 0)
    assert sc.end_offset in {HDR.data_offset} | {g.offset + g.size for g in gs}
    # what the scan keeps is exactly the intact prefix
    assert sc.group_offsets == [g.offset for g in gs[: len(sc.group_offsets)]]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    sizes=st.lists(st.integers(1, 4), min_size=3, max_size=10),
    data=st.data(),
)
def test_rot_behind_the_window_of_a_later_group_is_corruption(sizes: list[int], data) -> None:  # type: ignore[no-untyped-def]
    """Groups issued one at a time (back 0) and with a window of 2: flipping any
    bit of group i is corruption whenever some later group's frontier is past it."""
    window2 = data.draw(st.booleans())
    _, gs = build(sizes, [0] * len(sizes))
    backs = [0] + [(gs[i].size // BLOCK if window2 else 0) for i in range(1, len(gs))]
    img, gs = build(sizes, backs)
    img.extend(bytes(HDR.segment_size - len(img)))
    i = data.draw(st.integers(0, len(gs) - 1))
    where = gs[i].offset + data.draw(st.integers(0, 32 + 8 - 1))  # header or payload start
    img[where] ^= 1 << data.draw(st.integers(0, 7))
    proof_exists = any(
        gs[j].offset - backs[j] * BLOCK > gs[i].offset for j in range(i + 1, len(gs))
    )
    sc = scan_segment(img, HDR)
    assert sc.end_kind is EndKind.BAD and sc.end_offset == gs[i].offset
    assert (sc.later_group_offset is not None) == proof_exists


# ------------------------------------------------------------ versions and files
def test_version_1_segments_and_superblock_are_read_and_upgraded() -> None:
    """A directory written by format version 1 opens; new data is version 2."""
    d = new_dir()
    try:
        cfg = WalConfig(segment_size=64 * 1024, prepare_spares=False)

        async def write(payloads: list[bytes]) -> None:
            async with open_wal(d, cfg) as wal:
                for p in payloads:
                    await wal.append(p)

        trio.run(write, [b"old-1", b"old-2"])
        # turn it into what version 1 wrote: version fields 1 (groups had back 0)
        for n in os.listdir(d):
            path = os.path.join(d, n)
            if n.startswith("seg-"):
                with open(path, "r+b") as f:
                    raw = bytearray(f.read(64))
                    struct.pack_into("<I", raw, 8, 1)
                    from wal.record import crc

                    struct.pack_into("<I", raw, 60, crc(bytes(raw[:60])))
                    f.seek(0)
                    f.write(raw)
                    assert decode_segment_header(bytes(raw)).version == 1  # type: ignore[union-attr]
            if n == "superblock":
                from wal.superblock import SLOT_SIZE, Superblock, encode_superblock

                sb, _ = decode_superblock(open(path, "rb").read())
                assert sb is not None
                old = Superblock(
                    seq=sb.seq,
                    epoch=sb.epoch,
                    trim_lsn=sb.trim_lsn,
                    clean=sb.clean,
                    last_lsn=sb.last_lsn,
                    version=1,
                )
                with open(path, "r+b") as f:
                    f.seek(old.slot * SLOT_SIZE)
                    f.write(encode_superblock(old))
        trio.run(write, [b"new-3"])

        async def read() -> list[bytes]:
            async with open_wal(d, cfg) as wal:
                return [e.payload for e in wal.read_from()]

        assert trio.run(read) == [b"old-1", b"old-2", b"new-3"]
        sb, _ = decode_superblock(open(os.path.join(d, "superblock"), "rb").read())
        assert sb is not None and sb.version == SB_VERSION == 2
    finally:
        shutil.rmtree(d)


def test_unknown_segment_version_is_refused() -> None:
    raw = bytearray(encode_segment_header(HDR))
    fields = list(SEG_STRUCT.unpack_from(raw, 0))
    fields[1] = 3
    from wal.record import crc

    raw[:64] = SEG_STRUCT.pack(*fields)
    struct.pack_into("<I", raw, 60, crc(bytes(raw[:60])))
    assert decode_segment_header(bytes(raw)) is None


async def _overlapping_groups_on_disk(d: str, cfg: WalConfig) -> tuple[str, Any, list[int]]:
    """Append from 8 appenders, each keeping two appends outstanding so that a new group
    forms while the previous write is still on the disk; returns (segment path, its scan,
    each group's ``back``). Whether two writes overlapped depends on timing."""
    async with open_wal(d, cfg) as wal:

        async def app(k: int) -> None:
            prev = None
            for _ in range(120):
                sub = await wal.submit_many([(1, bytes([k]) * 3000)])
                if prev is not None:
                    await prev.wait()
                prev = sub
            assert prev is not None
            await prev.wait()

        async with trio.open_nursery() as n:
            for k in range(8):
                n.start_soon(app, k)
    a = analyze(FileBackend(d, read_only=True))
    seg = a.segments[-1]
    assert seg.scan is not None and len(seg.scan.group_offsets) > 4
    path = os.path.join(d, seg.name)
    with open(path, "rb") as f:
        data = f.read()
    backs = []
    for off in seg.scan.group_offsets:
        h = decode_header(data, off, seg.header.salt_crc)  # type: ignore[union-attr]
        assert not isinstance(h, RecordError)
        backs.append(h.back)
    return path, seg, backs


async def test_pipelined_log_on_disk_bit_flip_beyond_the_window_refuses_to_open() -> None:
    """Concurrent appenders on a real file: groups overlap (some back > 0), and a
    flipped bit in an early group is still corruption, named by file and offset."""
    cfg = WalConfig(segment_size=16 << 20, prepare_spares=False, max_inflight_groups=2, io="thread")
    # On a starved CPU a write can finish before the next group is issued, so try a few
    # fresh logs until one has overlapping writes (the window must really be exercised).
    for _attempt in range(10):
        d = new_dir()
        path, seg, backs = await _overlapping_groups_on_disk(d, cfg)
        if any(backs):
            break
        shutil.rmtree(d)
    try:
        assert any(backs), "no two group writes overlapped in 10 logs: the window was not exercised"
        victim = seg.scan.group_offsets[1]
        with open(path, "r+b") as f:
            f.seek(victim + 32 + 100)
            b = f.read(1)[0]
            f.seek(victim + 32 + 100)
            f.write(bytes([b ^ 0x04]))

        async def reopen() -> None:
            async with open_wal(d, cfg):
                pass

        with pytest.raises(WalCorruptionError) as ei:
            await reopen()
        assert ei.value.path == path and ei.value.offset == victim
    finally:
        shutil.rmtree(d, ignore_errors=True)
