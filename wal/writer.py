"""The trio shell: `open_wal`, the group-commit writer task, trim and readers.

Concurrency model, and why it is safe:

* All bookkeeping (queue, LSNs, segment index) lives on the trio thread.
  Blocking I/O runs in worker threads via `trio.to_thread.run_sync` and never
  touches that state; results are applied after the thread returns.
* Exactly one group write is in flight at any time, and it is durable (O_DSYNC
  write, or write + fdatasync) before the next one starts.  Recovery relies
  on this: only the last write can be torn, so a bad record followed by a
  valid later group is proof of corruption, not of a crash.
* While a group is being written, new appends pile up in the queue and become
  the next group: that is the group commit, with no timers.
* An error of any write or sync fences the WAL (see WalFencedError).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
import trio
from trio.lowlevel import ParkingLot

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
from .reader import Entry, SegmentInfo, read_segment
from .record import (
    HEADER_SIZE,
    MAX_USER_TYPE,
    TYPE_SEAL,
    align_up,
    encode_group,
    record_size,
)
from .recovery import analyze, repair
from .segment import SegmentHeader, encode_segment_header, segment_name
from .superblock import Superblock, encode_superblock, initial_superblock

log = structlog.get_logger("wal")

Payload = bytes | bytearray | memoryview


@dataclass(slots=True)
class _Append:
    """One `append`/`append_many` call waiting for durability (always one group)."""

    items: list[tuple[int, Payload]]
    rec_bytes: int  # sum of record sizes
    t0: float
    event: trio.Event = field(default_factory=trio.Event)
    first_lsn: int = 0
    error: BaseException | None = None


class Submission:
    """Entries queued by `Wal.submit_many`; `wait()` returns their LSNs once durable."""

    __slots__ = ("_append", "_count", "_wal")

    def __init__(self, wal: Wal, append: _Append, count: int) -> None:
        self._wal = wal
        self._append = append
        self._count = count

    async def wait(self) -> list[int]:
        a = await self._wal._wait(self._append)
        return list(range(a.first_lsn, a.first_lsn + self._count))


class Wal:
    """An open write-ahead log; create it with `open_wal`."""

    def __init__(self, backend: Backend, config: WalConfig):
        self._backend = backend
        self._cfg = config
        self._block = max(4096, backend.alignment, config.block_size or 0)
        if self._block % backend.alignment:
            raise ValueError(f"block_size {self._block} is not a multiple of the backend "
                             f"alignment {backend.alignment}")
        self._data_offset = self._block
        if config.segment_size % self._block or config.segment_size < 4 * self._block:
            raise ValueError("segment_size must be a multiple of the block size and >= 4 blocks")
        # room for records in a segment: all but the header block and a seal block
        self._seg_capacity = config.segment_size - self._block
        self.max_entry_size = self._seg_capacity - self._data_offset - HEADER_SIZE
        self._max_segments = (
            max(2, config.max_bytes // config.segment_size) if config.max_bytes else None
        )
        self._sb: Superblock = initial_superblock()
        self._segments: list[SegmentInfo] = []
        self._active: SegmentHandle | None = None
        self._spares: list[str] = []
        self._next_lsn = 1
        self._durable_lsn = 0
        self._trim_lsn = 0
        self._max_segno = 0
        self._pending: collections.deque[_Append] = collections.deque()
        self._pending_bytes = 0
        self._pending_entries = 0
        self._inflight: list[_Append] = []
        self._writer_lot = ParkingLot()  # writer waits for work
        self._room_lot = ParkingLot()  # appenders wait for queue room
        self._space_lot = ParkingLot()  # writer waits for trim (size cap)
        self._durable_lot = ParkingLot()  # followers wait for new durable entries
        self._sb_lock = trio.Lock()
        self._fenced: BaseException | None = None
        self._closing = False
        self._closed = False
        self._writer_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._buf = aligned_buffer(config.max_group_bytes + self._block)
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
            sb = old.next(epoch=old.epoch + 1, clean=False, last_lsn=0)
            b.write_superblock(sb.slot, encode_superblock(sb))
            self._sb = sb
            repair(b, a)
            self._trim_lsn = sb.trim_lsn
            self._next_lsn = a.next_lsn
            self._durable_lsn = a.next_lsn - 1
            self._max_segno = a.max_segno
            for st in a.segments:
                assert st.header is not None and st.scan is not None
                self._segments.append(SegmentInfo(
                    name=st.name, header=st.header, size=st.size, end=st.scan.end_offset,
                    next_lsn=st.scan.next_lsn, group_lsns=st.scan.group_lsns,
                    group_offsets=st.scan.group_offsets,
                ))
            self._spares = sorted(b.list_spares())
            self._segments.append(self._new_segment_sync(self._alloc_segno()))
            self._active = b.open_segment(self._segments[-1].name, write=True)
            log.info(
                "wal_opened", epoch=sb.epoch, next_lsn=self._next_lsn, trim_lsn=self._trim_lsn,
                segments=len(self._segments), direct_io=b.direct_io, block=self._block,
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
        hdr = SegmentHeader(block_size=self._block, epoch=self._sb.epoch, segno=segno,
                            first_lsn=self._next_lsn, segment_size=self._cfg.segment_size,
                            data_offset=self._data_offset)
        name = segment_name(segno)
        raw = encode_segment_header(hdr)
        if self._spares:
            self._backend.recycle_segment(self._spares.pop(0), name, raw)
        else:
            self._backend.create_segment(name, self._cfg.segment_size, raw, self._cfg.zero_fill)
        return SegmentInfo(name=name, header=hdr, size=self._cfg.segment_size,
                           end=self._data_offset, next_lsn=self._next_lsn)

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
        a = await self._enqueue([(type, payload)])
        return a.first_lsn

    async def append_many(self, items: Sequence[tuple[int, Payload]]) -> list[int]:
        """Append several (type, payload) entries, written in the same group."""
        if not items:
            return []
        a = await self._enqueue(list(items))
        return list(range(a.first_lsn, a.first_lsn + len(items)))

    async def submit_many(self, items: Sequence[tuple[int, Payload]]) -> Submission:
        """Queue entries (written in one group) and return without waiting for the disk.

        Waits only for room in the queue (back-pressure). Submissions are queued in call
        order, so an entry submitted after another always gets a higher LSN; the produce
        path relies on this to keep each connection's batches in request order while it
        reads the next request. ``await submission.wait()`` returns the LSNs once durable.
        """
        a = await self._queue(list(items))
        return Submission(self, a, len(items))

    async def _enqueue(self, items: list[tuple[int, Payload]]) -> _Append:
        return await self._wait(await self._queue(items))

    async def _queue(self, items: list[tuple[int, Payload]]) -> _Append:
        t0 = time.perf_counter()
        rec = 0
        for i, (typ, payload) in enumerate(items):
            if not 0 <= typ <= MAX_USER_TYPE:
                raise ValueError(f"entry type must be in 0..{MAX_USER_TYPE}, got {typ}")
            if isinstance(payload, memoryview) and (payload.format != "B" or payload.ndim != 1):
                items[i] = (typ, payload.cast("B"))
            rec += record_size(len(payload))
        if align_up(rec, self._block) > self._seg_capacity - self._data_offset:
            raise WalEntryTooLargeError(
                f"{rec} bytes of records do not fit in a segment (max entry "
                f"{self.max_entry_size} bytes with segment_size {self._cfg.segment_size})"
            )
        self._check_open()
        while self._pending and (
            self._pending_bytes + rec > self._cfg.max_pending_bytes
            or self._pending_entries + len(items) > self._cfg.max_pending_entries
        ):
            await self._room_lot.park()
            self._check_open()
        a = _Append(items=items, rec_bytes=rec, t0=t0)
        self._pending.append(a)
        self._pending_bytes += rec
        self._pending_entries += len(items)
        self._writer_lot.unpark_all()
        return a

    async def _wait(self, a: _Append) -> _Append:
        try:
            await a.event.wait()
        except trio.Cancelled:
            # The entry stays queued/in flight and may become durable; it is
            # simply not acknowledged to this (cancelled) caller.
            raise
        if a.error is not None:
            raise a.error
        metrics.APPEND_LATENCY.observe(time.perf_counter() - a.t0)
        return a

    # ----------------------------------------------------------------- writer
    def _take_group(self, limit: int) -> list[_Append]:
        """Pop appends for one group: up to `limit` bytes (at least one append)."""
        group: list[_Append] = []
        rec = 0
        n = 0
        block = self._block
        max_entries = self._cfg.max_group_entries
        while self._pending:
            a = self._pending[0]
            if group and (align_up(rec + a.rec_bytes, block) > limit
                          or n + len(a.items) > max_entries):
                break
            if not group and align_up(a.rec_bytes, block) > limit:
                break
            self._pending.popleft()
            group.append(a)
            rec += a.rec_bytes
            n += len(a.items)
        for a in group:
            self._pending_bytes -= a.rec_bytes
            self._pending_entries -= len(a.items)
        if group:
            self._room_lot.unpark_all()
        return group

    async def _writer_loop(self) -> None:
        try:
            while True:
                if self._fenced is not None:
                    return
                if not self._pending:
                    if self._closing:
                        return
                    await self._writer_lot.park()
                    continue
                seg = self._segments[-1]
                room = self._seg_capacity - seg.end
                group = self._take_group(min(room, max(self._cfg.max_group_bytes, self._block)))
                if not group:
                    head = self._pending[0]
                    if align_up(head.rec_bytes, self._block) > room:
                        await self._roll()
                        continue
                    # bigger than max_group_bytes but fits the segment: alone
                    group = self._take_group(room)
                await self._write_group(group)
        except WalError as e:
            self._fence(e)
        except OSError as e:
            self._fence(e)
        except trio.Cancelled:
            self._fail_pending(WalClosedError("WAL writer cancelled before this entry was written"))
            raise
        except BaseException as e:
            self._fence(e)
            log.exception("wal_writer_crashed")
            raise
        finally:
            self._writer_done.set()

    async def _write_group(self, group: list[_Append]) -> None:
        seg = self._segments[-1]
        first_lsn = self._next_lsn
        entries = [it for a in group for it in a.items]
        offset = seg.end
        self._inflight = group
        # Shielded: once the write is issued its outcome must be published
        # (acked or fenced) before anything else happens to this segment.
        with trio.CancelScope(shield=True):
            glen, dt = await trio.to_thread.run_sync(
                self._write_group_sync, entries, first_lsn, offset, seg.header.salt_crc
            )
        self._inflight = []
        # durable: publish
        lsn = first_lsn
        for a in group:
            a.first_lsn = lsn
            lsn += len(a.items)
            a.event.set()
        self._next_lsn = lsn
        self._durable_lsn = lsn - 1
        seg.group_lsns.append(first_lsn)
        seg.group_offsets.append(offset)
        seg.end = offset + glen
        seg.next_lsn = lsn
        self.groups_written += 1
        self.entries_written += len(entries)
        metrics.SYNC_LATENCY.observe(dt)
        metrics.GROUP_SIZE.observe(len(entries))
        metrics.BYTES_WRITTEN.inc(glen)
        metrics.APPENDS.inc(len(entries))
        self._durable_lot.unpark_all()

    def _write_group_sync(
        self, entries: list[tuple[int, Payload]], first_lsn: int, offset: int, salt_crc: int
    ) -> tuple[int, float]:
        """Encode (the single copy into the aligned buffer), write, sync.  Worker thread."""
        need = align_up(sum(record_size(len(p)) for _, p in entries), self._block)
        if need > len(self._buf):
            self._release_buffer()
            self._buf = aligned_buffer(need)
        view = memoryview(self._buf)
        try:
            glen = encode_group(view, salt_crc=salt_crc, first_lsn=first_lsn, entries=entries,
                                block=self._block)
            assert self._active is not None
            t = time.perf_counter()
            self._active.write_at(offset, view[:glen])
            self._active.sync()
            return glen, time.perf_counter() - t
        finally:
            view.release()

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
        self._update_gauges()
        self._maybe_prepare_spare()

    def _check_fenced_only(self) -> None:
        if self._fenced is not None:
            raise WalFencedError(f"WAL is fenced: {self._fenced!r}")

    def _seal_sync(self, seg: SegmentInfo) -> int:
        view = memoryview(self._buf)
        try:
            glen = encode_group(view, salt_crc=seg.header.salt_crc, first_lsn=self._next_lsn,
                                entries=[(TYPE_SEAL, b"")], block=self._block)
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
        if (self._nursery is None or self._spares or self._preparing_spare
                or not self._cfg.prepare_spares or self._cfg.spare_segments <= 0):
            return
        self._preparing_spare = True
        self._nursery.start_soon(self._prepare_spare)

    async def _prepare_spare(self) -> None:
        name = f"spare-{self._alloc_segno():016x}.wal"
        try:
            await trio.to_thread.run_sync(self._backend.create_spare, name,
                                          self._cfg.segment_size)
            self._spares.append(name)
        except OSError as e:  # not fatal: the writer creates segments itself
            log.warning("wal_spare_preparation_failed", error=repr(e))
        finally:
            self._preparing_spare = False

    def _fence(self, exc: BaseException) -> None:
        if self._fenced is None and not isinstance(exc, WalClosedError):
            self._fenced = exc
            metrics.FENCED.set(1)
            log.error("wal_fenced", error=repr(exc), last_durable_lsn=self._durable_lsn,
                      pending=len(self._pending) + len(self._inflight))
        err: WalError
        if isinstance(exc, WalClosedError):
            err = exc
        else:
            err = WalFencedError(f"WAL fenced after I/O error: {exc!r}; this entry was not "
                                 "acknowledged and no later entry will be")
            err.__cause__ = exc
        self._fail_pending(err)

    def _fail_pending(self, err: BaseException) -> None:
        for a in [*self._inflight, *self._pending]:
            a.error = err
            a.event.set()
        self._inflight = []
        self._pending.clear()
        self._pending_bytes = 0
        self._pending_entries = 0
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
        await trio.to_thread.run_sync(self._backend.write_superblock, sb.slot,
                                      encode_superblock(sb))
        self._sb = sb
        self._trim_lsn = upto
        victims: list[SegmentInfo] = []
        while len(self._segments) > 1 and self._segments[1].first_lsn - 1 <= upto:
            v = self._segments.pop(0)
            v.retired = True
            victims.append(v)
        for v in victims:
            spare = None
            if (len(self._spares) < self._cfg.spare_segments
                    and v.size == self._cfg.segment_size):
                spare = "spare-" + v.name[len("seg-"):]
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
        # of the buffer; then the mmap is simply left to the garbage collector.
        with contextlib.suppress(BufferError):
            self._buf.close()

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
