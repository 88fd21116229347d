"""An in-memory Backend that simulates crashes, for tests (ours and the proxy's).

It tracks, per file, the *durable* image and the list of writes issued since
the last sync.  `crash(rng)` returns a new backend holding what a machine
could find after power loss: the durable image plus, for every unsynced
sector, independently one of {the new data, the old data, garbage}.  Sector
granularity (default 512 bytes) models devices that only promise atomic sector
writes.  It can also be told to fail an operation with an errno (EIO, ENOSPC)
or to "lose power" after N mutating operations.
"""

from __future__ import annotations

import errno
import random
import threading
from dataclasses import dataclass, field

from .errors import WalLockedError
from .segment import SEG_PREFIX, SEG_SUFFIX
from .superblock import SLOT_SIZE

SUPERBLOCK = "superblock"


class SimulatedCrash(OSError):
    """Raised by every operation once the simulated machine has lost power."""

    def __init__(self) -> None:
        super().__init__(errno.EIO, "simulated power loss")


@dataclass
class MemFile:
    durable: bytearray = field(default_factory=bytearray)
    current: bytearray = field(default_factory=bytearray)
    pending: list[tuple[int, bytes]] = field(default_factory=list)

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end > len(self.current):
            self.current.extend(bytes(end - len(self.current)))
        self.current[offset:end] = data
        self.pending.append((offset, bytes(data)))

    def sync(self) -> None:
        for off, data in self.pending:
            end = off + len(data)
            if end > len(self.durable):
                self.durable.extend(bytes(end - len(self.durable)))
            self.durable[off:end] = data
        self.pending.clear()


class MemSegment:
    def __init__(self, backend: MemoryBackend, name: str, write: bool):
        self._b = backend
        self.name = name
        self._write = write

    def write_at(self, offset: int, data: memoryview) -> None:
        b = self._b
        with b.mutex:
            b._op("write")
            if len(data) % b.alignment or offset % b.alignment:
                raise OSError(errno.EINVAL, "unaligned write")
            f = b._file(self.name)
            if b.capacity is not None and offset + len(data) > len(f.current):
                if b._total() + offset + len(data) - len(f.current) > b.capacity:
                    raise OSError(errno.ENOSPC, "no space left (simulated)")
            f.write(offset, bytes(data))

    def sync(self) -> None:
        b = self._b
        with b.mutex:
            b._op("sync")
            if not b.ignore_sync:
                b._file(self.name).sync()

    def read_at(self, offset: int, size: int) -> bytes:
        with self._b.mutex:
            self._b._check_alive()
            return bytes(self._b._file(self.name).current[offset : offset + size])

    def size(self) -> int:
        with self._b.mutex:
            return len(self._b._file(self.name).current)

    def close(self) -> None:
        pass


