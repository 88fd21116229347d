"""The lossy passthrough file system: a pyfuse3 (libfuse3 low-level API) server process.

Namespace operations go to the backing directory at once; file *data* written through the
mount lives in an in-memory :class:`Overlay` per inode until ``fsync``/``fdatasync`` (or the
``writeback`` control command) copies it into the backing file and fsyncs that. The daemon's
memory is the volatile cache: SIGKILL it and every un-synced write is gone, which is how
:meth:`tests.faultfs.LossyMount.crash` works. See README.md for the exact semantics.

The inode bookkeeping follows pyfuse3's ``examples/passthroughfs.py`` (FUSE inode numbers are
the backing files' inode numbers). Every handler runs to completion without awaiting, so the
handlers and the control server (same trio loop) never interleave and need no locks.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import stat as stat_m
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import fsdecode, fsencode
from typing import Any, TypeVar

import pyfuse3
import trio
from pyfuse3 import EntryAttributes, FileInfo, FUSEError, StatvfsData

log = logging.getLogger("faultfs")

PAGE = 64 * 1024  # overlay granularity; writes smaller than a page read-modify-write it

T = TypeVar("T")


def _os(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call an os function, turning OSError into the FUSEError the kernel should see."""
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        raise FUSEError(exc.errno or errno.EIO) from None


