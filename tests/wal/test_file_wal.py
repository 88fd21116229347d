"""The WAL on a real disk (/var/tmp): life cycle, concurrency, trim, follow, lock, CLI."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trio

from tests.wal.helpers import dir_digest, metric, new_dir
from wal import (
    WalConfig,
    WalDirectIoError,
    WalEntryTooLargeError,
    WalLockedError,
    WalTrimmedError,
    open_wal,
)
from wal.cli import dump, verify

CFG = WalConfig(segment_size=256 * 1024, prepare_spares=False)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def wal_dir() -> Iterator[str]:
    d = new_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_open_append_close_reopen_and_epoch_bump(wal_dir: str) -> None:
    async with open_wal(wal_dir, CFG) as wal:
        assert wal.epoch == 1 and wal.direct_io  # /var/tmp is ext4: O_DIRECT works
        assert metric("walproxy_wal_direct_io") == 1
        lsns = [await wal.append(b"entry-%d" % i, type=i % 3) for i in range(10)]
        assert lsns == list(range(1, 11)) and wal.last_durable_lsn == 10
    async with open_wal(wal_dir, CFG) as wal:
        assert wal.epoch == 2 and wal.first_lsn == 1 and wal.last_durable_lsn == 10
        got = await trio.to_thread.run_sync(lambda: list(wal.read_from(4)))
        assert [(e.lsn, e.type, e.payload) for e in got] == [
            (i + 1, i % 3, b"entry-%d" % i) for i in range(3, 10)
        ]
        assert await wal.append(b"more") == 11
    async with open_wal(wal_dir, CFG) as wal:
        assert wal.epoch == 3 and wal.last_durable_lsn == 11


async def test_buffered_fallback_is_durable_and_reported(wal_dir: str) -> None:
    cfg = WalConfig(segment_size=256 * 1024, prepare_spares=False, direct_io=False)
    async with open_wal(wal_dir, cfg) as wal:
        assert not wal.direct_io and metric("walproxy_wal_direct_io") == 0
        await wal.append(b"buffered")
    async with open_wal(wal_dir, CFG) as wal:
        assert [e.payload for e in wal.read_from()] == [b"buffered"]


async def test_many_concurrent_appenders_share_groups(wal_dir: str) -> None:
    tasks, per = 64, 20
    results: dict[int, bytes] = {}
    async with open_wal(wal_dir, CFG) as wal:
        groups0 = metric("walproxy_wal_group_size_entries_count")

        async def appender(t: int) -> None:
            for i in range(per):
                p = b"%d:%d:" % (t, i) + os.urandom(100 + t)
                results[await wal.append(p)] = p

        async with trio.open_nursery() as n:
            for t in range(tasks):
                n.start_soon(appender, t)
        assert sorted(results) == list(range(1, tasks * per + 1))
        groups = metric("walproxy_wal_group_size_entries_count") - groups0
        assert groups < tasks * per / 4  # group commit actually batched
        got = {e.lsn: e.payload for e in wal.read_from()}
        assert got == results
    async with open_wal(wal_dir, CFG) as wal:
        assert {e.lsn: e.payload for e in wal.read_from()} == results


async def test_trim_frees_segments_and_persists(wal_dir: str) -> None:
    cfg = WalConfig(segment_size=64 * 1024, spare_segments=1, prepare_spares=False)
    async with open_wal(wal_dir, cfg) as wal:
        for i in range(100):
            await wal.append(bytes([i]) * 3000)
        before = wal.segment_count
        assert before >= 5
        await wal.trim(60)
        assert wal.first_lsn == 61 and wal.segment_count < before
        assert metric("walproxy_wal_segments") == wal.segment_count
        with pytest.raises(WalTrimmedError):
            next(iter(wal.read_from(10)))
        assert [e.lsn for e in wal.read_from()] == list(range(61, 101))
        segs = sorted(n for n in os.listdir(wal_dir) if n.startswith("seg-"))
        assert len(segs) == wal.segment_count
        assert len([n for n in os.listdir(wal_dir) if n.startswith("spare-")]) == 1
        # the recycled spare is reused by the next segment
        for _ in range(40):
            await wal.append(b"r" * 3000)
    async with open_wal(wal_dir, cfg) as wal:
        assert wal.first_lsn == 61 and wal.last_durable_lsn == 140
        assert [e.lsn for e in wal.read_from()] == list(range(61, 141))


async def test_follow_tails_new_entries(wal_dir: str) -> None:
    seen: list[int] = []
    async with open_wal(wal_dir, CFG) as wal:
        await wal.append(b"before")
        follower_done = trio.Event()

        async def follow() -> None:
            async for e in wal.follow(1):
                seen.append(e.lsn)
                assert e.payload == (b"before" if e.lsn == 1 else b"n%d" % e.lsn)
            follower_done.set()

        async with trio.open_nursery() as n:
            n.start_soon(follow)
            for i in range(2, 50):
                await wal.append(b"n%d" % i)
                if i % 10 == 0:
                    await trio.sleep(0.01)
            with trio.fail_after(5):
                while len(seen) < 49:
                    await trio.sleep(0.005)
            assert seen == list(range(1, 50))
            n.cancel_scope.cancel()


async def test_follow_ends_when_closed(wal_dir: str) -> None:
    got: list[int] = []
    async with trio.open_nursery() as n:
        async with open_wal(wal_dir, CFG) as wal:

            async def follow() -> None:
                async for e in wal.follow():
                    got.append(e.lsn)

            n.start_soon(follow)
            for i in range(5):
                await wal.append(b"%d" % i)
            await trio.sleep(0.05)
    assert got == [1, 2, 3, 4, 5]


async def test_second_writer_is_locked_out(wal_dir: str) -> None:
    async with open_wal(wal_dir, CFG):
        with pytest.raises(WalLockedError, match="locked"):
            async with open_wal(wal_dir, CFG):
                pass
        code = (
            "import sys, trio; from wal import open_wal, WalLockedError\n"
            "async def m():\n"
            f"    async with open_wal({wal_dir!r}): pass\n"
            "try:\n    trio.run(m)\nexcept WalLockedError:\n    sys.exit(42)\n"
        )
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
        assert r.returncode == 42, r.stderr
    async with open_wal(wal_dir, CFG) as wal:  # released on close
        assert wal.epoch == 2  # the failed opens did not bump it


async def test_entry_size_limits(wal_dir: str) -> None:
    cfg = WalConfig(segment_size=32 << 20, prepare_spares=False)
    async with open_wal(wal_dir, cfg) as wal:
        big = os.urandom(16 << 20)
        lsn = await wal.append(big)
        await wal.append(b"small")
        with pytest.raises(WalEntryTooLargeError):
            await wal.append(bytes(wal.max_entry_size + 1))
        with pytest.raises(ValueError):
            await wal.append(b"x", type=250)  # reserved for the WAL
        got = list(wal.read_from(lsn))
        assert got[0].payload == big and got[1].payload == b"small"


async def test_append_many_is_one_group_with_consecutive_lsns(wal_dir: str) -> None:
    async with open_wal(wal_dir, CFG) as wal:
        lsns = await wal.append_many([(1, b"batch"), (2, b"outcome"), (1, memoryview(b"x"))])
        assert lsns == [1, 2, 3]
        assert [(e.type, e.payload) for e in wal.read_from()] == [
            (1, b"batch"),
            (2, b"outcome"),
            (1, b"x"),
        ]


def test_verify_and_dump_cli(wal_dir: str) -> None:
    async def write() -> None:
        async with open_wal(wal_dir, CFG) as wal:
            for i in range(5):
                await wal.append(b"p%d" % i, type=7)

    trio.run(write)
    before = dir_digest(wal_dir)
    out = io.StringIO()
    assert verify(wal_dir, out) == 0
    assert "status: OK" in out.getvalue() and "records: 5" in out.getvalue()
    out = io.StringIO()
    assert dump(wal_dir, out) == 0
    text = out.getvalue()
    assert "superblock slot" in text and "seg-" in text
    assert "lsn=5" in text and "type=7" in text and "crc=ok" in text and "SEAL" in text
    assert dir_digest(wal_dir) == before  # read-only
    for cmd in ("verify", "dump"):
        r = subprocess.run(
            [sys.executable, "-m", "wal", cmd, wal_dir], cwd=ROOT, capture_output=True, text=True
        )
        assert r.returncode == 0 and "status: OK" in r.stdout, r.stdout + r.stderr
    # corrupt a record in the middle: exit code 1, file and offset named
    seg = sorted(n for n in os.listdir(wal_dir) if n.startswith("seg-"))[-1]
    path = os.path.join(wal_dir, seg)
    with open(path, "r+b") as f:
        f.seek(4096 + 33)  # body of the first record
        b = f.read(1)
        f.seek(4096 + 33)
        f.write(bytes([b[0] ^ 1]))
    r = subprocess.run(
        [sys.executable, "-m", "wal", "verify", wal_dir], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 1 and "CORRUPT" in r.stdout and path in r.stdout, r.stdout
    out = io.StringIO()
    assert dump(wal_dir, out) == 1 and "BAD (body CRC mismatch)" in out.getvalue()
    assert (
        subprocess.run(
            [sys.executable, "-m", "wal", "bogus"], cwd=ROOT, capture_output=True
        ).returncode
        == 2
    )


def test_verify_reports_torn_tail_without_repairing(wal_dir: str) -> None:
    async def write() -> str:
        async with open_wal(wal_dir, CFG) as wal:
            for _ in range(3):
                await wal.append(b"q" * 300)
            snap = new_dir()
            shutil.rmtree(snap)
            shutil.copytree(wal_dir, snap)
            return snap

    snap = trio.run(write)
    try:
        seg = sorted(n for n in os.listdir(snap) if n.startswith("seg-"))[-1]
        with open(os.path.join(snap, seg), "r+b") as f:
            f.seek(4096 * 3 + 100)  # inside the last group (3rd block of data)
            f.write(b"\xff" * 64)
        before = dir_digest(snap)
        out = io.StringIO()
        assert verify(snap, out) == 0
        assert "torn tail" in out.getvalue()
        assert dir_digest(snap) == before
    finally:
        shutil.rmtree(snap)


async def test_cancelled_waiters_in_queued_and_in_flight_groups() -> None:
    """Appenders cancelled at random while their group is queued or
    on the disk: no error escapes, everyone else is acknowledged in LSN order, and
    every acknowledged entry is in the log."""
    import random
    import time

    from wal.testing import MemoryBackend

    class SlowDisk(MemoryBackend):
        def open_segment(self, name, *, write):  # type: ignore[no-untyped-def]
            seg = super().open_segment(name, write=write)
            real = seg.write_at

            def write_at(offset, data):  # type: ignore[no-untyped-def]
                time.sleep(0.004)  # long enough for groups to queue and overlap
                real(offset, data)

            seg.write_at = write_at  # type: ignore[method-assign]
            return seg

    rng = random.Random(5)
    backend = SlowDisk()
    acked: list[tuple[int, bytes]] = []
    cfg = WalConfig(segment_size=1 << 20, prepare_spares=False)
    async with open_wal(backend, cfg) as wal:

        async def appender(i: int) -> None:
            for k in range(30):
                body = f"{i}-{k}".encode()
                with trio.move_on_after(rng.choice([0.001, 0.003, 0.01, 1.0])):
                    acked.append((await wal.append(body), body))

        async with trio.open_nursery() as n:
            for i in range(24):
                n.start_soon(appender, i)
        assert not wal.fenced
    lsns = [lsn for lsn, _ in acked]
    assert len(set(lsns)) == len(lsns)
    async with open_wal(backend, cfg) as wal:
        log = {e.lsn: e.payload for e in wal.read_from()}
    assert all(log.get(lsn) == body for lsn, body in acked)
    assert len(acked) < 24 * 30  # some were really cancelled


async def test_direct_io_on_refuses_a_directory_without_it(
    wal_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`auto` falls back to buffered writes (loudly); `on` refuses to open, naming the setting.
    (A real file system that refuses O_DIRECT: tests/containers/test_image.py, ramfs.)"""
    from wal import file_backend

    refused = (False, 4096, "open(O_DIRECT) refused with EINVAL")
    monkeypatch.setattr(file_backend, "probe_direct_io", lambda _d: refused)
    cfg = WalConfig(segment_size=256 * 1024, prepare_spares=False)
    async with open_wal(wal_dir, cfg) as wal:
        assert not wal.direct_io and metric("walproxy_wal_direct_io") == 0
    with pytest.raises(WalDirectIoError, match=r"wal.direct_io = on, but .* refuses O_DIRECT"):
        async with open_wal(wal_dir, dataclasses.replace(cfg, direct_io=True)):
            pass
