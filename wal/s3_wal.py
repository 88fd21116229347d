"""The S3 WAL (``wal.backend = "s3"``): group commit mapped to objects, fenced by conditional PUTs.

Same public API as :class:`wal.writer.Wal` (append, append_many, submit_many, read_from,
follow, trim and the properties the proxy reads), so the produce path, the reconciler and
the offloader do not know which medium they write to.  The format and its rules are in
:mod:`wal.s3_layout` (sans-IO) and docs/wal-format.md; this module is the trio shell:

* Appends join the open group; when an upload slot is free (at most
  ``max_inflight_groups`` uploads in flight) the oldest group is closed and uploaded as the
  object of the next slot, with ``If-None-Match: *``.  So a group is what arrived while
  the previous uploads were in flight, bounded by ``max_group_bytes`` / entries and
  optionally held ``max_group_delay_ms`` for more company.
* A group is acknowledged once its PUT succeeded and every earlier group is acknowledged.
* A PUT that fails transiently is retried (shared backoff policy) until
  ``put_deadline_s``; then the WAL fences: nothing more is acknowledged.  A slot already
  taken is looked at: our own earlier attempt (same bytes) counts as success, a newer
  writer's object fences us (we are the zombie), an older writer's late upload is deleted
  and the slot retried (we hold an earlier slot that writer needed, so it never
  acknowledged it).
* Open takes the next epoch on the lease object (If-Match), lists and validates the
  objects, and claims the slot after the recovered run with an empty *marker* object: from
  then on every older writer's next PUT fails.

The store's methods are blocking (boto3); they run in worker threads that are abandoned
when their deadline passes.
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures as cf
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import structlog
import trio
from trio.lowlevel import ParkingLot

from . import metrics, writer
from .config import S3WalConfig
from .errors import (
    WalClosedError,
    WalCorruptionError,
    WalEntryTooLargeError,
    WalError,
    WalFencedError,
    WalLockedError,
    WalTrimmedError,
)
from .object_store import (
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StoreError,
    backoff_delays,
)
from .reader import Entry
from .record import MAX_USER_TYPE, record_size
from .s3_layout import (
    LEASE_NAME,
    DecodedObject,
    Lease,
    ObjectFormatError,
    ObjectHeader,
    RecoveryPlan,
    RunObject,
    decode_object,
    decode_object_header,
    encode_object,
    object_name,
    parse_object_name,
    plan_recovery,
)

log = structlog.get_logger("wal.s3")
Payload = bytes | bytearray | memoryview
T = TypeVar("T")
_TRANSIENT = (StoreError, trio.TooSlowError, OSError)


class _Group(writer._Group):
    """A file WAL group's bookkeeping (entries, waiters, finish) plus its slot and bytes."""

    __slots__ = ("body", "slot")

    def __init__(self, first_lsn: int, t0: float) -> None:
        super().__init__(first_lsn, t0)
        self.slot = -1
        self.body: bytes | None = None


# -- recovery (shared by the writer and the read-only tools) --------------------------------
def _get_retrying(store: ObjectStore, key: str, attempts: int = 6) -> bytes | None:
    """GET in a worker thread or a tool: None when missing, transient errors retried."""
    delays = backoff_delays(0.05, 1.0)
    for attempt in range(attempts):
        try:
            return store.get(key).data
        except ObjectNotFound:
            return None
        except (StoreError, OSError):
            if attempt == attempts - 1:
                raise
            time.sleep(next(delays))
    raise AssertionError("unreachable")


def read_lease(store: ObjectStore) -> tuple[Lease, str | None]:
    """The lease and its ETag (None: no lease yet, an empty WAL)."""
    try:
        obj = store.get(LEASE_NAME)
    except ObjectNotFound:
        return Lease(), None
    try:
        return Lease.decode(obj.data), obj.etag
    except ObjectFormatError as exc:
        raise WalCorruptionError(f"lease: {exc}", store.describe() + LEASE_NAME) from None


