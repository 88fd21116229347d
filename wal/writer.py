"""The trio shell: `open_wal`, the group-commit writer task, trim and readers.

Concurrency model, and why it is safe:

* All bookkeeping (queue, LSNs, segment index) lives on the trio thread.
  Blocking I/O runs in worker threads via `trio.to_thread.run_sync` and never
  touches that state; results are applied after the thread returns.
* Appends are packed into *groups* as they arrive (one group = one aligned
  write + sync); LSNs are assigned in arrival order, so FIFO order is LSN order.
  Each group has one wake-up list shared by all its appenders.
* Up to `max_inflight_groups` group writes are in flight at once.  The next
  group is encoded (on the trio thread) while earlier ones are on the disk.
  Groups are acknowledged strictly in LSN order: a group is published only once
  it and every group before it are durable.
* Recovery stays sound with several writes in flight because each group start
  records `back`: how far behind it the durable frontier was when it was issued.
  A hole before a group whose frontier is at or before the hole is a torn
  in-flight window (a crash); a hole before a group issued after the hole was
  durable is corruption.  The window never spans segments: a roll waits for
  every write in flight, and SEAL groups are written with nothing in flight.
* An error of any write or sync fences the WAL (see WalFencedError): nothing
  more is issued, nothing more is acknowledged, and once the writes already in
  flight have returned every waiting append fails.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import functools
import mmap
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol, TypeVar

import structlog
import trio
from outcome import capture as outcome_capture
from trio.lowlevel import (
    Abort,
    ParkingLot,
    Task,
    TrioToken,
    current_task,
    current_trio_token,
    reschedule,
    start_thread_soon,
    wait_task_rescheduled,
)

from . import metrics
from .backend import Backend, SegmentHandle
from .config import WalConfig
from .dio import aligned_buffer
from .errors import (
    WalClosedError,
    WalEntryTooLargeError,
    WalError,
    WalFencedError,
    WalTrimmedError,
)
from .file_backend import FileBackend
from .group_plan import GroupPlan, PlannedGroup
from .reader import Entry, SegmentInfo, read_segment
from .record import (
    HEADER_SIZE,
    MAX_BACK_BLOCKS,
    MAX_USER_TYPE,
    RECORD_ALIGN,
    TYPE_SEAL,
    align_up,
    encode_group,
)
from .recovery import analyze, repair
from .segment import SegmentHeader, encode_segment_header, segment_name
from .superblock import SB_VERSION, Superblock, encode_superblock, initial_superblock

if TYPE_CHECKING:
    from outcome import Outcome  # trio's result type (what start_thread_soon delivers)

log = structlog.get_logger("wal")

Payload = bytes | bytearray | memoryview
_REC_EXTRA = HEADER_SIZE + RECORD_ALIGN - 1  # record size = (len + _REC_EXTRA) & -RECORD_ALIGN


class _Group(PlannedGroup):
    """Entries that will share one aligned write + sync, and the tasks waiting for it
    (what goes where is planned by ``wal.group_plan``)."""

    __slots__ = (
        "back",
        "buf",
        "done",
        "elapsed",
        "entries",
        "error",
        "offset",
        "t0",
        "waiters",
        "written",
    )

    def __init__(self, first_lsn: int, t0: float) -> None:
        super().__init__(first_lsn)
        self.entries: list[tuple[int, Payload]] = []
        self.t0 = t0  # when its first append arrived
        self.waiters: dict[Task, None] = {}
        self.offset = 0
        self.back = 0
        self.buf: mmap.mmap | None = None
        self.written = False  # its write + sync returned successfully
        self.elapsed = 0.0
        self.done = False  # acknowledged (or failed: error set)
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None) -> None:
        """Acknowledge (error None) or fail every append of the group; wake them."""
        self.error = error
        self.done = True
        for task in self.waiters:
            reschedule(task)
        self.waiters.clear()


class Submission:
    """Entries queued by `Wal.submit_many`; `wait()` returns their LSNs once durable."""

    __slots__ = ("_count", "_first", "_group", "_wal")

    def __init__(self, wal: Wal, group: _Group, first: int, count: int) -> None:
        self._wal = wal
        self._group = group
        self._first = first
        self._count = count

    @property
    def last_lsn(self) -> int:
        """The LSN of its last entry (``first - 1`` when empty): durable once
        ``Wal.last_durable_lsn`` reaches it."""
        return self._first + self._count - 1

    async def wait(self) -> list[int]:
        await self._wal._wait(self._group)
        return list(range(self._first, self._first + self._count))


class Wal:
    """An open write-ahead log; create it with `open_wal`."""

    def __init__(self, backend: Backend, config: WalConfig):
        self._backend = backend
        self._cfg = config
        self._block = max(4096, backend.alignment, config.block_size or 0)
        if self._block % backend.alignment:
            raise ValueError(
                f"block_size {self._block} is not a multiple of the backend "
                f"alignment {backend.alignment}"
            )
        self._data_offset = self._block
        if config.segment_size % self._block or config.segment_size < 4 * self._block:
            raise ValueError("segment_size must be a multiple of the block size and >= 4 blocks")
        if not 1 <= config.max_inflight_groups <= 64:
            raise ValueError("max_inflight_groups must be in 1..64")
        # room for records in a segment: all but the header block and a seal block
        self._seg_capacity = config.segment_size - self._block
        self._fresh_room = self._seg_capacity - self._data_offset
        self.max_entry_size = self._fresh_room - HEADER_SIZE
        self._max_segments = (
            max(2, config.max_bytes // config.segment_size) if config.max_bytes else None
        )
        self._max_group_bytes = max(config.max_group_bytes, self._block)
        self._max_pending_bytes = config.max_pending_bytes
        self._max_pending_entries = config.max_pending_entries
        if config.io not in ("auto", "inline", "thread"):
            raise ValueError(f'io must be "auto", "inline" or "thread", got {config.io!r}')
        # waiters may write groups themselves (inline), up to this size
        self._inline = config.io != "thread"
        self._inline_max = config.inline_max_bytes if config.io == "auto" else 1 << 62
        self._window = 1 if config.io == "inline" else config.max_inflight_groups
        self._sb: Superblock = initial_superblock()
        self._segments: list[SegmentInfo] = []
        self._active: SegmentHandle | None = None
        self._spares: list[str] = []
        self._next_lsn = 1  # LSN after the last issued group
        self._durable_lsn = 0  # last LSN of the last published group
        self._trim_lsn = 0
        self._max_segno = 0
        # groups not yet issued (FIFO; the last one may still be open) and their room
        self._plan: GroupPlan[_Group] = GroupPlan(
            lambda first_lsn: _Group(first_lsn, time.perf_counter()),
            block=self._block,
            fresh_room=self._fresh_room,
            max_group_bytes=self._max_group_bytes,
            max_group_entries=config.max_group_entries,
        )
        self._write_end = self._data_offset  # active segment offset after the last issued group
        self._inflight: collections.deque[_Group] = collections.deque()  # issued, unpublished
        self._io_running = 0
        self._token: TrioToken | None = None
        self._writer_parked = False
        self._rolling = False  # the writer task is switching segments
        self._writer_lot = ParkingLot()  # writer waits for work
        self._slot_lot = ParkingLot()  # writer waits for an in-flight write to finish
        self._room_lot = ParkingLot()  # appenders wait for queue room
        self._space_lot = ParkingLot()  # writer waits for trim (size cap)
        self._durable_lot = ParkingLot()  # followers wait for new durable entries
        self._sb_lock = trio.Lock()
        self._fenced: BaseException | None = None
        self._fence_error: WalError | None = None  # what waiting appends get once I/O stopped
        self._closing = False
        self._closed = False
        self._writer_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        # one reusable aligned buffer per in-flight group; bigger groups get their own
        self._buf_size = align_up(self._max_group_bytes, self._block)
        self._bufs: list[mmap.mmap] = [aligned_buffer(self._buf_size)]
        self._buf_count = 1
        self._seal_buf = aligned_buffer(self._block)
        self._preparing_spare = False
        self.waiting_for_space = False
        self.groups_written = 0
        self.entries_written = 0

    # ------------------------------------------------------------------ open
    def _open_sync(self) -> None:
        """Lock, recover, bump the epoch, create the new active segment (blocking)."""
        b = self._backend
        b.lock()
        try:
            b.remove_temporaries()
            a = analyze(b, torn_save_max=self._cfg.torn_save_max)
            if a.corruption is not None:
                raise a.corruption
            old = a.superblock or initial_superblock()
            # The new epoch must be durable before anything is written with it.
            # Version 2 from now on: this writer may leave in-flight windows.
            sb = old.next(epoch=old.epoch + 1, clean=False, last_lsn=0, version=SB_VERSION)
            b.write_superblock(sb.slot, encode_superblock(sb))
            self._sb = sb
            repair(b, a)
            self._trim_lsn = sb.trim_lsn
            self._next_lsn = self._plan.assign_lsn = a.next_lsn
            self._durable_lsn = a.next_lsn - 1
            self._max_segno = a.max_segno
            for st in a.segments:
                assert st.header is not None and st.scan is not None
                self._segments.append(
                    SegmentInfo(
                        name=st.name,
                        header=st.header,
                        size=st.size,
                        end=st.scan.end_offset,
                        next_lsn=st.scan.next_lsn,
                        group_lsns=st.scan.group_lsns,
                        group_offsets=st.scan.group_offsets,
                    )
                )
            self._spares = sorted(b.list_spares())
            self._segments.append(self._new_segment_sync(self._alloc_segno()))
            self._active = b.open_segment(self._segments[-1].name, write=True)
            log.info(
                "wal_opened",
                epoch=sb.epoch,
                next_lsn=self._next_lsn,
                trim_lsn=self._trim_lsn,
                segments=len(self._segments),
                direct_io=b.direct_io,
                block=self._block,
                torn_tail=a.torn is not None,
            )
        except BaseException:
            b.unlock()
            raise

    def _alloc_segno(self) -> int:
        """Next segment number (called on the trio thread or before the writer starts)."""
        self._max_segno += 1
        return self._max_segno

    def _new_segment_sync(self, segno: int) -> SegmentInfo:
        """Create (or recycle a spare into) segment `segno`, starting at _next_lsn."""
        hdr = SegmentHeader(
            block_size=self._block,
            epoch=self._sb.epoch,
            segno=segno,
            first_lsn=self._next_lsn,
            segment_size=self._cfg.segment_size,
            data_offset=self._data_offset,
        )
        name = segment_name(segno)
        raw = encode_segment_header(hdr)
        if self._spares:
            self._backend.recycle_segment(self._spares.pop(0), name, raw)
        else:
            self._backend.create_segment(name, self._cfg.segment_size, raw, self._cfg.zero_fill)
        return SegmentInfo(
            name=name,
            header=hdr,
            size=self._cfg.segment_size,
            end=self._data_offset,
            next_lsn=self._next_lsn,
        )

    # ------------------------------------------------------------- properties
    @property
    def first_lsn(self) -> int:
        """Smallest LSN still readable (trim point + 1)."""
        first = self._segments[0].first_lsn if self._segments else self._next_lsn
        return max(self._trim_lsn + 1, first)

    @property
    def last_durable_lsn(self) -> int:
        """Highest LSN known durable (0 when the log has never held an entry)."""
        return self._durable_lsn

    @property
    def fenced(self) -> bool:
        return self._fenced is not None

    @property
    def direct_io(self) -> bool:
        return self._backend.direct_io

    @property
    def epoch(self) -> int:
        return self._sb.epoch

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def used_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def capacity_bytes(self) -> int | None:
        """Bytes of segment files the size cap allows; None when unbounded."""
        if self._max_segments is None:
            return None
        return self._max_segments * self._cfg.segment_size

    @property
    def block_size(self) -> int:
        return self._block

    # ---------------------------------------------------------------- appends
    def _check_open(self) -> None:
        if self._fenced is not None:
            raise WalFencedError(f"WAL is fenced after an I/O error: {self._fenced!r}")
        if self._closing or self._closed:
            raise WalClosedError("WAL is closed")

    async def append(self, payload: Payload, type: int = 0) -> int:
        """Append one entry; return its LSN once it is durable.

        `payload` must not be modified until this returns.  Raises
        WalFencedError if the WAL failed (the entry may or may not be on disk,
        but it was not acknowledged), WalEntryTooLargeError if it can never fit.
        """
        if not 0 <= type <= MAX_USER_TYPE:
            raise ValueError(f"entry type must be in 0..{MAX_USER_TYPE}, got {type}")
        if payload.__class__ is memoryview and (payload.format != "B" or payload.ndim != 1):
            payload = payload.cast("B")
        rec = (len(payload) + _REC_EXTRA) & -RECORD_ALIGN
        plan = self._plan
        if (
            plan.pending_entries
            and (
                plan.pending_bytes + rec > self._max_pending_bytes
                or plan.pending_entries >= self._max_pending_entries
            )
        ) or rec > self._max_group_bytes:
            await self._admit(rec, 1)
        elif self._fenced is not None or self._closing or self._closed:
            self._check_open()
        g, lsn = self._add(rec, 1)
        g.entries.append((type, payload))
        await self._wait(g, fresh=True)
        return lsn

    async def append_many(self, items: Sequence[tuple[int, Payload]]) -> list[int]:
        """Append several (type, payload) entries, written in the same group."""
        if not items:
            return []
        g, first = await self._queue(items)
        await self._wait(g, fresh=True)
        return list(range(first, first + len(items)))

    async def submit_many(self, items: Sequence[tuple[int, Payload]]) -> Submission:
        """Queue entries (written in one group) and return without waiting for the disk.

        Waits only for room in the queue (back-pressure). Submissions are queued in call
        order, so an entry submitted after another always gets a higher LSN; the produce
        path relies on this to keep each connection's batches in request order while it
        reads the next request. ``await submission.wait()`` returns the LSNs once durable.
        """
        if not items:  # nothing to write: already "durable"
            self._check_open()
            empty = _Group(self._plan.assign_lsn, 0.0)
            empty.done = True
            return Submission(self, empty, empty.first_lsn, 0)
        g, first = await self._queue(items)
        return Submission(self, g, first, len(items))

    async def _queue(self, items: Sequence[tuple[int, Payload]]) -> tuple[_Group, int]:
        checked: list[tuple[int, Payload]] = []
        rec = 0
        for typ, payload in items:
            if not 0 <= typ <= MAX_USER_TYPE:
                raise ValueError(f"entry type must be in 0..{MAX_USER_TYPE}, got {typ}")
            if isinstance(payload, memoryview) and (payload.format != "B" or payload.ndim != 1):
                payload = payload.cast("B")
            checked.append((typ, payload))
            rec += (len(payload) + _REC_EXTRA) & -RECORD_ALIGN
        await self._admit(rec, len(checked))
        g, first = self._add(rec, len(checked))
        g.entries.extend(checked)
        return g, first

    async def _admit(self, rec: int, n: int) -> None:
        """Size check, then wait for queue room (back-pressure, never a drop)."""
        if align_up(rec, self._block) > self._fresh_room:
            raise WalEntryTooLargeError(
                f"{rec} bytes of records do not fit in a segment (max entry "
                f"{self.max_entry_size} bytes with segment_size {self._cfg.segment_size})"
            )
        self._check_open()
        plan = self._plan
        while plan.pending_entries and (
            plan.pending_bytes + rec > self._max_pending_bytes
            or plan.pending_entries + n > self._max_pending_entries
        ):
            await self._room_lot.park()
            self._check_open()

    def _add(self, rec: int, n: int) -> tuple[_Group, int]:
        """Reserve LSNs for `n` entries of `rec` record bytes (``GroupPlan.add``) and wake
        the writer. The caller appends the entries to the group right away."""
        added = self._plan.add(rec, n)
        if self._writer_parked:
            self._writer_parked = False
            self._writer_lot.unpark_all()
        return added

    async def _wait(self, g: _Group, fresh: bool = False) -> None:
        """Wait until `g` is durable. With inline I/O the waiter writes it itself; `fresh`:
        it was queued by this same task just now, so first let the other tasks of this
        event-loop pass queue theirs (one sync for all of them, not one each)."""
        if not g.done and self._inline:
            if fresh:
                await trio.lowlevel.checkpoint()
            self._issue_inline(g)
        if not g.done:
            task = current_task()
            waiters = g.waiters
            waiters[task] = None

            def abort(_: object) -> Abort:
                # The entry stays queued/in flight and may become durable; it is
                # simply not acknowledged to this (cancelled) caller.
                waiters.pop(task, None)
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)
        if g.error is not None:
            raise g.error

    def _issue_inline(self, target: _Group) -> None:
        """With inline I/O, the task about to wait for `target` issues the queued groups up
        to it itself, as the writer task would in this same event-loop pass: one pass and
        one task switch fewer per group (with ``io = "auto"`` a big group goes to a worker
        thread and this stops). Whatever needs the writer task (a segment roll, a write too
        far ahead of the durable frontier) is left to it."""
        while (
            self._fenced is None
            and not self._io_running
            and not self._rolling
            and self._plan.queue
            and not target.done
        ):
            g = self._plan.next_to_issue()
            if g.roll:
                return
            back = (self._write_end - self._segments[-1].end) // self._block
            if back > MAX_BACK_BLOCKS:
                return
            self._plan.issued(g)
            self._issue(g, back)

    # ----------------------------------------------------------------- writer
    async def _writer_loop(self) -> None:
        try:
            await self._issue_loop()
        except WalError as e:
            self._fence(e)
        except OSError as e:
            self._fence(e)
        except trio.Cancelled:
            self._fail_all(WalClosedError("WAL writer cancelled before this entry was written"))
            raise
        except BaseException as e:
            self._fence(e)
            log.exception("wal_writer_crashed")
            raise
        finally:
            # Group writes still running belong to this writer: nothing may
            # close the segment under them.
            with trio.CancelScope(shield=True):
                while self._io_running:
                    await self._slot_lot.park()
            self._writer_done.set()

    async def _issue_loop(self) -> None:
        """Issue queued groups in order, at most `max_inflight_groups` at a time."""
        while self._fenced is None:
            if not self._plan.queue:
                if self._closing:
                    break
                self._writer_parked = True
                await self._writer_lot.park()
                continue
            if len(self._inflight) >= self._window:
                await self._slot_lot.park()
                continue
            g = self._plan.next_to_issue()
            if g.roll:
                if self._inflight:  # the window never spans segments
                    await self._slot_lot.park()
                    continue
                self._rolling = True
                try:
                    await self._roll()
                finally:
                    self._rolling = False
                g.roll = False
                continue
            back = (self._write_end - self._segments[-1].end) // self._block
            if back > MAX_BACK_BLOCKS:
                await self._slot_lot.park()  # too far ahead to record: let the disk catch up
                continue
            self._plan.issued(g)
            self._issue(g, back)
        while self._inflight and self._fenced is None:
            await self._slot_lot.park()

    def _issue(self, g: _Group, back: int) -> None:
        """Encode `g` (trio thread, while earlier groups are on the disk) and start its write;
        the plan has let it go (``GroupPlan.issued``)."""
        seg = self._segments[-1]
        g.offset = self._write_end
        g.back = back
        assert g.first_lsn == self._next_lsn and g.offset + g.size <= self._seg_capacity
        if g.size <= self._buf_size and (self._bufs or self._buf_count < self._window):
            if not self._bufs:
                self._bufs.append(aligned_buffer(self._buf_size))
                self._buf_count += 1
            g.buf = self._bufs.pop()
        else:
            g.buf = aligned_buffer(g.size)  # oversized group: a buffer of its own
        with memoryview(g.buf) as view:
            encode_group(
                view[: g.size],
                salt_crc=seg.header.salt_crc,
                first_lsn=g.first_lsn,
                entries=g.entries,
                block=self._block,
                back=back,
            )
        self._next_lsn += len(g.entries)
        self._write_end = g.offset + g.size
        self._room_lot.unpark_all()
        self._inflight.append(g)
        self._io_running += 1
        # A worker thread writes; its outcome comes back as a callback on the
        # trio thread (no task per group).  Nothing can cancel a write once
        # issued: the writer waits for every outstanding one before it ends.
        assert self._active is not None
        if self._inline and self._io_running == 1 and g.size <= self._inline_max:
            result = outcome_capture(self._write_group_sync, self._active, g.offset, g.buf, g.size)
            self._write_done(g, result)
            return
        start_thread_soon(
            functools.partial(self._write_group_sync, self._active, g.offset, g.buf, g.size),
            functools.partial(self._deliver, g),
            name="wal group write",
        )

    def _deliver(self, g: _Group, result: Outcome) -> None:
        """Worker thread: hand the outcome of `g`'s write back to the trio thread."""
        assert self._token is not None
        self._token.run_sync_soon(self._write_done, g, result)

    def _write_done(self, g: _Group, result: Outcome) -> None:
        """Trio thread (a run_sync_soon callback): publish `g`, or fence."""
        error: BaseException | None = None
        try:
            g.elapsed = result.unwrap()
            g.written = True
        except BaseException as e:  # any failure of a write or sync fences
            error = e
        self._io_running -= 1
        try:
            self._release_group_buffer(g)
            if error is not None:
                self._fence(error)
            elif self._fenced is None:
                self._publish_ready()
            elif self._io_running == 0:
                self._fail_all_fenced()
        except BaseException as e:  # a callback must not raise into trio's run loop
            log.exception("wal_publish_failed")
            self._fence(e)
        self._slot_lot.unpark_all()

    def _write_group_sync(
        self, handle: SegmentHandle, offset: int, buf: mmap.mmap, size: int
    ) -> float:
        """Write one encoded group and make it durable.  Worker thread; returns seconds."""
        with memoryview(buf) as view:
            t = time.perf_counter()
            handle.write_at(offset, view[:size])
            handle.sync()
            return time.perf_counter() - t

    def _release_group_buffer(self, g: _Group) -> None:
        buf, g.buf = g.buf, None
        if buf is None:
            return
        if len(buf) == self._buf_size and len(self._bufs) < self._buf_count:
            self._bufs.append(buf)
        else:
            with contextlib.suppress(BufferError):
                buf.close()

    def _publish_ready(self) -> None:
        """Acknowledge, in LSN order, every leading in-flight group that is durable."""
        inflight = self._inflight
        if not inflight or not inflight[0].written:
            return
        seg = self._segments[-1]
        now = time.perf_counter()
        groups = entries = nbytes = 0
        while inflight and inflight[0].written:
            g = inflight.popleft()
            n = len(g.entries)
            g.finish(None)
            seg.group_lsns.append(g.first_lsn)
            seg.group_offsets.append(g.offset)
            seg.end = g.offset + g.size
            seg.next_lsn = g.first_lsn + n
            self._durable_lsn = g.first_lsn + n - 1
            groups += 1
            entries += n
            nbytes += g.size
            # one observation per group: the latency of its oldest append
            metrics.APPEND_LATENCY.observe(now - g.t0)
            metrics.SYNC_LATENCY.observe(g.elapsed)
            metrics.GROUP_SIZE.observe(n)
            g.entries = []  # the payloads are no longer needed
        self.groups_written += groups
        self.entries_written += entries
        metrics.BYTES_WRITTEN.inc(nbytes)
        metrics.APPENDS.inc(entries)
        self._durable_lot.unpark_all()

    async def _roll(self) -> None:
        """Seal the active segment and continue in a new one (honouring the size cap)."""
        while self._max_segments is not None and len(self._segments) >= self._max_segments:
            self.waiting_for_space = True
            metrics.FULL.set(1)
            if self._closing:
                raise WalClosedError("WAL closed while full (size cap reached)")
            await self._space_lot.park()
            self._check_fenced_only()
        self.waiting_for_space = False
        metrics.FULL.set(0)
        old = self._segments[-1]
        new, handle = await trio.to_thread.run_sync(self._roll_sync, old, self._alloc_segno())
        self._segments.append(new)
        self._active = handle
        self._write_end = self._data_offset
        self._update_gauges()
        self._maybe_prepare_spare()

    def _check_fenced_only(self) -> None:
        if self._fenced is not None:
            raise WalFencedError(f"WAL is fenced: {self._fenced!r}")

    def _seal_sync(self, seg: SegmentInfo) -> int:
        """Write and sync a SEAL group at the end of `seg` (nothing is in flight)."""
        view = memoryview(self._seal_buf)
        try:
            glen = encode_group(
                view,
                salt_crc=seg.header.salt_crc,
                first_lsn=self._next_lsn,
                entries=[(TYPE_SEAL, b"")],
                block=self._block,
            )
            assert self._active is not None
            self._active.write_at(seg.end, view[:glen])
            self._active.sync()
            return glen
        finally:
            view.release()

    def _roll_sync(self, old: SegmentInfo, segno: int) -> tuple[SegmentInfo, SegmentHandle]:
        self._seal_sync(old)
        assert self._active is not None
        self._active.close()
        self._active = None
        new = self._new_segment_sync(segno)
        return new, self._backend.open_segment(new.name, write=True)

    def _maybe_prepare_spare(self) -> None:
        if (
            self._nursery is None
            or self._spares
            or self._preparing_spare
            or not self._cfg.prepare_spares
            or self._cfg.spare_segments <= 0
        ):
            return
        self._preparing_spare = True
        self._nursery.start_soon(self._prepare_spare)

    async def _prepare_spare(self) -> None:
        name = f"spare-{self._alloc_segno():016x}.wal"
        try:
            await trio.to_thread.run_sync(self._backend.create_spare, name, self._cfg.segment_size)
            self._spares.append(name)
        except OSError as e:  # not fatal: the writer creates segments itself
            log.warning("wal_spare_preparation_failed", error=repr(e))
        finally:
            self._preparing_spare = False

    def _fence(self, exc: BaseException) -> None:
        """Stop for good after an I/O error: nothing more is issued or acknowledged.

        Waiting appends fail once the writes already in flight have returned,
        so that nobody is told "failed" while the disk is still being written.
        """
        if isinstance(exc, WalClosedError):
            self._fail_all(exc)
            return
        if self._fenced is None:
            self._fenced = exc
            metrics.FENCED.set(1)
            log.error(
                "wal_fenced",
                error=repr(exc),
                last_durable_lsn=self._durable_lsn,
                pending=self._plan.pending_entries,
                in_flight=len(self._inflight),
            )
            err = WalFencedError(
                f"WAL fenced after I/O error: {exc!r}; this entry was not "
                "acknowledged and no later entry will be"
            )
            err.__cause__ = exc
            self._fence_error = err
        self._writer_lot.unpark_all()
        self._slot_lot.unpark_all()
        if self._io_running == 0:
            self._fail_all_fenced()

    def _fail_all_fenced(self) -> None:
        assert self._fence_error is not None
        self._fail_all(self._fence_error)

    def _fail_all(self, err: BaseException) -> None:
        for g in [*self._inflight, *self._plan.clear()]:
            g.finish(err)
        self._inflight.clear()
        self._room_lot.unpark_all()
        self._durable_lot.unpark_all()
        self._space_lot.unpark_all()

    def _update_gauges(self) -> None:
        metrics.SEGMENTS.set(len(self._segments))
        metrics.USED_BYTES.set(self.used_bytes)

    # ------------------------------------------------------------------- trim
    async def trim(self, upto_lsn: int) -> None:
        """Discard entries with LSN <= upto_lsn (clamped to the durable LSN).

        The trim point is made durable in the superblock first; then every
        segment whose entries are all <= upto is retired (kept as a spare
        for reuse, or deleted).  The active segment is never retired.
        """
        self._check_fenced_only()
        upto = min(upto_lsn, self._durable_lsn)
        if upto <= self._trim_lsn:
            return
        async with self._sb_lock:
            if upto <= self._trim_lsn:
                return
            try:
                await self._trim_locked(upto)
            except OSError as e:
                # A failed superblock write/sync is as bad as a failed group sync.
                self._fence(e)
                raise WalFencedError(f"WAL fenced: trim failed with {e!r}") from e
            finally:
                self._update_gauges()
                self._space_lot.unpark_all()

    async def _trim_locked(self, upto: int) -> None:
        sb = self._sb.next(trim_lsn=upto)
        await trio.to_thread.run_sync(
            self._backend.write_superblock, sb.slot, encode_superblock(sb)
        )
        self._sb = sb
        self._trim_lsn = upto
        victims: list[SegmentInfo] = []
        while len(self._segments) > 1 and self._segments[1].first_lsn - 1 <= upto:
            v = self._segments.pop(0)
            v.retired = True
            victims.append(v)
        for v in victims:
            spare = None
            if len(self._spares) < self._cfg.spare_segments and v.size == self._cfg.segment_size:
                spare = "spare-" + v.name[len("seg-") :]
            await trio.to_thread.run_sync(self._backend.retire_segment, v.name, spare)
            if spare is not None:
                self._spares.append(spare)

    # ---------------------------------------------------------------- readers
    def _segment_for(self, lsn: int) -> SegmentInfo | None:
        segs = list(self._segments)
        i = bisect.bisect_right([s.first_lsn for s in segs], lsn) - 1
        return segs[max(i, 0)] if segs else None

    def _read_batch(self, lsn: int, upto: int, max_bytes: int) -> list[Entry]:
        if lsn <= self._trim_lsn:
            raise WalTrimmedError(f"LSN {lsn} was trimmed (first available {self.first_lsn})")
        out: list[Entry] = []
        while lsn <= upto and max_bytes > 0:
            seg = self._segment_for(lsn)
            if seg is None:
                break
            got = read_segment(self._backend, seg, lsn, upto, max_bytes)
            if not got:
                if lsn < seg.next_lsn or seg is self._segments[-1]:
                    break
                continue  # pragma: no cover - defensive
            out.extend(got)
            lsn = got[-1].lsn + 1
            max_bytes -= sum(len(e.payload) for e in got)
        return out

    def read_from(self, lsn: int | None = None) -> Iterator[Entry]:
        """Iterate durable entries with LSN >= lsn (default: the first available).

        Blocking file I/O: call from a worker thread (or use `follow`).  It
        stops at the entries that are durable when it catches up.
        """
        cur = self.first_lsn if lsn is None else lsn
        if cur < self.first_lsn:
            raise WalTrimmedError(f"LSN {cur} was trimmed (first available {self.first_lsn})")
        while cur <= self._durable_lsn:
            batch = self._read_batch(cur, self._durable_lsn, 4 << 20)
            if not batch:
                return
            yield from batch
            cur = batch[-1].lsn + 1

    def follow(self, lsn: int | None = None, *, batch_bytes: int = 4 << 20) -> _Follower:
        """Async iterator over entries from `lsn`, waiting for new durable ones.

        Ends when the WAL is closed; raises WalFencedError once it is fenced
        and everything durable has been delivered.
        """
        return _Follower(self, self.first_lsn if lsn is None else lsn, batch_bytes)

    # ------------------------------------------------------------------ close
    def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._token = current_trio_token()
        metrics.DIRECT_IO.set(1 if self._backend.direct_io else 0)
        metrics.FENCED.set(0)
        metrics.FULL.set(0)
        metrics.CAPACITY_BYTES.set(self.capacity_bytes or 0)
        self._update_gauges()
        nursery.start_soon(self._writer_loop)
        self._maybe_prepare_spare()

    async def aclose(self) -> None:
        """Drain the queue, seal, record a clean shutdown, release the lock."""
        if self._closed:
            return
        self._closing = True
        self._writer_lot.unpark_all()
        self._space_lot.unpark_all()
        await self._writer_done.wait()
        try:
            if self._fenced is None:
                async with self._sb_lock:
                    await trio.to_thread.run_sync(self._close_sync)
        except OSError as e:
            self._fence(e)
        finally:
            self._closed = True
            self._durable_lot.unpark_all()
            if self._active is not None:
                self._active.close()
                self._active = None
            self._release_buffer()
            self._backend.unlock()

    def _release_buffer(self) -> None:
        # A traceback kept by a fencing exception may still reference a view
        # of a buffer; then the mmap is simply left to the garbage collector.
        for buf in [*self._bufs, self._seal_buf]:
            with contextlib.suppress(BufferError):
                buf.close()
        self._bufs.clear()

    def _close_sync(self) -> None:
        seg = self._segments[-1]
        seg.end += self._seal_sync(seg)
        sb = self._sb.next(clean=True, last_lsn=self._durable_lsn)
        self._backend.write_superblock(sb.slot, encode_superblock(sb))
        self._sb = sb
        log.info("wal_closed", last_lsn=self._durable_lsn, epoch=sb.epoch)


