"""Torn tails, bit flips, zeroed sectors, ENOSPC, EIO, the size cap."""

from __future__ import annotations

import errno
import os
import random
import shutil
from dataclasses import replace

import pytest
import trio

from tests.wal.helpers import dir_digest, metric, new_dir, snapshot
from wal import (
    Wal,
    WalConfig,
    WalCorruptionError,
    WalFencedError,
    open_wal,
)
from wal.cli import verify
from wal.file_backend import FileBackend
from wal.recovery import analyze
from wal.testing import MemFile, MemoryBackend

CFG = WalConfig(segment_size=64 * 1024, prepare_spares=False, zero_fill=False)
PAYLOADS = [bytes([i]) * (150 + 10 * i) for i in range(1, 6)]


async def _crashed_dir() -> tuple[str, str, int, int]:
    """A directory as left by kill -9 after 5 acked sequential appends.

    Returns (dir, segment name, offset of the last record, its size)."""
    d = new_dir()
    async with open_wal(d, CFG) as wal:
        for p in PAYLOADS:
            await wal.append(p, type=3)
        snap = snapshot(d)
    shutil.rmtree(d)
    a = analyze(FileBackend(snap, read_only=True))
    seg = a.segments[-1]
    assert seg.scan is not None and a.superblock is not None and not a.superblock.clean
    off = seg.scan.group_offsets[-1]
    return snap, seg.name, off, 32 + len(PAYLOADS[-1])


def _entries(directory: str) -> list[tuple[int, int, bytes]]:
    async def main() -> list[tuple[int, int, bytes]]:
        async with open_wal(directory, CFG) as wal:
            return [(e.lsn, e.type, e.payload) for e in wal.read_from()]

    return trio.run(main)


def _patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _mem_copy(directory: str) -> MemoryBackend:
    """The files of a WAL directory loaded into the in-memory backend."""
    b = MemoryBackend(alignment=4096)
    for n in os.listdir(directory):
        if n == "LOCK":
            continue
        with open(os.path.join(directory, n), "rb") as f:
            data = f.read()
        b.files[n] = MemFile(durable=bytearray(data), current=bytearray(data))
    return b


async def _mem_entries(b: MemoryBackend) -> list[tuple[int, int, bytes]]:
    async with open_wal(b, CFG) as wal:
        return [(e.lsn, e.type, e.payload) for e in wal.read_from()]


def test_torn_tail_at_every_byte_offset_of_last_record() -> None:
    """Every prefix length of the last record (rest zero or garbage) is a torn tail."""
    base, seg, off, size = trio.run(_crashed_dir)
    expected = [(i + 1, 3, p) for i, p in enumerate(PAYLOADS[:-1])]
    rng = random.Random(7)
    try:
        image = _mem_copy(base)
        for k in range(size):
            for garble in (False, True):
                b = image.crash(random.Random(0))  # a private copy
                rest = 4096 - k
                tail = rng.randbytes(rest) if garble else bytes(rest)
                b.files[seg].current[off + k : off + 4096] = tail
                before = metric("walproxy_wal_torn_tail_truncations_total")
                assert trio.run(_mem_entries, b) == expected, (k, garble)
                torn = b.aside_files()
                if k > 0 or garble:
                    assert len(torn) == 1 and torn[0].startswith("torn-5-"), (k, torn)
                    assert metric("walproxy_wal_torn_tail_truncations_total") == before + 1
                    assert 0 < len(b.files[torn[0]].current) <= 4096
                    assert trio.run(_mem_entries, b) == expected  # stable once repaired
        # the same on the real file system, for a sample of offsets
        for k in range(0, size, 23):
            d = snapshot(base)
            try:
                _patch(os.path.join(d, seg), off + k, rng.randbytes(4096 - k))
                assert _entries(d) == expected, k
                assert [n for n in os.listdir(d) if n.startswith("torn-5-")]
                assert _entries(d) == expected
            finally:
                shutil.rmtree(d)
    finally:
        shutil.rmtree(base)


