"""The lossy FUSE file system keeps exactly what was fsynced, and nothing else, across crash()."""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultfs import FaultFsError, LossyMount, mounted


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LossyMount]:
    base = tmp_path_factory.mktemp("faultfs")
    with LossyMount(base / "backing", base / "mnt", log_path=base / "faultfs.log") as mount:
        yield mount
    assert not mounted(base / "mnt")


@pytest.fixture
def d(fs: LossyMount) -> Path:
    """A fresh directory on the mount (directories are durable at once)."""
    path = fs.mountpoint / uuid.uuid4().hex[:8]
    path.mkdir()
    return path


def write(path: Path, data: bytes, offset: int = 0, *, sync: bool = False) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, offset)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_fsynced_write_survives_crash(fs: LossyMount, d: Path) -> None:
    write(d / "f", b"durable" * 1000, sync=True)
    fs.crash()
    assert (d / "f").read_bytes() == b"durable" * 1000


def test_fdatasync_counts_as_sync(fs: LossyMount, d: Path) -> None:
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"x" * 100_000)
    os.fdatasync(fd)
    os.close(fd)
    fs.crash()
    assert (d / "f").read_bytes() == b"x" * 100_000


def test_unsynced_write_is_lost_and_file_is_empty(fs: LossyMount, d: Path) -> None:
    write(d / "f", b"gone" * 5000)
    assert (d / "f").read_bytes() == b"gone" * 5000  # visible before the crash
    stats = fs.stats()
    assert stats["dirty_files"] >= 1
    assert stats["unsynced_write_bytes"] >= 20_000
    fs.crash()
    assert (d / "f").exists()  # the create was durable
    assert (d / "f").stat().st_size == 0
    assert (d / "f").read_bytes() == b""
    assert fs.stats()["dirty_files"] == 0


def test_close_does_not_sync(fs: LossyMount, d: Path) -> None:
    with open(d / "f", "wb") as f:
        f.write(b"closed but not synced")
    fs.crash()
    assert (d / "f").read_bytes() == b""


def test_unsynced_extension_reverts_size(fs: LossyMount, d: Path) -> None:
    write(d / "f", b"a" * 4096, sync=True)
    write(d / "f", b"b" * 10_000, offset=4096)
    assert (d / "f").stat().st_size == 14_096
    fs.crash()
    assert (d / "f").stat().st_size == 4096
    assert (d / "f").read_bytes() == b"a" * 4096


def test_partial_overwrite_reverts_to_old_bytes(fs: LossyMount, d: Path) -> None:
    old = bytes(range(256)) * 1000  # spans several overlay pages
    write(d / "f", old, sync=True)
    write(d / "f", b"\xff" * 100, offset=65_500)  # across a page boundary
    write(d / "f", b"\xee" * 3, offset=7)
    data = (d / "f").read_bytes()
    assert data[7:10] == b"\xee" * 3 and data[65_500:65_600] == b"\xff" * 100
    assert data[:7] == old[:7] and data[65_600:] == old[65_600:]
    fs.crash()
    assert (d / "f").read_bytes() == old


def test_fsync_makes_only_that_file_durable(fs: LossyMount, d: Path) -> None:
    write(d / "a", b"a-data", sync=True)
    write(d / "b", b"b-data")
    fs.crash()
    assert (d / "a").read_bytes() == b"a-data"
    assert (d / "b").read_bytes() == b""


