"""A lossy passthrough FUSE file system for crash tests (see README.md in this folder).

    with LossyMount(backing_dir, mountpoint) as fs:
        ...  # write through mountpoint; only fsynced data is durable
        fs.stats()      # un-synced bytes and dirty files
        fs.crash()      # every un-synced write is gone; the mount is back, fresh
        fs.writeback()  # make everything durable

The file system runs as a separate process (``python -m tests.faultfs``); this module only
talks to it, so importing it does not need pyfuse3.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

_LIVE: set[LossyMount] = set()


class FaultFsError(RuntimeError):
    """The lossy file system could not be mounted, controlled or unmounted."""


def mounted(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a mount point (also true for a dead FUSE mount)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].encode().decode("unicode_escape")
            if mnt == target:
                return True
    return False


def unmount(path: str | os.PathLike[str], timeout: float = 1.5) -> None:
    """Unmount ``path``; a lazy unmount if it stays busy. Never leaves the mount behind."""
    path = os.path.realpath(path)
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    deadline = time.monotonic() + timeout
    last = ""
    while mounted(path):
        if time.monotonic() > deadline:
            break
        cmd = [fusermount, "-u", "-q", path] if fusermount else ["umount", path]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode == 0 and not mounted(path):
            return
        last = (res.stderr or res.stdout).strip()
        time.sleep(0.1)
    if mounted(path):  # busy (a process still has files open): detach it lazily
        cmd = [fusermount, "-u", "-z", "-q", path] if fusermount else ["umount", "-l", path]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or mounted(path):
            raise FaultFsError(f"cannot unmount {path}: {last} / {res.stderr.strip()}")


class LossyMount:
    """Mount a lossy view of ``backing_dir`` on ``mountpoint`` for the life of the context.

    ``writeback_on_exit``: make un-synced data durable before the final unmount (like a clean
    shutdown of a real machine); False drops it (like a crash).
    """

    def __init__(
        self,
        backing_dir: str | os.PathLike[str],
        mountpoint: str | os.PathLike[str],
        *,
        control: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        writeback_on_exit: bool = True,
        debug: bool = False,
    ) -> None:
        self.backing = Path(backing_dir).resolve()
        self.mountpoint = Path(mountpoint).resolve()
        # Unix socket paths are limited to 107 bytes: keep the socket short, in /tmp.
        self.control = Path(control) if control else Path(f"/tmp/faultfs-{id(self):x}.sock")
        self.log_path = Path(log_path) if log_path else self.backing.with_suffix(".faultfs.log")
        self.writeback_on_exit = writeback_on_exit
        self.debug = debug
        self.proc: subprocess.Popen[bytes] | None = None
        self.crashes = 0

    # -- process life cycle --------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> LossyMount:
        if not os.path.exists("/dev/fuse"):
            raise FaultFsError("/dev/fuse is missing: FUSE is not available on this machine")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if mounted(self.mountpoint):  # left over from a killed run
            unmount(self.mountpoint)
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()
        argv = [sys.executable, "-m", "tests.faultfs", str(self.mountpoint), str(self.backing)]
        argv += ["--control", str(self.control)] + (["--debug"] if self.debug else [])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise FaultFsError(
                    f"faultfs exited with {self.proc.returncode} while mounting:\n{self.tail()}"
                )
            if mounted(self.mountpoint) and self.control.exists():
                with contextlib.suppress(OSError, FaultFsError):
                    self._call("ping", timeout=2.0)
                    return self
            if time.monotonic() > deadline:
                self._kill()
                raise FaultFsError(f"faultfs not ready after {timeout}s:\n{self.tail()}")
            time.sleep(0.05)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        unmount(self.mountpoint)

    def stop(self) -> None:
        """Unmount (after a write-back if ``writeback_on_exit``) and end the process."""
        if self.proc is None:
            return
        try:
            if self.writeback_on_exit and self.proc.poll() is None:
                with contextlib.suppress(OSError, FaultFsError):
                    self.writeback()
            with contextlib.suppress(FaultFsError):
                unmount(self.mountpoint)
            try:  # after a lazy unmount the process lingers while files stay open
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self._kill()
        finally:
            self._kill()  # no-op when already gone; always leaves no mount behind
            _LIVE.discard(self)
            self.proc = None

    def __enter__(self) -> LossyMount:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # -- commands ------------------------------------------------------------------------
    def _call(self, cmd: str, timeout: float = 60.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.control))
            s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                data = s.recv(1 << 20)
                if not data:
                    raise FaultFsError(f"faultfs closed the control socket during {cmd!r}")
                buf += data
        reply = json.loads(buf)
        if not reply.pop("ok", False):
            raise FaultFsError(f"faultfs {cmd!r} failed: {reply.get('error')}")
        return reply

    def stats(self) -> dict[str, Any]:
        """``dirty_files``, ``unsynced_write_bytes``, ``dirty_page_bytes``, ``open_files``,
        ``synced_bytes_total``, ``syncs_total`` and ``files`` (one dict per dirty file)."""
        return self._call("stats")

    def writeback(self) -> dict[str, int]:
        """Make every un-synced write durable, as if each dirty file were fsynced."""
        return self._call("writeback")

    def crash(self, *, wait_idle: float = 10.0, force: bool = False) -> dict[str, Any]:
        """Lose every un-synced write: SIGKILL the file system process (its memory is the
        volatile cache), unmount the dead mount (the kernel's page cache of it goes too) and
        mount the backing directory again. Returns the stats from just before the crash.

        Files must be closed first (kill the processes using the mount): the FS waits up to
        ``wait_idle`` seconds for open files to reach zero, and raises unless ``force``.
        """
        assert self.proc is not None, "not mounted"
        deadline = time.monotonic() + wait_idle
        while True:
            before = self.stats()
            if before["open_files"] == 0 or force:
                break
            if time.monotonic() > deadline:
                raise FaultFsError(
                    f"{before['open_files']} files still open on {self.mountpoint} after "
                    f"{wait_idle}s; stop their users before crash() (or force=True)"
                )
            time.sleep(0.05)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        unmount(self.mountpoint)
        self.proc = None
        self.crashes += 1
        self.start()
        return before


@atexit.register
def _unmount_leftovers() -> None:
    for mount in list(_LIVE):
        with contextlib.suppress(Exception):
            mount._kill()