def test_intact_crashed_log_keeps_everything() -> None:
    base, *_ = trio.run(_crashed_dir)
    try:
        assert _entries(base) == [(i + 1, 3, p) for i, p in enumerate(PAYLOADS)]
        assert not [n for n in os.listdir(base) if n.startswith("torn-")]
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("target", ["header", "body"])
def test_flipped_bit_in_the_middle_refuses_to_open(target: str) -> None:
    base, seg, _off, _size = trio.run(_crashed_dir)
    try:
        a = analyze(FileBackend(base, read_only=True))
        sc = a.segments[-1].scan
        assert sc is not None
        rec = sc.group_offsets[1]  # record 2 of 5: valid records follow it
        where = rec + (5 if target == "header" else 32 + 40)
        path = os.path.join(base, seg)
        with open(path, "rb") as f:
            f.seek(where)
            byte = f.read(1)[0]
        _patch(path, where, bytes([byte ^ 0x10]))
        before = dir_digest(base)
        assert verify(base) == 1  # read-only check reports it ...
        assert dir_digest(base) == before  # ... and changes nothing

        async def main() -> None:
            async with open_wal(base, CFG):
                pass

        with pytest.raises(WalCorruptionError) as ei:
            trio.run(main)
        assert ei.value.path == path and ei.value.offset == rec
        assert path in str(ei.value) and f"offset {rec}" in str(ei.value)
        assert dir_digest(base) == before  # refusing to open modified nothing
    finally:
        shutil.rmtree(base)


def test_zeroed_last_sector_after_crash_is_a_torn_tail() -> None:
    base, seg, off, size = trio.run(_crashed_dir)
    try:
        sector = (off + size - 1) // 512 * 512
        _patch(os.path.join(base, seg), sector, bytes(512))
        assert _entries(base) == [(i + 1, 3, p) for i, p in enumerate(PAYLOADS[:-1])]
    finally:
        shutil.rmtree(base)


def test_zeroed_last_sector_after_clean_shutdown_is_corruption() -> None:
    d = new_dir()
    try:

        async def write() -> None:
            async with open_wal(d, CFG) as wal:
                for p in PAYLOADS:
                    await wal.append(p)

        trio.run(write)
        a = analyze(FileBackend(d, read_only=True))
        st = a.segments[-1]
        assert a.superblock is not None and a.superblock.clean and st.scan is not None
        seal_block = st.scan.end_offset - 4096  # the SEAL group
        _patch(os.path.join(d, st.name), seal_block, bytes(512))

        async def reopen() -> None:
            async with open_wal(d, CFG):
                pass

        with pytest.raises(WalCorruptionError, match="clean"):
            trio.run(reopen)
    finally:
        shutil.rmtree(d)


async def _append_or_fenced(wal: Wal, payload: bytes, results: list[object]) -> None:
    """Append; record the acknowledged LSN or the WalFencedError instead."""
    try:
        results.append(await wal.append(payload))
    except WalFencedError as e:
        results.append(e)


async def _fence_scenario(backend: MemoryBackend, fail: str, err: int) -> None:
    async with open_wal(backend, CFG) as wal:
        for p in PAYLOADS[:2]:
            await wal.append(p)
        durable = wal.last_durable_lsn
        backend.fail_next[fail] = err
        results: list[object] = []
        async with trio.open_nursery() as n:
            for i in range(20):
                n.start_soon(_append_or_fenced, wal, b"x" * (100 + i), results)
        assert len(results) == 20
        assert all(isinstance(r, WalFencedError) for r in results), results
        assert wal.fenced and wal.last_durable_lsn == durable
        assert metric("walproxy_wal_fenced") == 1
        ops = backend.ops
        with pytest.raises(WalFencedError):
            await wal.append(b"later")
        with pytest.raises(WalFencedError):
            await wal.trim(1)
        assert backend.ops == ops  # no retry: nothing touches the disk after the error
    assert backend.ops == ops  # and closing a fenced WAL writes nothing either
    # reopening recovers: the acked entries are intact
    async with open_wal(backend, CFG) as wal:
        got = [e.payload for e in wal.read_from()]
        assert got[:2] == PAYLOADS[:2]
        assert all(p.startswith(b"x") for p in got[2:])
        assert metric("walproxy_wal_fenced") == 0


@pytest.mark.parametrize(
    ("fail", "err"),
    [("sync", errno.EIO), ("write", errno.EIO), ("write", errno.ENOSPC), ("sync", errno.ENOSPC)],
)
async def test_io_error_fences_and_nothing_is_acked(fail: str, err: int) -> None:
    await _fence_scenario(MemoryBackend(), fail, err)


