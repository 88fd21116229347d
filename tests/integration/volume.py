"""A small file system of a test's own, to fill up: an ext4 image loop-mounted on a directory.

    with LoopVolume(image, mountpoint, size_mib=64) as vol:
        ...              # use mountpoint (Direct IO works: it is a real ext4)
        vol.fill()       # take every free byte (a ballast file): the next allocation ENOSPCs
        vol.drain()      # give it back

Needs root (``mount -o loop``) and ``mkfs.ext4``; a failure raises :class:`VolumeError`
naming the command. ``-m 0``: no blocks reserved for root, so ``fill`` leaves nothing even
for a process running as root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

from tests.faultfs import mounted

BALLAST = "nemesis-ballast.fill"


class VolumeError(RuntimeError):
    """The loop volume could not be made, mounted or unmounted."""


def _run(*argv: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise VolumeError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")


class LoopVolume:
    def __init__(self, image: Path, mountpoint: Path, *, size_mib: int) -> None:
        self.image, self.mountpoint, self.size_mib = image, mountpoint, size_mib

    def __enter__(self) -> LoopVolume:
        if mounted(self.mountpoint):  # left over from a killed run
            _run("umount", "-l", str(self.mountpoint))
        self.image.parent.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(self.size_mib * 2**20)
        _run("mkfs.ext4", "-q", "-F", "-m", "0", str(self.image))
        _run("mount", "-o", "loop", str(self.image), str(self.mountpoint))
        with contextlib.suppress(OSError):  # the directory is its user's alone (a WAL)
            (self.mountpoint / "lost+found").rmdir()
        return self

    def __exit__(self, *exc: object) -> None:
        if mounted(self.mountpoint):
            try:
                _run("umount", str(self.mountpoint))
            except VolumeError:  # still busy: detach, the kernel frees it when unused
                _run("umount", "-l", str(self.mountpoint))
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()

    def free_bytes(self) -> int:
        st = os.statvfs(self.mountpoint)
        return st.f_bfree * st.f_frsize

    def fill(self) -> int:
        """Allocate every free block to a ballast file; returns its size."""
        path = self.mountpoint / BALLAST
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            chunk = 1 << 20
            while chunk >= 4096:  # grow until nothing more fits, then in smaller steps
                try:
                    os.posix_fallocate(fd, size, chunk)
                    size += chunk
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
            os.fsync(fd)
            return size
        finally:
            os.close(fd)

    def drain(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.mountpoint / BALLAST).unlink()