class _Follower:
    """Async iterator of `Wal.follow` (a class, not an async generator, so that
    abandoning it mid-way needs no finalization)."""

    def __init__(self, wal: Wal, lsn: int, batch_bytes: int):
        self._wal = wal
        self._lsn = lsn
        self._batch_bytes = batch_bytes
        self._buf: collections.deque[Entry] = collections.deque()

    def __aiter__(self) -> _Follower:
        return self

    async def __anext__(self) -> Entry:
        w = self._wal
        while not self._buf:
            if self._lsn <= w._durable_lsn:
                got = await trio.to_thread.run_sync(
                    w._read_batch, self._lsn, w._durable_lsn, self._batch_bytes
                )
                self._buf.extend(got)
                if got:
                    self._lsn = got[-1].lsn + 1
                continue
            if w._fenced is not None:
                raise WalFencedError(f"WAL is fenced: {w._fenced!r}")
            if w._closed or (w._closing and w._writer_done.is_set()):
                raise StopAsyncIteration
            await w._durable_lot.park()
        return self._buf.popleft()


@asynccontextmanager
async def open_wal(
    directory: str | Backend, config: WalConfig | None = None, *, wal_class: type[Wal] = Wal
) -> AsyncIterator[Wal]:
    """Open (creating if needed) and recover the WAL in `directory`.

    `directory` may also be a Backend instance (tests, future object stores);
    `wal_class` lets the test-suite plug in deliberately broken writers.
    On exit the queue is drained, the active segment sealed and a clean
    shutdown recorded -- unless the WAL is fenced, in which case nothing more
    is written.
    """
    cfg = config or WalConfig()
    backend: Backend
    if isinstance(directory, str):
        backend = await trio.to_thread.run_sync(
            lambda: FileBackend(directory, direct_io=cfg.direct_io)
        )
    else:
        backend = directory
    wal = wal_class(backend, cfg)
    await trio.to_thread.run_sync(wal._open_sync)
    async with serving(wal) as served:
        yield served


class _Serving(Protocol):
    def _start(self, nursery: trio.Nursery) -> None: ...
    async def aclose(self) -> None: ...


W = TypeVar("W", bound=_Serving)


@asynccontextmanager
async def serving(wal: W) -> AsyncIterator[W]:
    """Run an opened WAL's writer for the body; drain and close it on the way out (shared by
    the file and the S3 backend)."""
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        wal._start(nursery)
        try:
            yield wal
        except BaseException as e:
            # Re-raised below, outside the nursery, so that callers see their
            # own exception rather than an ExceptionGroup wrapping it.
            body_error = e
        finally:
            with trio.CancelScope(shield=True):
                await wal.aclose()
    if body_error is not None:
        raise body_error