async def test_full_device_enospc_on_new_segment_fences() -> None:
    backend = MemoryBackend()
    backend.capacity = 3 * CFG.segment_size + 16384
    acked = []
    async with open_wal(backend, CFG) as wal:
        with pytest.raises(WalFencedError, match=r"No space|ENOSPC|no space"):
            for i in range(10_000):
                acked.append(await wal.append(bytes([i % 256]) * 3000))
        assert wal.fenced
    async with open_wal(MemoryBackend.crash(backend, random.Random(1)), CFG) as wal:
        assert [e.lsn for e in wal.read_from()][: len(acked)] == acked


async def test_size_cap_applies_back_pressure_until_trim() -> None:
    cfg = WalConfig(segment_size=64 * 1024, max_bytes=2 * 64 * 1024, prepare_spares=False)
    async with open_wal(MemoryBackend(), cfg) as wal:
        lsns = []
        blocked = False
        for _ in range(100):
            with trio.move_on_after(0.3) as scope:
                lsns.append(await wal.append(b"y" * 8000))
            if scope.cancelled_caught:
                blocked = True
                break
        assert blocked and wal.waiting_for_space and wal.segment_count == 2
        done = trio.Event()

        async def late() -> None:
            lsns.append(await wal.append(b"z" * 8000))
            done.set()

        async with trio.open_nursery() as n:
            n.start_soon(late)
            await trio.sleep(0.05)
            assert not done.is_set()  # still waiting: never dropped, never failed
            await wal.trim(wal.last_durable_lsn)
            with trio.fail_after(5):
                await done.wait()
        assert not wal.fenced and lsns == sorted(lsns)


def test_garbage_superblock_with_segments_refuses() -> None:
    d = new_dir()
    try:

        async def write() -> None:
            async with open_wal(d, CFG) as wal:
                await wal.append(b"a")

        trio.run(write)
        with open(os.path.join(d, "superblock"), "wb") as f:
            f.write(os.urandom(8192))

        async def reopen() -> None:
            async with open_wal(d, CFG):
                pass

        with pytest.raises(WalCorruptionError, match="superblock"):
            trio.run(reopen)
    finally:
        shutil.rmtree(d)


class _SlowFirstFailSecond(MemoryBackend):
    """Data write 1 takes a while; data write 2 (issued meanwhile) fails with EIO."""

    def __init__(self) -> None:
        super().__init__()
        self.data_writes = 0
        self.armed = False

    def open_segment(self, name: str, *, write: bool):  # type: ignore[no-untyped-def]
        seg = super().open_segment(name, write=write)
        real = seg.write_at

        def write_at(offset: int, data: memoryview) -> None:
            if self.armed:
                self.data_writes += 1
                if self.data_writes == 1:
                    import time

                    time.sleep(0.3)  # still in flight when write 2 fails
                elif self.data_writes == 2:
                    raise OSError(errno.EIO, "injected EIO on the second in-flight write")
            real(offset, data)

        seg.write_at = write_at  # type: ignore[method-assign]
        return seg


async def test_error_in_the_window_fences_and_the_earlier_write_is_not_acked() -> None:
    """Thread I/O: two group writes in flight; inline I/O never has a window."""
    backend = _SlowFirstFailSecond()
    async with open_wal(backend, replace(CFG, io="thread")) as wal:
        await wal.append(b"before")
        durable = wal.last_durable_lsn
        backend.armed = True
        results: list[object] = []
        async with trio.open_nursery() as n:
            n.start_soon(_append_or_fenced, wal, b"w" * 100, results)  # group 1: slow write
            await trio.sleep(0.05)
            for i in range(1, 6):  # group 2, issued while group 1 is in flight
                n.start_soon(_append_or_fenced, wal, b"w" * (100 + i), results)
        assert backend.data_writes == 2, "the second group was not issued inside the window"
        # group 1 became durable after the fence: still not acknowledged
        assert all(isinstance(r, WalFencedError) for r in results), results
        assert wal.fenced and wal.last_durable_lsn == durable
        ops = backend.ops
        with pytest.raises(WalFencedError):
            await wal.append(b"later")
        assert backend.ops == ops  # nothing was still writing when appenders were told
    async with open_wal(backend, CFG) as wal:
        got = [e.payload for e in wal.read_from()]
        assert got[0] == b"before" and all(p.startswith(b"w") for p in got[1:])
