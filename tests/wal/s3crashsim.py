"""Crash simulation of the S3 WAL: the same model and checker as crashsim.py, another medium.

:class:`SimStore` is an in-memory object store with S3's conditional-write semantics
(If-None-Match / If-Match) whose PUTs take a random few milliseconds, so several are in
flight at once.  A *crash* freezes it: from then on the old writer's every request fails
(it is partitioned away and fences), and the next round gets a copy holding what had
landed, plus each PUT that was still in flight with probability ``p_land`` -- some of them
only later, after the next writer opened (a zombie's late upload).  The checker
(:func:`tests.wal.crashsim.check_log`) then demands what it demands of the file WAL: every
acknowledged entry present at its LSN, nothing invented, nothing trimmed resurrected, and
no false "corruption" after a crash.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import trio

from tests.wal.crashsim import Model, check_log, workload
from wal import WalCorruptionError, WalError
from wal.config import S3WalConfig
from wal.object_store import (
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StoredObject,
    StoreError,
    md5_etag,
    same_etag,
)
from wal.s3_wal import S3Wal, open_s3_wal

CFG = S3WalConfig(
    max_group_bytes=6000,
    max_group_entries=8,
    max_inflight_groups=4,
    max_pending_bytes=64 * 1024,
    max_bytes=80 * 1024,
    request_timeout_s=0.2,
    put_deadline_s=0.1,
    read_cache_bytes=0,
)


@dataclass
class _Late:
    key: str
    data: bytes
    after_ops: int  # lands once the store served this many requests; -1: just before a PUT
    # of the same key (the adversarial race)


class SimStore:
    def __init__(self, objects: dict[str, bytes] | None = None, seed: int = 0) -> None:
        self.objects: dict[str, bytes] = dict(objects or {})
        self.frozen = False
        self.inflight: dict[int, tuple[str, bytes]] = {}
        self.late: list[_Late] = []
        self.cut: list[tuple[str, bytes]] = []  # PUTs in flight when it froze
        self.ops = 0
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._ids = 0

    def describe(self) -> str:
        return "sim://"

    def freeze(self) -> None:
        """The crash: requests in flight never answer (they may land, see `crash`)."""
        with self._lock:
            if not self.frozen:
                self.frozen = True
                self.cut = list(self.inflight.values())

    def _tick(self) -> None:
        if self.frozen:
            raise StoreError("partitioned (crashed)", "connection")
        self.ops += 1
        for late in [x for x in self.late if 0 <= x.after_ops <= self.ops]:
            self.late.remove(late)
            self.objects.setdefault(late.key, late.data)  # a conditional PUT: never replaces

    def get(self, key: str) -> StoredObject:
        with self._lock:
            self._tick()
            if key not in self.objects:
                raise ObjectNotFound(key)
            data = self.objects[key]
            return StoredObject(data, md5_etag(data))

    def head(self, key: str) -> ObjectInfo | None:
        with self._lock:
            self._tick()
            data = self.objects.get(key)
            return None if data is None else ObjectInfo(key, len(data), md5_etag(data))

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        with self._lock:
            self._tick()
            self._ids += 1
            op = self._ids
            self.inflight[op] = (key, data)
            delay = self._rng.choice([0, 0, 0.001, 0.003, 0.01])
        time.sleep(delay)  # in flight: a crash now may or may not let it land
        with self._lock:
            self.inflight.pop(op, None)
            self._tick()
            for late in [x for x in self.late if x.key == key and x.after_ops < 0]:
                self.late.remove(late)  # the adversarial race: the stalled PUT lands first
                self.objects.setdefault(late.key, late.data)
            cur = self.objects.get(key)
            if if_none_match and cur is not None:
                raise PreconditionFailed(key)
            if if_match is not None and (cur is None or not same_etag(md5_etag(cur), if_match)):
                raise PreconditionFailed(key)
            self.objects[key] = bytes(data)
            return md5_etag(data)

    def list(self, prefix: str) -> list[ObjectInfo]:
        with self._lock:
            self._tick()
            return [
                ObjectInfo(k, len(v), md5_etag(v))
                for k, v in sorted(self.objects.items())
                if k.startswith(prefix)
            ]

    def delete(self, key: str) -> None:
        with self._lock:
            self._tick()
            self.objects.pop(key, None)

    def crash(self, rng: random.Random, p_land: float, race: bool = False) -> SimStore:
        """Freeze this store; the next one holds what landed (and lands some PUTs late)."""
        self.freeze()
        with self._lock:
            nxt = SimStore(self.objects, rng.randrange(1 << 30))
            nxt.late = list(self.late)
            for key, data in self.cut:
                r = rng.random()
                if race:  # every PUT in flight lands just before someone else's on its key
                    nxt.late.append(_Late(key, data, -1))
                elif r < p_land / 2:
                    nxt.objects.setdefault(key, data)
                elif r < p_land:
                    nxt.late.append(_Late(key, data, rng.choice([-1, rng.randint(0, 60)])))
        return nxt


async def _round(store: SimStore, rng: random.Random, model: Model, wal_class: type[S3Wal]) -> None:
    async def crash_later() -> None:
        await trio.sleep(rng.uniform(0, 0.05))
        store.freeze()

    async with trio.open_nursery() as outer:
        try:
            await _run_writer(store, rng, model, wal_class, outer, crash_later)
        except WalCorruptionError as e:
            model.violations.append(f"WAL refused to open after a crash: {e}")
        except (OSError, WalError):
            pass  # the crash hit during open
        outer.cancel_scope.cancel()


async def _run_writer(store, rng, model, wal_class, outer, crash_later) -> None:  # type: ignore[no-untyped-def]
    async with open_s3_wal(store, CFG, wal_class=wal_class) as wal:
        entries = await trio.to_thread.run_sync(lambda: list(wal.read_from()))
        model.violations += check_log(model, entries, wal.first_lsn)
        outer.start_soon(crash_later)
        await workload(wal, rng, model)


def run_s3_scenario(
    rng: random.Random,
    rounds: int = 4,
    wal_class: type[S3Wal] = S3Wal,
    p_land: float | None = None,
    race: bool = False,
) -> list[str]:
    model = Model()
    store = SimStore(seed=rng.randrange(1 << 30))

    async def main() -> None:
        nonlocal store
        for _ in range(rounds):
            await _round(store, rng, model, wal_class)
            p = rng.choice([0.0, 0.5, 1.0]) if p_land is None else p_land
            store = store.crash(rng, p, race)
        try:
            async with open_s3_wal(store, CFG, wal_class=wal_class) as wal:
                entries = await trio.to_thread.run_sync(lambda: list(wal.read_from()))
                model.violations += check_log(model, entries, wal.first_lsn)
        except WalCorruptionError as e:
            model.violations.append(f"WAL refused to open after a crash: {e}")

    trio.run(main)
    return model.violations
