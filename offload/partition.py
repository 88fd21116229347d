"""One partition's offload state, sans-IO: fetch position, buffer, committed manifest, lag.

The tailer appends what Fetch returned (:meth:`PartitionState.take_fetch`); the uploader
asks whether it is time to upload (:meth:`due`), cuts the buffered prefix into a segment
(:meth:`cut`) and, once the manifest commit succeeded, drops it (:meth:`committed`). Times
are the caller's monotonic clock, so everything here is testable without a clock or socket.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field

from . import manifest as mf
from . import segment_codec
from .coverage import Coverage


class Diverged(Exception):
    """The broker's log ends below what S3 already has: it lost data (or was truncated)."""


@dataclass(slots=True)
class Cut:
    """A buffered prefix on its way to S3."""

    data: bytes
    covers_from: int
    info: segment_codec.LogInfo


@dataclass(eq=False, slots=True)
class PartitionState:
    topic: str
    topic_id: uuid.UUID
    partition: int
    manifest: mf.Manifest  # committed (version 0: nothing stored yet)
    etag: str | None  # of the stored manifest; None: none stored
    position: int  # next offset to fetch
    buffer: bytearray = field(default_factory=bytearray)
    buffer_from: int = 0  # the offset the buffer covers from
    buffered_at: float | None = None  # when the oldest buffered byte was fetched
    high_watermark: int = 0
    log_start: int = 0
    #: (high watermark, time first seen) of fetches: the oldest with hw > committed next
    #: offset says since when S3 has been missing an offset the broker had.
    marks: deque[tuple[int, float]] = field(default_factory=deque)
    #: Start time of the latest fetch after which S3 had everything up to that fetch's high
    #: watermark (for WAL entries whose offset is not known, e.g. acks=0).
    synced_at: float = -1.0
    last_commit_at: float = 0.0
    uploading: bool = False
    generation: int = 0  # +1 whenever the buffer is thrown away (an upload's cut goes stale)
    stopped: str = ""  # why offload of this partition stopped ("" = running)
    #: Stopped because the broker's log ended at this offset, below the S3 copy: rechecked
    #: (:meth:`Offloader.recheck_diverged`) until the log holds the copy again, as after the
    #: WAL repair of a lost page cache. None: not diverged.
    diverged_at: int | None = None

    @property
    def committed_next(self) -> int:
        return self.manifest.next_offset

    def report_to(self, coverage: Coverage, synced_at: float | None = None) -> None:
        """Tell ``coverage`` what the committed copy holds (``synced_at`` None: ours)."""
        coverage.update(
            self.topic,
            self.topic_id,
            self.partition,
            self.committed_next,
            self.synced_at if synced_at is None else synced_at,
            self.manifest.open_first_offsets,
        )

    # -- tailer side ------------------------------------------------------------------------
    def take_fetch(
        self, records: bytes, high_watermark: int, log_start: int, started_at: float, now: float
    ) -> int:
        """Append the whole batches of a Fetch at :attr:`position`; returns bytes kept."""
        self.high_watermark = high_watermark
        self.log_start = max(self.log_start, log_start)
        if not self.marks or high_watermark > self.marks[-1][0]:
            self.marks.append((high_watermark, started_at))
            if len(self.marks) > 256:  # bounded; the oldest mark stays, it defines the lag
                del self.marks[1]
        n, base, last = segment_codec.fetched_span(records, self.position)
        if n:
            if not self.buffer:
                self.buffer_from = base
                self.buffered_at = now
            self.buffer += memoryview(records)[:n]
            self.position = last + 1
        elif self.position >= high_watermark and not self.buffer:
            self._note_synced(started_at)
        return n

    def jump_to_log_start(self, log_start: int) -> int:
        """The broker deleted offsets below ``log_start`` before we fetched them: drop the
        buffer and continue there. Returns how many offsets were never copied."""
        skipped = max(0, log_start - max(self.position, self.committed_next))
        self.generation += 1
        self.buffer.clear()
        self.buffered_at = None
        self.position = log_start
        self.buffer_from = log_start
        self.log_start = log_start
        return skipped

    def check_not_behind(self, log_end: int) -> None:
        """Stop (:attr:`diverged_at`) and raise :class:`Diverged` if the broker's log ends
        below what S3 has."""
        if log_end < self.committed_next:
            self.diverged_at = log_end
            self.stopped = (
                f"{self.topic}-{self.partition}: the broker's log ends at {log_end} but S3 "
                f"already has offsets up to {self.committed_next - 1}"
            )
            raise Diverged(self.stopped)

    def segments_to_compare(self) -> tuple[mf.SegmentRef, ...]:
        """The committed segments holding offsets the diverged broker log had lost."""
        assert self.diverged_at is not None
        return tuple(r for r in self.manifest.segments if r.last_offset >= self.diverged_at)

    def rejoin(self) -> None:
        """The broker's log holds the S3 copy again (the WAL repair restored the lost tail,
        batch for batch): go on from the committed manifest."""
        self.diverged_at = None
        self.stopped = ""
        self.resync(self.manifest, self.etag)

    def differs(self, why: str) -> None:
        """The broker's log holds other batches than the S3 copy at the same offsets: stop for
        good (an operator decides which copy is right; docs/operations.md)."""
        self.diverged_at = None
        self.stopped = f"{self.topic}-{self.partition}: {why}"

    # -- uploader side ----------------------------------------------------------------------
    def due(self, now: float, object_bytes: int, max_lag_s: float) -> bool:
        if self.uploading or self.stopped or not self.buffer:
            return False
        assert self.buffered_at is not None
        return len(self.buffer) >= object_bytes or now - self.buffered_at >= max_lag_s

    def cut(self, object_bytes: int) -> Cut:
        """The buffered prefix to upload: whole batches, about ``object_bytes`` (a single
        batch larger than that goes alone)."""
        view = memoryview(self.buffer)
        end = segment_codec.whole_batches(view[:object_bytes]) or segment_codec.whole_batches(
            view[: _first_batch_len(view)]
        )
        data = bytes(view[:end])
        return Cut(data, self.buffer_from, segment_codec.describe(data, self.buffer_from))

    def committed(
        self, cut: Cut, generation: int, manifest: mf.Manifest, etag: str, now: float
    ) -> None:
        """The manifest naming ``cut`` is stored: drop the prefix from the buffer (unless the
        buffer was thrown away meanwhile)."""
        if generation == self.generation:
            del self.buffer[: len(cut.data)]
            self.buffer_from = cut.info.last_offset + 1
            self.buffered_at = now if self.buffer else None
        self._commit(manifest, etag, now)

    def _commit(self, manifest: mf.Manifest, etag: str, now: float) -> None:
        self.manifest = manifest
        self.etag = etag
        self.last_commit_at = now
        while self.marks and self.marks[0][0] <= manifest.next_offset:
            hw, seen = self.marks.popleft()
            if manifest.next_offset >= hw:
                self._note_synced(seen)

    def commit_log_start(self, manifest: mf.Manifest, etag: str, now: float) -> None:
        self._commit(manifest, etag, now)

    def _note_synced(self, started_at: float) -> None:
        self.synced_at = max(self.synced_at, started_at)

    def resync(self, manifest: mf.Manifest, etag: str | None) -> None:
        """Another writer committed: continue from its manifest, refetching what we had."""
        self.manifest = manifest
        self.etag = etag
        self.generation += 1
        self.buffer.clear()
        self.buffered_at = None
        self.position = manifest.next_offset
        self.buffer_from = manifest.next_offset

    # -- lag ---------------------------------------------------------------------------------
    def lag(self, now: float) -> tuple[int, int, float]:
        """(offsets, bytes, seconds) the S3 copy trails the broker by."""
        offsets = max(0, self.high_watermark - self.committed_next)
        seconds = 0.0
        for hw, seen in self.marks:
            if hw > self.committed_next:
                seconds = max(0.0, now - seen)
                break
        return offsets, len(self.buffer), seconds


def _first_batch_len(view: memoryview) -> int:
    return int.from_bytes(view[8:12], "big", signed=True) + 12
