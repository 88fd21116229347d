"""The storage boundary: what the WAL needs from "a place that stores segments".

The writer, recovery and readers only talk to these protocols, so a different
medium (an S3-object backend, the in-memory crash simulator used by the tests)
can be plugged in without touching callers.  All methods are *blocking*; the
WAL calls them from worker threads (`trio.to_thread.run_sync`).

Contract, which the crash tests rely on:

* ``SegmentHandle.write_at`` may be volatile until ``sync`` returns; after
  ``sync`` returns every earlier ``write_at`` of that handle is durable.
* ``create_segment``, ``recycle_segment``, ``retire_segment``,
  ``write_superblock`` and ``save_aside`` are durable when they return (file
  data *and* the directory entry).
* Any OSError is final for the WAL (it fences): no method is retried.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class SegmentHandle(Protocol):
    """An open segment file."""

    def write_at(self, offset: int, data: memoryview) -> None:
        """Write all of `data` at `offset` (offset, length and buffer are block aligned)."""

    def sync(self) -> None:
        """Make every earlier write_at durable (no-op when writes are already synchronous)."""

    def read_at(self, offset: int, size: int) -> bytes:
        """Read up to `size` bytes (short only at end of file)."""

    def size(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """A WAL directory (or its equivalent on another medium)."""

    #: True when writes bypass the page cache (O_DIRECT).
    direct_io: bool
    #: Required alignment of write offsets, lengths and buffers.
    alignment: int

    def describe(self, name: str) -> str:
        """Human-readable location of `name` for error messages (a path)."""

    def lock(self) -> None:
        """Take the single-writer lock; raise WalLockedError if held elsewhere."""

    def unlock(self) -> None: ...

    def list_segments(self) -> list[str]:
        """Names of segment files (``seg-*.wal``), any order."""

    def list_spares(self) -> list[str]:
        """Names of retired segment files kept for reuse."""

    def create_segment(self, name: str, size: int, header: bytes, zero_fill: bool) -> None:
        """Atomically create a preallocated segment of `size` bytes starting with `header`."""

    def create_spare(self, name: str, size: int) -> None:
        """Create a preallocated (zero-filled) spare file for later `recycle_segment`."""

    def recycle_segment(self, spare: str, name: str, header: bytes) -> None:
        """Turn spare file `spare` into segment `name` whose first bytes are `header`."""

    def open_segment(self, name: str, *, write: bool) -> SegmentHandle: ...

    def truncate_segment(self, name: str, size: int) -> None:
        """Cut a segment file to `size` bytes, durably (torn-tail repair)."""

    def retire_segment(self, name: str, spare_name: str | None) -> None:
        """Delete segment `name`, or rename it to `spare_name` for reuse."""

    def read_superblock(self) -> bytes | None:
        """Both superblock slots (2 * SLOT_SIZE bytes), or None if there is none."""

    def write_superblock(self, slot: int, data: bytes) -> None:
        """Overwrite superblock slot `slot` durably."""

    def save_aside(self, name: str, data: bytes) -> None:
        """Durably store bytes cut from a torn tail under `name` for post-mortems."""

    def remove_temporaries(self) -> None:
        """Delete leftovers of interrupted atomic creations."""

    def used_bytes(self) -> int:
        """Bytes occupied by segment files (for the size cap and metrics)."""