class MemoryBackend:
    """See module docstring.  Namespace operations are durable when they return."""

    def __init__(self, *, alignment: int = 512, direct_io: bool = True):
        self.alignment = alignment
        self.direct_io = direct_io
        self.files: dict[str, MemFile] = {}
        self.mutex = threading.RLock()
        self.locked = False
        self.dead = False
        #: lose power when this many more mutating operations have been started
        self.crash_after: int | None = None
        #: fail the next matching operation ("write", "sync", "create", ...) with an errno
        self.fail_next: dict[str, int] = {}
        #: negative control: segment sync() does nothing (the "forgot to fsync" bug)
        self.ignore_sync = False
        #: simulated device size in bytes (ENOSPC beyond it)
        self.capacity: int | None = None
        self.ops = 0

    # -- fault injection --------------------------------------------------------
    def _check_alive(self) -> None:
        if self.dead:
            raise SimulatedCrash()

    def _op(self, kind: str) -> None:
        self._check_alive()
        self.ops += 1
        if self.crash_after is not None:
            if self.crash_after <= 0:
                self.dead = True
                raise SimulatedCrash()
            self.crash_after -= 1
        err = self.fail_next.pop(kind, None)
        if err is not None:
            raise OSError(err, f"injected {errno.errorcode.get(err, err)} on {kind}")

    def _file(self, name: str) -> MemFile:
        try:
            return self.files[name]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "no such segment", name) from None

    def _total(self) -> int:
        return sum(len(f.current) for f in self.files.values())

    def crash(
        self,
        rng: random.Random,
        *,
        p_keep: float = 0.4,
        p_drop: float = 0.4,
        sector: int | None = None,
    ) -> MemoryBackend:
        """The state a reboot could find: unsynced sectors kept, dropped or garbled."""
        sector = sector or self.alignment
        with self.mutex:
            nb = MemoryBackend(alignment=self.alignment, direct_io=self.direct_io)
            for name, f in self.files.items():
                img = bytearray(f.durable)
                for off, data in f.pending:
                    for s in range(0, len(data), sector):
                        chunk = data[s : s + sector]
                        r = rng.random()
                        if r < p_drop:
                            continue
                        if r >= p_keep + p_drop:
                            chunk = rng.randbytes(len(chunk))
                        start = off + s
                        if start + len(chunk) > len(img):
                            img.extend(bytes(start + len(chunk) - len(img)))
                        img[start : start + len(chunk)] = chunk
                # file size (metadata) of a preallocated file is durable; keep it
                if len(img) < len(f.current):
                    img.extend(bytes(len(f.current) - len(img)))
                nb.files[name] = MemFile(durable=bytearray(img), current=bytearray(img))
            return nb

    # -- Backend protocol -------------------------------------------------------
    def describe(self, name: str) -> str:
        return f"mem:{name}"

    def lock(self) -> None:
        with self.mutex:
            if self.locked:
                raise WalLockedError("memory WAL is locked by another writer")
            self.locked = True

    def unlock(self) -> None:
        with self.mutex:
            self.locked = False

    def list_segments(self) -> list[str]:
        with self.mutex:
            self._check_alive()
            return [n for n in self.files if n.startswith(SEG_PREFIX) and n.endswith(SEG_SUFFIX)]

    def list_spares(self) -> list[str]:
        with self.mutex:
            self._check_alive()
            return [n for n in self.files if n.startswith("spare-")]

    def used_bytes(self) -> int:
        with self.mutex:
            return sum(len(f.current) for n, f in self.files.items() if n.startswith(SEG_PREFIX))

    def create_segment(self, name: str, size: int, header: bytes, zero_fill: bool) -> None:
        with self.mutex:
            self._op("create")
            if self.capacity is not None and self._total() + size > self.capacity:
                raise OSError(errno.ENOSPC, "no space left (simulated)")
            img = bytearray(size)
            img[: len(header)] = header
            self.files[name] = MemFile(durable=bytearray(img), current=bytearray(img))

    def create_spare(self, name: str, size: int) -> None:
        with self.mutex:
            self._op("create")
            if self.capacity is not None and self._total() + size > self.capacity:
                raise OSError(errno.ENOSPC, "no space left (simulated)")
            self.files[name] = MemFile(durable=bytearray(size), current=bytearray(size))

    def recycle_segment(self, spare: str, name: str, header: bytes) -> None:
        with self.mutex:
            self._op("create")
            f = self.files.pop(spare)
            f.sync()
            f.current[: len(header)] = header
            f.durable[: len(header)] = header
            self.files[name] = f

    def open_segment(self, name: str, *, write: bool) -> MemSegment:
        with self.mutex:
            self._check_alive()
            self._file(name)
            return MemSegment(self, name, write)

    def truncate_segment(self, name: str, size: int) -> None:
        with self.mutex:
            self._op("truncate")
            f = self._file(name)
            f.sync()
            del f.current[size:]
            del f.durable[size:]

    def retire_segment(self, name: str, spare_name: str | None) -> None:
        with self.mutex:
            self._op("retire")
            f = self.files.pop(name)
            if spare_name is not None:
                f.sync()
                self.files[spare_name] = f

    def read_superblock(self) -> bytes | None:
        with self.mutex:
            self._check_alive()
            f = self.files.get(SUPERBLOCK)
            return None if f is None else bytes(f.current)

    def write_superblock(self, slot: int, data: bytes) -> None:
        with self.mutex:
            self._op("superblock_write")
            f = self.files.setdefault(SUPERBLOCK, MemFile())
            f.write(slot * SLOT_SIZE, data)
        with self.mutex:
            self._op("superblock_sync")
            f.sync()

    def save_aside(self, name: str, data: bytes) -> None:
        with self.mutex:
            self._op("save_aside")
            self.files[name] = MemFile(durable=bytearray(data), current=bytearray(data))

    def remove_temporaries(self) -> None:
        pass

    def aside_files(self) -> list[str]:
        return [n for n in self.files if n.startswith("torn-")]


__all__ = ["MemoryBackend", "SimulatedCrash"]