def list_slots(store: ObjectStore) -> dict[int, int]:
    """slot -> object size of every WAL object under the store's prefix."""
    out = {}
    for info in store.list(""):
        slot = parse_object_name(info.key)
        if slot is not None:
            out[slot] = info.size
    return out


def judge(
    lease: Lease, sizes: dict[int, int], objects: dict[int, bytes | None]
) -> tuple[RecoveryPlan, dict[int, DecodedObject]]:
    """Decode the fetched objects and plan (sans-IO apart from the inputs)."""
    listing: dict[int, tuple[int, ObjectHeader | ObjectFormatError]] = {}
    decoded: dict[int, DecodedObject] = {}
    for slot, data in objects.items():
        if data is None:  # deleted between list and get: a trim or a stray's cleanup
            continue
        try:
            d = decode_object(data, slot)
            decoded[slot] = d
            listing[slot] = (len(data), d.header)
        except ObjectFormatError as exc:
            listing[slot] = (len(data), exc)
    for slot, size in sizes.items():
        if slot < lease.trim_slot:
            listing.setdefault(slot, (size, ObjectFormatError("not fetched (trimmed)")))
    return plan_recovery(lease, listing), decoded


def read_all(
    store: ObjectStore, lease: Lease, sizes: dict[int, int], parallel: int = 1
) -> dict[int, bytes | None]:
    """Every object at or past the trim slot (blocking: the tools' path). ``parallel`` > 1
    fetches on that many threads: a rebuild may read thousands of small objects, one S3
    round trip each."""
    slots = [s for s in sorted(sizes) if s >= lease.trim_slot]
    if parallel <= 1 or len(slots) <= 1:
        return {s: _get_retrying(store, object_name(s)) for s in slots}
    with cf.ThreadPoolExecutor(min(parallel, len(slots)), thread_name_prefix="wal-read") as pool:
        bodies = pool.map(lambda s: _get_retrying(store, object_name(s)), slots)
        return dict(zip(slots, bodies, strict=True))