def test_mmap_write_with_msync_survives(fs: LossyMount, d: Path) -> None:
    size = 3 * mmap.PAGESIZE
    with open(d / "idx", "w+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())
        with mmap.mmap(f.fileno(), size) as m:
            m[10:20] = b"0123456789"
            m[size - 5 :] = b"tail!"
            m.flush()  # msync(MS_SYNC) -> FUSE fsync
    fs.crash()
    data = (d / "idx").read_bytes()
    assert len(data) == size
    assert data[10:20] == b"0123456789" and data[-5:] == b"tail!"


def test_mmap_write_without_msync_is_lost(fs: LossyMount, d: Path) -> None:
    size = 2 * mmap.PAGESIZE
    write(d / "idx", b"\0" * size, sync=True)
    with open(d / "idx", "r+b") as f, mmap.mmap(f.fileno(), size) as m:
        m[0:5] = b"dirty"
    # The dirty page may or may not have reached the FS yet (munmap does not write back);
    # either way a crash must drop it.
    fs.crash()
    assert (d / "idx").read_bytes() == b"\0" * size


def test_rename_is_durable_at_once_but_data_is_not(fs: LossyMount, d: Path) -> None:
    write(d / "synced.tmp", b"synced", sync=True)
    os.rename(d / "synced.tmp", d / "synced")
    write(d / "unsynced.tmp", b"unsynced")
    os.rename(d / "unsynced.tmp", d / "unsynced")
    fs.crash()
    assert sorted(p.name for p in d.iterdir()) == ["synced", "unsynced"]
    assert (d / "synced").read_bytes() == b"synced"
    assert (d / "unsynced").read_bytes() == b""


def test_fsync_after_rename_syncs_the_renamed_file(fs: LossyMount, d: Path) -> None:
    write(d / "a.swap", b"swapped")
    os.rename(d / "a.swap", d / "a")
    fd = os.open(d / "a", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    fs.crash()
    assert (d / "a").read_bytes() == b"swapped"


def test_rename_over_existing_file(fs: LossyMount, d: Path) -> None:
    write(d / "target", b"old", sync=True)
    write(d / "new", b"new", sync=True)
    os.replace(d / "new", d / "target")
    fs.crash()
    assert sorted(p.name for p in d.iterdir()) == ["target"]
    assert (d / "target").read_bytes() == b"new"


def test_unlink_and_mkdir_are_durable(fs: LossyMount, d: Path) -> None:
    write(d / "f", b"x", sync=True)
    os.unlink(d / "f")
    (d / "sub").mkdir()
    fs.crash()
    assert [p.name for p in d.iterdir()] == ["sub"]


def test_truncate_shrink_is_durable_growth_is_not(fs: LossyMount, d: Path) -> None:
    write(d / "shrink", b"s" * 10_000, sync=True)
    os.truncate(d / "shrink", 100)
    write(d / "grow", b"g" * 100, sync=True)
    os.truncate(d / "grow", 1 << 20)  # like Kafka's index preallocation (setLength)
    assert (d / "grow").stat().st_size == 1 << 20
    assert (d / "grow").read_bytes()[100:4096] == b"\0" * 3996
    fs.crash()
    assert (d / "shrink").read_bytes() == b"s" * 100
    assert (d / "grow").read_bytes() == b"g" * 100


def test_shrink_then_regrow_reads_zeros(fs: LossyMount, d: Path) -> None:
    write(d / "f", b"z" * 5000)
    os.truncate(d / "f", 10)
    os.truncate(d / "f", 5000)
    assert (d / "f").read_bytes() == b"z" * 10 + b"\0" * 4990


def test_writeback_makes_everything_durable(fs: LossyMount, d: Path) -> None:
    write(d / "a", b"a" * 70_000)
    write(d / "b", b"b")
    result = fs.writeback()
    assert result["files"] >= 2
    assert fs.stats()["dirty_files"] == 0
    fs.crash()
    assert (d / "a").read_bytes() == b"a" * 70_000
    assert (d / "b").read_bytes() == b"b"


def test_unlinked_open_file_is_dropped(fs: LossyMount, d: Path) -> None:
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"doomed")
    os.unlink(d / "f")
    assert os.pread(fd, 6, 0) == b"doomed"
    os.close(fd)
    assert all(not f["path"].endswith(f"{d.name}/f") for f in fs.stats()["files"])


def test_o_trunc_reopen(fs: LossyMount, d: Path) -> None:
    write(d / "f", b"old contents", sync=True)
    with open(d / "f", "wb") as f:  # O_TRUNC: the shrink is durable
        f.write(b"new")
    fs.crash()
    assert (d / "f").read_bytes() == b""


def test_file_locks_work(fs: LossyMount, d: Path) -> None:
    """Kafka takes an exclusive fcntl lock on the log dir's .lock (FileChannel.tryLock)."""
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def test_crash_refuses_while_files_are_open(fs: LossyMount, d: Path) -> None:
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with pytest.raises(FaultFsError, match="still open"):
            fs.crash(wait_idle=0.3)
    finally:
        os.close(fd)


def test_random_operations_match_a_model(fs: LossyMount, d: Path) -> None:
    """Random writes, truncates and fsyncs against a model of (current, durable) contents."""
    rng = random.Random(1234)
    current = {name: b"" for name in "abc"}
    durable = dict(current)
    fds = {name: os.open(d / name, os.O_RDWR | os.O_CREAT, 0o644) for name in current}
    try:
        for _ in range(400):
            name = rng.choice("abc")
            fd = fds[name]
            op = rng.random()
            if op < 0.6:
                off = rng.randrange(0, 300_000)
                data = rng.randbytes(rng.randrange(1, 20_000))
                os.pwrite(fd, data, off)
                cur = current[name].ljust(off, b"\0")
                current[name] = cur[:off] + data + cur[off + len(data) :]
            elif op < 0.75:
                size = rng.randrange(0, 320_000)
                os.ftruncate(fd, size)
                current[name] = current[name][:size].ljust(size, b"\0")
                if size < len(durable[name]):  # shrinks are durable at once
                    durable[name] = durable[name][:size]
            elif op < 0.85:
                os.fsync(fd)
                durable[name] = current[name]
            else:
                off = rng.randrange(0, 330_000)
                n = rng.randrange(1, 50_000)
                assert os.pread(fd, n, off) == current[name][off : off + n]
    finally:
        for fd in fds.values():
            os.close(fd)
    for name in current:
        assert (d / name).read_bytes() == current[name]
    fs.crash()
    for name in current:
        assert (d / name).read_bytes() == durable[name], name


def test_stop_unmounts_even_with_a_file_open(tmp_path: Path) -> None:
    mount = LossyMount(tmp_path / "b", tmp_path / "m", log_path=tmp_path / "log").start()
    fd = os.open(tmp_path / "m" / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mount.stop()
        assert not mounted(tmp_path / "m")
        assert mount.proc is None
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: the file system under it is gone
            os.close(fd)
    assert (tmp_path / "b" / "f").exists()


def test_directory_rename_keeps_dirty_files_reachable(fs: LossyMount, d: Path) -> None:
    """Kafka deletes a partition by renaming its directory (``-delete`` suffix)."""
    (d / "p-0").mkdir()
    write(d / "p-0" / "seg", b"synced", sync=True)
    fd = os.open(d / "p-0" / "seg", os.O_RDWR)
    os.pwrite(fd, b"SYNCED-AND-MORE", 0)
    os.rename(d / "p-0", d / "p-0.abc-delete")
    os.fsync(fd)  # fsync through a handle opened under the old name
    os.close(fd)
    write(d / "p-0.abc-delete" / "other", b"unsynced")
    assert fs.stats()["files"][-1]["path"].endswith("p-0.abc-delete/other")
    fs.crash()
    assert (d / "p-0.abc-delete" / "seg").read_bytes() == b"SYNCED-AND-MORE"
    assert (d / "p-0.abc-delete" / "other").read_bytes() == b""