@dataclass
class Overlay:
    """Un-synced state of one inode: its logical size and the pages written since the last
    fsync. ``fd`` is the daemon's own read-write descriptor on the backing file (it pins the
    backing inode, so write-back works after close, rename or unlink of the file)."""

    fd: int
    size: int
    pages: dict[int, bytearray] = field(default_factory=dict)
    written: int = 0  # bytes passed to write() since the last sync (not deduplicated)

    def page(self, index: int) -> bytearray:
        page = self.pages.get(index)
        if page is None:
            page = bytearray(os.pread(self.fd, PAGE, index * PAGE).ljust(PAGE, b"\0"))
            self.pages[index] = page
        return page

    def write(self, off: int, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            index, start = divmod(off + pos, PAGE)
            n = min(PAGE - start, len(view) - pos)
            self.page(index)[start : start + n] = view[pos : pos + n]
            pos += n
        self.size = max(self.size, off + len(view))
        self.written += len(view)

    def read(self, off: int, size: int) -> bytes:
        end = min(off + size, self.size)
        out = bytearray()
        pos = off
        while pos < end:
            index, start = divmod(pos, PAGE)
            n = min(PAGE - start, end - pos)
            page = self.pages.get(index)
            if page is not None:
                out += page[start : start + n]
            else:
                out += os.pread(self.fd, n, pos).ljust(n, b"\0")
            pos += n
        return bytes(out)

    def shrink(self, size: int) -> None:
        """Forget everything at or after ``size`` (later extensions must read zeros)."""
        for index in [i for i in self.pages if i * PAGE >= size]:
            del self.pages[index]
        index, start = divmod(size, PAGE)
        if start and index in self.pages:
            page = self.pages[index]
            page[start:] = bytes(PAGE - start)
        self.size = size

    def dirty_bytes(self) -> int:
        return len(self.pages) * PAGE


class LossyOperations(pyfuse3.Operations):
    enable_writeback_cache = False  # write() reaches us synchronously; no kernel-side dirty data

    def __init__(self, backing: str) -> None:
        super().__init__()
        self.backing = os.path.realpath(backing)
        self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: self.backing}
        self._lookups: defaultdict[int, int] = defaultdict(int)
        self._open_fd: dict[int, int] = {}  # inode -> backing fd shared by the open handles
        self._open_count: dict[int, int] = {}
        self.dirty: dict[int, Overlay] = {}
        self.synced_bytes = 0
        self.syncs = 0

    # -- inode <-> path ------------------------------------------------------------------
    def _path(self, inode: int) -> str:
        try:
            return self._paths[inode]
        except KeyError:
            raise FUSEError(errno.ENOENT) from None

    def _child(self, parent: int, name: bytes) -> str:
        return os.path.join(self._path(parent), fsdecode(name))

    def _remember(self, inode: int, path: str) -> None:
        self._lookups[inode] += 1
        self._paths[inode] = path

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, n in inode_list:
            if self._lookups[inode] > n:
                self._lookups[inode] -= n
                continue
            self._lookups.pop(inode, None)
            if inode != pyfuse3.ROOT_INODE and inode not in self._open_fd:
                self._paths.pop(inode, None)

    # -- attributes ----------------------------------------------------------------------
    def _attr(self, path: str | None = None, inode: int | None = None) -> EntryAttributes:
        if inode is not None and inode in self._open_fd:
            st = _os(os.fstat, self._open_fd[inode])
        else:
            st = _os(os.lstat, path if path is not None else self._path(inode or 0))
        entry = EntryAttributes()
        for name in (
            "st_ino", "st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size",
            "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
        ):  # fmt: skip
            setattr(entry, name, getattr(st, name))
        if path == self.backing or inode == pyfuse3.ROOT_INODE:
            entry.st_ino = pyfuse3.ROOT_INODE
        overlay = self.dirty.get(entry.st_ino)
        if overlay is not None:
            entry.st_size = overlay.size
        entry.generation = 0
        entry.entry_timeout = 0
        entry.attr_timeout = 0
        entry.st_blksize = 4096
        entry.st_blocks = (entry.st_size + 511) // 512
        return entry

    async def getattr(self, inode: int, ctx: Any = None) -> EntryAttributes:
        return self._attr(inode=inode)

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> EntryAttributes:
        path = self._child(parent_inode, name)
        attr = self._attr(path=path)
        if name not in (b".", b".."):
            self._remember(attr.st_ino, path)
        return attr

    async def setattr(
        self, inode: int, attr: EntryAttributes, fields: Any, fh: int | None, ctx: Any
    ) -> EntryAttributes:
        path = self._path(inode)
        if fields.update_size:
            self.set_size(inode, attr.st_size)
        if fields.update_mode:
            _os(os.chmod, path, stat_m.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            _os(os.chown, path, uid, gid, follow_symlinks=False)
        if fields.update_atime or fields.update_mtime:
            old = _os(os.lstat, path)
            atime = attr.st_atime_ns if fields.update_atime else old.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else old.st_mtime_ns
            _os(os.utime, path, ns=(atime, mtime), follow_symlinks=False)
        return self._attr(inode=inode)

    # -- namespace: applied to the backing directory at once -----------------------------
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> EntryAttributes:
        path = self._child(parent_inode, name)
        _os(os.mkdir, path, mode & ~ctx.umask)
        attr = self._attr(path=path)
        self._remember(attr.st_ino, path)
        return attr

    def _drop_if_dead(self, inode: int) -> None:
        """Forget the overlay of an inode whose last name is gone and that nobody has open."""
        overlay = self.dirty.get(inode)
        if (
            overlay is not None
            and inode not in self._open_fd
            and os.fstat(overlay.fd).st_nlink == 0
        ):
            os.close(overlay.fd)
            del self.dirty[inode]

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path = self._child(parent_inode, name)
        inode = _os(os.lstat, path).st_ino
        _os(os.unlink, path)
        self._drop_if_dead(inode)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        _os(os.rmdir, self._child(parent_inode, name))

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FUSEError(errno.EINVAL)
        if flags & pyfuse3.RENAME_NOREPLACE and os.path.lexists(new):
            raise FUSEError(errno.EEXIST)
        try:
            replaced: int | None = os.lstat(new).st_ino
        except OSError:
            replaced = None
        _os(os.rename, old, new)
        inode = _os(os.lstat, new).st_ino
        # Re-point the moved inode and everything below it (directories move subtrees).
        prefix = old + os.sep
        for ino, path in list(self._paths.items()):
            if ino == inode and path == old:
                self._paths[ino] = new
            elif path.startswith(prefix):
                self._paths[ino] = new + path[len(old) :]
        if replaced is not None and replaced != inode:
            self._drop_if_dead(replaced)

    async def opendir(self, inode: int, ctx: Any) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        path = self._path(fh)
        entries = []
        for name in _os(os.listdir, path):
            try:
                attr = self._attr(path=os.path.join(path, name))
            except FUSEError:
                continue  # vanished meanwhile
            entries.append((attr.st_ino, name, attr))
        for ino, name, attr in sorted(entries):
            if ino <= start_id:
                continue
            if not pyfuse3.readdir_reply(token, fsencode(name), attr, ino):
                break
            self._remember(ino, os.path.join(path, name))

    async def releasedir(self, fh: int) -> None:
        pass

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        pass  # directory entries are durable as soon as they are made

    async def statfs(self, ctx: Any) -> StatvfsData:
        st = _os(os.statvfs, self.backing)
        out = StatvfsData()
        for name in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail",
        ):  # fmt: skip
            setattr(out, name, getattr(st, name))
        out.f_namemax = st.f_namemax
        return out

    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        return True

    # -- files ---------------------------------------------------------------------------
    def _opened(self, inode: int, path: str, fd: int | None = None) -> FileInfo:
        if inode in self._open_fd:
            if fd is not None:
                os.close(fd)
            self._open_count[inode] += 1
        else:
            self._open_fd[inode] = fd if fd is not None else _os(os.open, path, os.O_RDWR)
            self._open_count[inode] = 1
        # keep_cache=False: the kernel drops its page cache of the file on every open
        return FileInfo(fh=inode, keep_cache=False)

    async def open(self, inode: int, flags: int, ctx: Any) -> FileInfo:
        info = self._opened(inode, self._path(inode))
        if flags & os.O_TRUNC:
            self.set_size(inode, 0)
        return info

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[FileInfo, EntryAttributes]:
        path = self._child(parent_inode, name)
        fd = _os(os.open, path, os.O_RDWR | os.O_CREAT | (flags & os.O_EXCL), mode & ~ctx.umask)
        inode = os.fstat(fd).st_ino
        self._remember(inode, path)
        info = self._opened(inode, path, fd)
        if flags & os.O_TRUNC:
            self.set_size(inode, 0)
        return info, self._attr(inode=inode)

    def _overlay(self, inode: int) -> Overlay:
        overlay = self.dirty.get(inode)
        if overlay is None:
            fd = os.dup(self._open_fd[inode]) if inode in self._open_fd else None
            if fd is None:
                fd = _os(os.open, self._path(inode), os.O_RDWR)
            overlay = Overlay(fd, os.fstat(fd).st_size)
            self.dirty[inode] = overlay
        return overlay

    async def read(self, fh: int, off: int, size: int) -> bytes:
        overlay = self.dirty.get(fh)
        if overlay is not None:
            return overlay.read(off, size)
        return _os(os.pread, self._open_fd[fh], size, off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._overlay(fh).write(off, buf)
        return len(buf)

    def set_size(self, inode: int, size: int) -> None:
        """Truncate: a shrink below the durable size is durable at once (the backing file is
        truncated); growth is un-synced like data (the file reverts on a crash)."""
        overlay = self.dirty.get(inode)
        if overlay is not None:
            durable = os.fstat(overlay.fd).st_size
            if size < durable:
                _os(os.ftruncate, overlay.fd, size)
            if size < overlay.size:
                overlay.shrink(size)
            else:
                overlay.size = size
            self._maybe_clean(inode)
            return
        fd = self._open_fd.get(inode)
        durable = (os.fstat(fd) if fd is not None else _os(os.lstat, self._path(inode))).st_size
        if size < durable:
            if fd is not None:
                _os(os.ftruncate, fd, size)
            else:
                _os(os.truncate, self._path(inode), size)
        elif size > durable:
            self._overlay(inode).size = size

    def _maybe_clean(self, inode: int) -> None:
        overlay = self.dirty[inode]
        if not overlay.pages and overlay.size == os.fstat(overlay.fd).st_size:
            os.close(overlay.fd)
            del self.dirty[inode]

    def sync_inode(self, inode: int) -> int:
        """Make the inode's overlay durable: pwrite its pages, set the size, fsync."""
        overlay = self.dirty.pop(inode, None)
        if overlay is None:
            return 0
        try:
            written = 0
            for index in sorted(overlay.pages):
                start = index * PAGE
                if start >= overlay.size:
                    continue
                chunk = overlay.pages[index][: overlay.size - start]
                os.pwrite(overlay.fd, chunk, start)
                written += len(chunk)
            os.ftruncate(overlay.fd, overlay.size)
            os.fsync(overlay.fd)
        except OSError as exc:
            self.dirty[inode] = overlay  # keep it un-synced; the caller sees the error
            raise FUSEError(exc.errno or errno.EIO) from None
        os.close(overlay.fd)
        self.synced_bytes += overlay.written
        self.syncs += 1
        return overlay.written

    async def fsync(self, fh: int, datasync: bool) -> None:
        self.sync_inode(fh)

    async def flush(self, fh: int) -> None:
        pass  # close() does not make data durable

    async def release(self, fh: int) -> None:
        if self._open_count.get(fh, 0) > 1:
            self._open_count[fh] -= 1
            return
        self._open_count.pop(fh, None)
        fd = self._open_fd.pop(fh, None)
        if fd is not None:
            os.close(fd)
        if fh not in self._lookups:
            self._paths.pop(fh, None)
        self._drop_if_dead(fh)

    # -- control -------------------------------------------------------------------------
    def writeback(self) -> dict[str, int]:
        files = len(self.dirty)
        written = sum(self.sync_inode(inode) for inode in list(self.dirty))
        return {"files": files, "bytes": written}

    def stats(self) -> dict[str, Any]:
        files = []
        for inode, overlay in self.dirty.items():
            files.append(
                {
                    "inode": inode,
                    "path": os.path.relpath(self._paths.get(inode, "?"), self.backing),
                    "size": overlay.size,
                    "durable_size": os.fstat(overlay.fd).st_size,
                    "unsynced_write_bytes": overlay.written,
                    "dirty_page_bytes": overlay.dirty_bytes(),
                }
            )
        return {
            "dirty_files": len(files),
            "unsynced_write_bytes": sum(f["unsynced_write_bytes"] for f in files),
            "dirty_page_bytes": sum(f["dirty_page_bytes"] for f in files),
            "open_files": len(self._open_fd),
            "synced_bytes_total": self.synced_bytes,
            "syncs_total": self.syncs,
            "files": files,
        }


async def serve_control(ops: LossyOperations, path: str) -> None:
    """Newline-delimited JSON on a Unix socket: {"cmd": "stats"|"writeback"|"ping"}."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    await sock.bind(path)
    sock.listen(8)
    listener = trio.SocketListener(sock)

    async def handle(stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    try:
                        cmd = json.loads(line)["cmd"]
                        if cmd == "stats":
                            reply: dict[str, Any] = {"ok": True, **ops.stats()}
                        elif cmd == "writeback":
                            reply = {"ok": True, **ops.writeback()}
                        elif cmd == "ping":
                            reply = {"ok": True, "pid": os.getpid()}
                        else:
                            reply = {"ok": False, "error": f"unknown command {cmd!r}"}
                    except Exception as exc:
                        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    await stream.send_all(json.dumps(reply).encode() + b"\n")

    await trio.serve_listeners(handle, [listener])


async def _main(ops: LossyOperations, control: str | None) -> None:
    async with trio.open_nursery() as nursery:
        if control is not None:
            nursery.start_soon(serve_control, ops, control)

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()  # main() returns; close() unmounts
                    return

        nursery.start_soon(on_signals)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def run(mountpoint: str, backing: str, control: str | None, debug: bool = False) -> None:
    ops = LossyOperations(backing)
    options = set(pyfuse3.default_options)
    options.add("fsname=faultfs")
    options.add("subtype=lossy")
    if debug:
        options.add("debug")
    pyfuse3.init(ops, mountpoint, options)
    log.info("mounted %s on %s (pid %d)", backing, mountpoint, os.getpid())
    try:
        trio.run(_main, ops, control)
    except BaseException:
        pyfuse3.close(unmount=False)
        raise
    stats = ops.stats()
    log.info(
        "unmounting; dropping %d un-synced bytes in %d files",
        stats["unsynced_write_bytes"],
        stats["dirty_files"],
    )
    pyfuse3.close(unmount=True)
    if control is not None and os.path.exists(control):
        os.unlink(control)