# -- the writer -------------------------------------------------------------------------------
class S3Wal:
    """An open S3 WAL; create it with :func:`open_s3_wal`."""

    direct_io = False  # the proxy reports it; objects are durable once the PUT returns
    block_size = 32

    def __init__(self, store: ObjectStore, config: S3WalConfig) -> None:
        if not 1 <= config.max_inflight_groups <= 64:
            raise ValueError("max_inflight_groups must be in 1..64")
        self._store = store
        self._cfg = config
        self._window = config.max_inflight_groups
        self.max_entry_size = config.max_entry_size
        self._lease = Lease()
        self._lease_etag: str | None = None
        self._epoch = 0
        self._index: list[RunObject] = []  # published objects, slot order
        self._index_lsns: list[int] = []
        self._index_bytes = 0
        self._trim_lsn = 0
        self._assign_lsn = 1
        self._next_lsn = 1
        self._durable_lsn = 0
        self._next_slot = 0
        self._published_slot = -1
        self._groups: collections.deque[_Group] = collections.deque()
        self._open: _Group | None = None
        self._inflight: collections.deque[_Group] = collections.deque()
        self._pending_bytes = 0
        self._pending_entries = 0
        self._cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._cache_bytes = 0
        self._writer_parked = False
        self._writer_lot = ParkingLot()
        self._slot_lot = ParkingLot()
        self._room_lot = ParkingLot()
        self._space_lot = ParkingLot()
        self._durable_lot = ParkingLot()
        self._trim_lock = trio.Lock()
        self._fenced: BaseException | None = None
        self._fence_error: WalError | None = None
        self._closing = False
        self._closed = False
        self._writer_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._uploads = 0
        self.waiting_for_space = False
        self.groups_written = 0
        self.entries_written = 0

    # ----------------------------------------------------------------- store calls
    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """One request in a worker thread under the request deadline (abandoned past it)."""
        with trio.fail_after(self._cfg.request_timeout_s):
            return await trio.to_thread.run_sync(lambda: fn(*args, **kw), abandon_on_cancel=True)

    async def _retry(
        self, what: str, fn: Any, *args: Any, budget_s: float | None = None, **kw: Any
    ) -> Any:
        """`_call` retried on transient failures until `budget_s` (default put_deadline_s)."""
        deadline = trio.current_time() + (budget_s or self._cfg.put_deadline_s)
        delays = backoff_delays(0.05, 1.0)
        while True:
            try:
                return await self._call(fn, *args, **kw)
            except _TRANSIENT as exc:
                left = deadline - trio.current_time()
                if left <= 0:
                    raise WalFencedError(
                        f"{what}: no answer from {self._store.describe()} within "
                        f"{budget_s or self._cfg.put_deadline_s}s: {exc!r}"
                    ) from exc
                metrics.S3_RETRIES.labels(what).inc()
                log.warning("wal_s3_retry", op=what, error=repr(exc))
                await trio.sleep(min(next(delays), left))

    # ------------------------------------------------------------------------ open
    async def _recover(self) -> None:
        await self._take_epoch()
        await self._claim_log()

    async def _claim_log(self) -> None:
        """List and judge the objects, then claim the slot after the run (see _claim)."""
        budget = max(30.0, 3 * self._cfg.put_deadline_s)
        for _attempt in range(50):
            sizes = await self._retry("list", list_slots, self._store, budget_s=budget)
            objects = await self._fetch_all(sizes)
            plan, decoded = judge(self._lease, sizes, objects)
            if plan.newest_epoch > self._epoch:
                raise WalLockedError(
                    f"{self._store.describe()}: a newer writer (epoch {plan.newest_epoch}) "
                    f"holds this WAL; this one took epoch {self._epoch}"
                )
            if plan.corruption is not None:
                slot = plan.corrupt_slot
                raise WalCorruptionError(
                    plan.corruption,
                    self._store.describe() + (object_name(slot) if slot is not None else ""),
                )
            if await self._claim(plan, decoded):
                break
        else:
            raise WalLockedError(f"{self._store.describe()}: another writer keeps taking slots")
        self._trim_lsn = self._lease.trim_lsn
        log.info(
            "wal_opened",
            backend="s3",
            store=self._store.describe(),
            epoch=self._epoch,
            next_lsn=self._next_lsn,
            trim_lsn=self._trim_lsn,
            objects=len(self._index),
            torn_tail=bool(plan.torn),
        )

    async def _take_epoch(self) -> None:
        """Bump the lease's epoch with a conditional replace (the last writer to open wins)."""
        for _ in range(20):
            lease, etag = await self._retry("lease", read_lease, self._store, budget_s=30.0)
            new = Lease(lease.epoch + 1, lease.trim_slot, lease.trim_slot_lsn, lease.trim_lsn)
            try:
                self._lease_etag = await self._retry(
                    "lease",
                    self._store.put,
                    LEASE_NAME,
                    new.encode(),
                    if_none_match=etag is None,
                    if_match=etag,
                    budget_s=30.0,
                )
            except PreconditionFailed:
                continue  # another writer moved it: read again, take the next epoch
            self._lease, self._epoch = new, new.epoch
            return
        raise WalLockedError(f"{self._store.describe()}: could not take the lease")

    async def _fetch_all(self, sizes: dict[int, int]) -> dict[int, bytes | None]:
        out: dict[int, bytes | None] = {}
        limiter = trio.CapacityLimiter(self._cfg.recovery_concurrency)

        async def one(slot: int) -> None:
            async with limiter:
                out[slot] = await self._retry(
                    "get", _get_retrying, self._store, object_name(slot), budget_s=60.0
                )

        async with trio.open_nursery() as n:
            for slot in sizes:
                if slot >= self._lease.trim_slot:
                    n.start_soon(one, slot)
        return out

    async def _claim(self, plan: RecoveryPlan, decoded: dict[int, DecodedObject]) -> bool:
        """Put this epoch's marker at the slot after the run; False: look again."""
        end = plan.next_slot
        if end in plan.torn and end in decoded:
            # A superseded writer's late upload sits there: it was never acknowledged
            # (its writer lost an earlier slot), so it goes.
            await self._retry("delete", self._store.delete, object_name(end))
        marker = encode_object(
            epoch=self._epoch, slot=end, first_lsn=plan.next_lsn, back=1, entries=[]
        )
        try:
            await self._retry("put", self._store.put, object_name(end), marker, if_none_match=True)
        except PreconditionFailed:
            log.info("wal_s3_slot_taken_at_open", slot=end)
            return False
        # Holding `end`, nothing past it was ever acknowledged: drop the torn tail and
        # finish an interrupted trim.
        for slot in [*plan.torn, *plan.obsolete]:
            if slot != end:
                await self._retry("delete", self._store.delete, object_name(slot))
        if plan.torn:
            metrics.TORN_TRUNCATIONS.inc()
            log.warning("wal_s3_torn_tail_dropped", slots=plan.torn, reason=plan.torn_reason)
        self._index = [*plan.run, RunObject(end, plan.next_lsn, 0, len(marker))]
        self._index_lsns = [o.first_lsn for o in self._index]
        self._index_bytes = sum(o.size for o in self._index)
        for o in plan.run[-8:]:  # readers after a restart start near the tail
            self._cache_put(o.slot, None)
        self._next_slot = end + 1
        self._published_slot = end
        self._next_lsn = self._assign_lsn = plan.next_lsn
        self._durable_lsn = plan.next_lsn - 1
        return True

    # ------------------------------------------------------------------ properties
    @property
    def first_lsn(self) -> int:
        first = self._index[0].first_lsn if self._index else self._next_lsn
        return max(self._trim_lsn + 1, first)

    @property
    def last_durable_lsn(self) -> int:
        return self._durable_lsn

    @property
    def fenced(self) -> bool:
        return self._fenced is not None

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def segment_count(self) -> int:
        """Live objects (the file WAL's segments)."""
        return len(self._index)

    @property
    def used_bytes(self) -> int:
        return self._index_bytes

    @property
    def capacity_bytes(self) -> int | None:
        return self._cfg.max_bytes

    @property
    def store(self) -> ObjectStore:
        return self._store

    # --------------------------------------------------------------------- appends
    def _check_open(self) -> None:
        if self._fenced is not None:
            raise WalFencedError(f"WAL is fenced: {self._fenced!r}")
        if self._closing or self._closed:
            raise WalClosedError("WAL is closed")

    def _checked(
        self, items: Sequence[tuple[int, Payload]]
    ) -> tuple[list[tuple[int, Payload]], int]:
        out: list[tuple[int, Payload]] = []
        rec = 0
        for typ, payload in items:
            if not 0 <= typ <= MAX_USER_TYPE:
                raise ValueError(f"entry type must be in 0..{MAX_USER_TYPE}, got {typ}")
            if isinstance(payload, memoryview) and (payload.format != "B" or payload.ndim != 1):
                payload = payload.cast("B")
            if len(payload) > self.max_entry_size:
                raise WalEntryTooLargeError(
                    f"entry of {len(payload)} bytes exceeds the S3 WAL's max_entry_size "
                    f"{self.max_entry_size}"
                )
            out.append((typ, payload))
            rec += record_size(len(payload))
        return out, rec

    async def append(self, payload: Payload, type: int = 0) -> int:
        return (await self.append_many([(type, payload)]))[0]

    async def append_many(self, items: Sequence[tuple[int, Payload]]) -> list[int]:
        if not items:
            return []
        g, first = await self._queue(items)
        await self._wait(g)  # type: ignore[misc]  # Wal's shared method, duck-typed
        return list(range(first, first + len(items)))

    async def submit_many(self, items: Sequence[tuple[int, Payload]]) -> writer.Submission:
        if not items:
            self._check_open()
            empty = _Group(self._assign_lsn, 0.0)
            empty.done = True
            return writer.Submission(self, empty, empty.first_lsn, 0)  # type: ignore[arg-type]
        g, first = await self._queue(items)
        return writer.Submission(self, g, first, len(items))  # type: ignore[arg-type]

    async def _queue(self, items: Sequence[tuple[int, Payload]]) -> tuple[_Group, int]:
        checked, rec = self._checked(items)
        self._check_open()
        n = len(checked)
        while self._pending_entries and (
            self._pending_bytes + rec > self._cfg.max_pending_bytes
            or self._pending_entries + n > self._cfg.max_pending_entries
        ):
            await self._room_lot.park()
            self._check_open()
        g = self._open
        if (
            g is None
            or (g.entries and g.rec + rec > self._cfg.max_group_bytes)
            or len(g.entries) + n > self._cfg.max_group_entries
        ):
            g = _Group(self._assign_lsn, time.perf_counter())
            self._groups.append(g)
            self._open = g
        first = self._assign_lsn
        self._assign_lsn += n
        g.entries.extend(checked)
        g.rec += rec
        self._pending_bytes += rec
        self._pending_entries += n
        if self._writer_parked:
            self._writer_parked = False
            self._writer_lot.unpark_all()
        return g, first

    _wait = writer.Wal._wait  # the same wake-up protocol as the file WAL's groups
    _inline = False  # uploads always run beside the event loop, never on it

    # ---------------------------------------------------------------------- writer
    async def _writer_loop(self) -> None:
        try:
            await self._issue_loop()
        except trio.Cancelled:
            self._fail_all(WalClosedError("WAL writer cancelled before this entry was stored"))
            raise
        except BaseException as e:
            self._fence(e)
            if not isinstance(e, WalError | OSError):
                log.exception("wal_writer_crashed")
                raise
        finally:
            with trio.CancelScope(shield=True):
                while self._uploads:
                    await self._slot_lot.park()
            self._writer_done.set()

    async def _issue_loop(self) -> None:
        delay = self._cfg.max_group_delay_ms / 1000.0
        while self._fenced is None:
            if not self._groups:
                if self._closing:
                    break
                self._writer_parked = True
                await self._writer_lot.park()
                continue
            if len(self._inflight) >= self._window:
                await self._slot_lot.park()
                continue
            cap = self._cfg.max_bytes
            if cap is not None and self._index_bytes >= cap:
                self.waiting_for_space = True
                metrics.FULL.set(1)
                if self._closing:
                    raise WalClosedError("WAL closed while full (size cap reached)")
                await self._space_lot.park()
                continue
            if self.waiting_for_space:
                self.waiting_for_space = False
                metrics.FULL.set(0)
            g = self._groups[0]
            if delay and g is self._open and not self._closing:
                wait_until = g.t0 + delay - time.perf_counter()
                if wait_until > 0 and g.rec < self._cfg.max_group_bytes:
                    self._writer_parked = True
                    with trio.move_on_after(wait_until):
                        await self._writer_lot.park()
                    self._writer_parked = False
                    if (
                        g is self._open
                        and g.t0 + delay > time.perf_counter() + 1e-4
                        and (g.rec < self._cfg.max_group_bytes)
                    ):
                        continue
            self._groups.popleft()
            if self._open is g:
                self._open = None
            self._issue(g)
        while self._inflight and self._fenced is None:
            await self._slot_lot.park()

    def _issue(self, g: _Group) -> None:
        assert self._nursery is not None and g.first_lsn == self._next_lsn
        g.slot = self._next_slot
        self._next_slot += 1
        self._next_lsn += len(g.entries)
        self._pending_bytes -= g.rec
        self._pending_entries -= len(g.entries)
        self._room_lot.unpark_all()
        self._inflight.append(g)
        self._uploads += 1
        self._nursery.start_soon(self._upload, g, g.slot - self._published_slot)

    async def _upload(self, g: _Group, back: int) -> None:
        try:
            body = await trio.to_thread.run_sync(
                lambda: encode_object(
                    epoch=self._epoch,
                    slot=g.slot,
                    first_lsn=g.first_lsn,
                    back=back,
                    entries=g.entries,
                )
            )
            t = time.perf_counter()
            await self.put_slot(g.slot, body)
            g.elapsed = time.perf_counter() - t
            g.body = body
            g.written = True
            metrics.S3_PUT_LATENCY.observe(g.elapsed)
            metrics.S3_OBJECT_BYTES.observe(len(body))
            if self._fenced is None:
                self._publish_ready()
        except trio.Cancelled:
            raise
        except BaseException as e:
            self._fence(e)
        finally:
            self._uploads -= 1
            self._slot_lot.unpark_all()

    async def put_slot(self, slot: int, body: bytes) -> None:
        """Create slot `slot`'s object; fence-worthy failures raise (see module docstring)."""
        key = object_name(slot)
        deadline = trio.current_time() + self._cfg.put_deadline_s
        delays = backoff_delays(0.05, 1.0)
        while True:
            if self._fenced is not None:
                raise WalFencedError(f"fenced while storing {key}")
            try:
                with trio.fail_at(min(deadline, trio.current_time() + self._cfg.request_timeout_s)):
                    await trio.to_thread.run_sync(
                        lambda: self._store.put(key, body, if_none_match=True),
                        abandon_on_cancel=True,
                    )
                return
            except PreconditionFailed:
                if await self._slot_taken(key, body, deadline):
                    return
            except _TRANSIENT as exc:
                left = deadline - trio.current_time()
                if left <= 0:
                    raise WalFencedError(
                        f"PUT {self._store.describe()}{key} not stored within "
                        f"put_deadline_s={self._cfg.put_deadline_s}: {exc!r}"
                    ) from exc
                metrics.S3_RETRIES.labels("put").inc()
                log.warning("wal_s3_put_retry", key=key, error=repr(exc))
                await trio.sleep(min(next(delays), left))

    async def _slot_taken(self, key: str, body: bytes, deadline: float) -> bool:
        """The slot exists: True if it is ours, False to retry it; raise to fence."""
        left = max(0.1, deadline - trio.current_time())
        data = await self._retry("get", _get_retrying, self._store, key, budget_s=left)
        if data is None:
            return False  # deleted meanwhile (a stray's cleanup): try again
        if data == body:
            return True  # an earlier attempt of ours landed
        try:
            h = decode_object_header(data)
        except ObjectFormatError as exc:
            raise WalFencedError(f"slot {key} holds a damaged object: {exc}") from None
        if h.epoch > self._epoch:
            raise WalFencedError(
                f"superseded: {key} was written by a newer writer (epoch {h.epoch}, this one "
                f"{self._epoch}); nothing more is acknowledged here"
            )
        if h.epoch < self._epoch:
            log.warning("wal_s3_stray_deleted", key=key, epoch=h.epoch)
            metrics.S3_STRAYS.inc()
            await self._retry("delete", self._store.delete, key, budget_s=left)
            return False
        raise WalFencedError(f"slot {key} holds another object of this writer's epoch")

    def _publish_ready(self) -> None:
        inflight = self._inflight
        now = time.perf_counter()
        entries = groups = nbytes = 0
        while inflight and inflight[0].written:
            g = inflight.popleft()
            n = len(g.entries)
            g.finish(None)
            assert g.body is not None
            size = len(g.body)
            self._index.append(RunObject(g.slot, g.first_lsn, n, size))
            self._index_lsns.append(g.first_lsn)
            self._index_bytes += size
            self._cache_put(g.slot, g.body)
            g.body = None
            self._published_slot = g.slot
            self._durable_lsn = g.first_lsn + n - 1
            metrics.APPEND_LATENCY.observe(now - g.t0)
            metrics.SYNC_LATENCY.observe(g.elapsed)
            metrics.GROUP_SIZE.observe(n)
            g.entries = []
            groups += 1
            entries += n
            nbytes += size
        if groups:
            self.groups_written += groups
            self.entries_written += entries
            metrics.BYTES_WRITTEN.inc(nbytes)
            metrics.APPENDS.inc(entries)
            metrics.S3_OBJECTS.inc(groups)
            self._update_gauges()
            self._durable_lot.unpark_all()

    def _cache_put(self, slot: int, body: bytes | None) -> None:
        if body is None or len(body) > self._cfg.read_cache_bytes:
            return
        self._cache[slot] = body
        self._cache_bytes += len(body)
        while self._cache_bytes > self._cfg.read_cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= len(old)

    def _fence(self, exc: BaseException) -> None:
        if isinstance(exc, WalClosedError):
            self._fail_all(exc)
            return
        if self._fenced is None:
            self._fenced = exc
            metrics.FENCED.set(1)
            log.error(
                "wal_fenced",
                backend="s3",
                error=repr(exc),
                last_durable_lsn=self._durable_lsn,
                in_flight=len(self._inflight),
            )
            err = WalFencedError(
                f"WAL fenced: {exc}; this entry was not acknowledged and no later entry will be"
            )
            err.__cause__ = exc
            self._fence_error = err
        self._writer_lot.unpark_all()
        self._slot_lot.unpark_all()
        assert self._fence_error is not None
        self._fail_all(self._fence_error)

    def _fail_all(self, err: BaseException) -> None:
        for g in [*self._inflight, *self._groups]:
            g.finish(err)
        self._inflight.clear()
        self._groups.clear()
        self._open = None
        self._pending_bytes = self._pending_entries = 0
        self._room_lot.unpark_all()
        self._durable_lot.unpark_all()
        self._space_lot.unpark_all()

    def _update_gauges(self) -> None:
        metrics.SEGMENTS.set(len(self._index))
        metrics.USED_BYTES.set(self._index_bytes)

    # ------------------------------------------------------------------------ trim
    async def trim(self, upto_lsn: int) -> None:
        """Discard entries <= upto_lsn; deletes every object whose entries are all covered.

        The new trim point is stored first, with a conditional replace of the lease (a
        superseded writer fails here and fences), then the objects are deleted.
        """
        if self._fenced is not None:
            raise WalFencedError(f"WAL is fenced: {self._fenced!r}")
        upto = min(upto_lsn, self._durable_lsn)
        if upto <= self._trim_lsn:
            return
        async with self._trim_lock:
            if upto <= self._trim_lsn:
                return
            k = 0
            while k < len(self._index) and self._index[k].next_lsn - 1 <= upto:
                k += 1
            if k < len(self._index):
                slot, slot_lsn = self._index[k].slot, self._index[k].first_lsn
            else:  # every published object goes; the next one starts after them
                slot, slot_lsn = self._published_slot + 1, self._durable_lsn + 1
            new = Lease(self._epoch, slot, slot_lsn, upto)
            try:
                await self._replace_lease(new)
            except BaseException as e:
                self._fence(e)
                raise
            self._lease, self._trim_lsn = new, upto
            victims = self._index[:k]
            del self._index[:k]
            del self._index_lsns[:k]
            self._index_bytes -= sum(v.size for v in victims)
            self._update_gauges()
            self._space_lot.unpark_all()
            for v in victims:
                self._cache.pop(v.slot, None)
                try:
                    await self._retry("delete", self._store.delete, object_name(v.slot))
                except WalError as exc:  # leftovers below the trim slot go at the next open
                    log.warning("wal_s3_trim_delete_failed", slot=v.slot, error=str(exc))

    async def _replace_lease(self, new: Lease) -> None:
        body = new.encode()
        try:
            self._lease_etag = await self._retry(
                "lease", self._store.put, LEASE_NAME, body, if_match=self._lease_etag
            )
        except PreconditionFailed:
            current = await self._retry("get", _get_retrying, self._store, LEASE_NAME)
            if current != body:  # (equal: our earlier attempt landed)
                raise WalFencedError(
                    f"{self._store.describe()}{LEASE_NAME} was taken by another writer"
                ) from None
            _, self._lease_etag = await self._retry("lease", read_lease, self._store)

    # --------------------------------------------------------------------- readers
    def _object_bytes(self, slot: int) -> bytes:
        body = self._cache.get(slot)
        if body is not None:
            return body
        data = _get_retrying(self._store, object_name(slot))
        if data is None:
            if slot < self._lease.trim_slot:
                raise WalTrimmedError(f"object {object_name(slot)} was trimmed")
            raise WalCorruptionError(
                "acknowledged object is missing", self._store.describe() + object_name(slot)
            )
        return data

    def _read_batch(self, lsn: int, upto: int, max_bytes: int) -> list[Entry]:
        if lsn <= self._trim_lsn:
            raise WalTrimmedError(f"LSN {lsn} was trimmed (first available {self.first_lsn})")
        index = list(self._index)  # a snapshot: trim may cut the list meanwhile
        lsns = [o.first_lsn for o in index]
        i = max(bisect.bisect_right(lsns, lsn) - 1, 0)
        out: list[Entry] = []
        got = 0
        while i < len(index) and lsn <= upto and got < max_bytes:
            o = index[i]
            i += 1
            if o.count == 0 or o.first_lsn + o.count <= lsn:
                continue
            try:
                d = decode_object(self._object_bytes(o.slot), o.slot)
            except ObjectFormatError as exc:
                raise WalCorruptionError(
                    f"invalid object while reading ({exc})",
                    self._store.describe() + object_name(o.slot),
                ) from None
            for e_lsn, typ, payload in d.entries:
                if lsn <= e_lsn <= upto:
                    out.append(Entry(e_lsn, typ, payload))
                    got += len(payload)
                    lsn = e_lsn + 1
        return out

    def read_from(self, lsn: int | None = None) -> Iterator[Entry]:
        """Durable entries with LSN >= lsn (blocking GETs: call from a worker thread)."""
        cur = self.first_lsn if lsn is None else lsn
        if cur < self.first_lsn:
            raise WalTrimmedError(f"LSN {cur} was trimmed (first available {self.first_lsn})")
        while cur <= self._durable_lsn:
            batch = self._read_batch(cur, self._durable_lsn, 16 << 20)
            if not batch:
                return
            yield from batch
            cur = batch[-1].lsn + 1

    def follow(self, lsn: int | None = None, *, batch_bytes: int = 4 << 20) -> writer._Follower:
        """Async iterator over entries from `lsn`, waiting for new durable ones (the file
        WAL's follower: it reads through `_read_batch`)."""
        return writer._Follower(self, self.first_lsn if lsn is None else lsn, batch_bytes)  # type: ignore[arg-type]

    # ----------------------------------------------------------------------- close
    def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        metrics.DIRECT_IO.set(0)
        metrics.FENCED.set(0)
        metrics.FULL.set(0)
        metrics.CAPACITY_BYTES.set(self._cfg.max_bytes or 0)
        self._update_gauges()
        nursery.start_soon(self._writer_loop)

    async def aclose(self) -> None:
        """Upload what is queued, wait for every upload, stop."""
        if self._closed:
            return
        self._closing = True
        self._writer_lot.unpark_all()
        self._space_lot.unpark_all()
        await self._writer_done.wait()
        self._closed = True
        self._durable_lot.unpark_all()
        log.info("wal_closed", backend="s3", last_lsn=self._durable_lsn, epoch=self._epoch)


@asynccontextmanager
async def open_s3_wal(
    store: ObjectStore, config: S3WalConfig | None = None, *, wal_class: type[S3Wal] = S3Wal
) -> AsyncIterator[S3Wal]:
    """Open and recover the S3 WAL under `store` (its prefix is the WAL's own)."""
    wal = wal_class(store, config or S3WalConfig())
    await wal._recover()
    async with writer.serving(wal) as served:
        yield served
