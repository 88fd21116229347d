"""Crash-simulation harness shared by the property tests and the negative controls.

A *scenario* runs several rounds against one MemoryBackend.  Each round opens
the WAL (recovering from the previous crash), checks the recovered log against
the model, then runs random concurrent appends and trims until a power loss
is injected after a random number of storage operations.  The crash then keeps,
drops or garbles every unsynced sector.  The model records exactly what the
WAL acknowledged; `check_log` reports every violation of:

* every acknowledged entry is present, intact, at its LSN;
* LSNs are consecutive; nothing trimmed (after trim() returned) reappears;
* every present entry is byte-identical to something that was appended (no
  garbage validates), appears once, and nothing once seen gone comes back;
* a crash never makes the WAL refuse to open (no false "corruption").
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field, replace

import trio

from wal import (
    Entry,
    Wal,
    WalClosedError,
    WalConfig,
    WalCorruptionError,
    WalError,
    open_wal,
)
from wal.testing import MemoryBackend

CFG = WalConfig(
    segment_size=16 * 4096,
    max_group_bytes=3 * 4096,
    max_group_entries=16,
    max_pending_bytes=64 * 1024,
    spare_segments=1,
    max_bytes=4 * 16 * 4096,
)


@dataclass
class Model:
    payloads: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # id -> (type, bytes)
    acked: dict[int, int] = field(default_factory=dict)  # lsn -> id (acked or observed)
    gone: set[int] = field(default_factory=set)  # ids observed absent after a recovery
    trimmed: int = 0  # highest LSN whose trim() returned
    next_id: int = 1
    violations: list[str] = field(default_factory=list)

    def new_payload(self, rng: random.Random) -> tuple[int, int, bytes]:
        pid = self.next_id
        self.next_id += 1
        size = rng.choice([0, 1, 7, 100, 500, 1000, 3000, 5000, 9000])
        body = struct.pack("<Q", pid) + rng.randbytes(size)
        typ = rng.randrange(0, 4)
        self.payloads[pid] = (typ, body)
        return pid, typ, body


def check_log(model: Model, entries: list[Entry], first_lsn: int) -> list[str]:
    """Compare a recovered log with the model; also fold what was seen into it."""
    v: list[str] = []
    if first_lsn - 1 < model.trimmed:
        v.append(f"trimmed entries resurrected: first_lsn {first_lsn} <= trim {model.trimmed}")
    seen: dict[int, int] = {}
    prev = None
    for e in entries:
        if prev is not None and e.lsn != prev + 1:
            v.append(f"LSN gap/disorder: {prev} then {e.lsn}")
        prev = e.lsn
        if len(e.payload) < 8:
            v.append(f"lsn {e.lsn}: garbage payload {e.payload!r}")
            continue
        (pid,) = struct.unpack_from("<Q", e.payload)
        exp = model.payloads.get(pid)
        if exp is None or exp != (e.type, e.payload):
            v.append(f"lsn {e.lsn}: corrupted or unknown entry (id {pid})")
            continue
        if pid in seen:
            v.append(f"lsn {e.lsn}: entry id {pid} duplicated (also at {seen[pid]})")
        if pid in model.gone:
            v.append(f"lsn {e.lsn}: entry id {pid} resurrected after being gone")
        seen[pid] = e.lsn
    by_lsn = {e.lsn: e for e in entries}
    for lsn, pid in model.acked.items():
        if lsn <= max(model.trimmed, first_lsn - 1):
            continue
        e = by_lsn.get(lsn)
        if e is None or e.payload != model.payloads[pid][1]:
            v.append(f"acknowledged lsn {lsn} (id {pid}) lost or changed")
    # fold: what is present now is the log; anything attempted and absent is gone
    for lsn, e in by_lsn.items():
        (pid,) = struct.unpack_from("<Q", e.payload) if len(e.payload) >= 8 else (None,)
        if pid in model.payloads:
            model.acked[lsn] = pid
    present = set(seen)
    for pid in model.payloads:
        if pid not in present and pid not in model.acked.values():
            model.gone.add(pid)
    return v


async def _round(
    backend: MemoryBackend, rng: random.Random, model: Model, wal_class: type[Wal], cfg: WalConfig
) -> None:
    if rng.random() < 0.15:
        backend.crash_after = rng.randint(0, 6)  # power loss during open/recovery
    try:
        async with open_wal(backend, cfg, wal_class=wal_class) as wal:
            entries = await trio.to_thread.run_sync(lambda: list(wal.read_from()))
            model.violations += check_log(model, entries, wal.first_lsn)
            if backend.crash_after is None:
                backend.crash_after = rng.randint(0, 40)
            await workload(wal, rng, model)
            if rng.random() < 0.5:
                backend.crash_after = 0  # crash before the clean close
    except WalCorruptionError as e:
        model.violations.append(f"WAL refused to open after a crash: {e}")
    except (OSError, WalError):
        pass  # the crash hit during open or close


async def workload(wal: Wal, rng: random.Random, model: Model) -> None:
    """Random concurrent appends and trims (any WAL with the public API), recorded in model."""
    for _ in range(rng.randint(1, 6)):
        if wal.fenced:
            break
        if rng.random() < 0.2 and wal.last_durable_lsn:
            upto = rng.randint(wal.first_lsn - 1, wal.last_durable_lsn)
            try:
                await wal.trim(upto)
                model.trimmed = max(model.trimmed, upto)
            except (OSError, WalError):
                pass
            continue
        async with trio.open_nursery() as n:
            async with trio.open_nursery() as appenders:
                n.start_soon(_janitor, wal, model)
                for _ in range(rng.randint(1, 8)):
                    items = [model.new_payload(rng) for _ in range(rng.choice([1, 1, 2, 3]))]
                    appenders.start_soon(_appender, wal, model, items)
            n.cancel_scope.cancel()


async def _janitor(wal: Wal, model: Model) -> None:
    """Play the offloader: when the size cap blocks the writer, trim everything durable."""
    while True:
        await trio.sleep(0.0005)
        if wal.waiting_for_space and not wal.fenced:
            upto = wal.last_durable_lsn
            try:
                await wal.trim(upto)
                model.trimmed = max(model.trimmed, upto)
            except (OSError, WalError):
                return


async def _appender(wal: Wal, model: Model, items: list[tuple[int, int, bytes]]) -> None:
    try:
        if len(items) == 1:
            lsns = [await wal.append(items[0][2], type=items[0][1])]
        else:
            lsns = await wal.append_many([(t, b) for _, t, b in items])
    except (WalError, OSError):
        return
    for lsn, (pid, _, _) in zip(lsns, items, strict=True):
        if lsn in model.acked:
            model.violations.append(f"LSN {lsn} acknowledged twice")
        model.acked[lsn] = pid


async def _final_check(
    backend: MemoryBackend, model: Model, wal_class: type[Wal], cfg: WalConfig
) -> None:
    try:
        async with open_wal(backend, cfg, wal_class=wal_class) as wal:
            entries = await trio.to_thread.run_sync(lambda: list(wal.read_from()))
            model.violations += check_log(model, entries, wal.first_lsn)
    except WalCorruptionError as e:
        model.violations.append(f"WAL refused to open after a crash: {e}")
    except WalClosedError:
        pass


def run_scenario(
    rng: random.Random,
    rounds: int = 4,
    wal_class: type[Wal] = Wal,
    ignore_sync: bool = False,
    io: str = "thread",
) -> list[str]:
    """Run one multi-crash scenario; return the violations found (empty = correct).
    ``io`` is the writer's I/O mode (``WalConfig.io``): "thread" keeps several groups in
    flight (the window), "inline" writes one group at a time on the trio thread, "auto"
    mixes both."""
    # "auto" with a low threshold, so a history mixes inline and threaded group writes
    cfg = replace(CFG, io=io, inline_max_bytes=2 * 4096)
    model = Model()
    backend = MemoryBackend(alignment=512)

    async def main() -> None:
        nonlocal backend
        for _ in range(rounds):
            backend.ignore_sync = ignore_sync
            await _round(backend, rng, model, wal_class, cfg)
            p_drop = rng.choice([0.0, 0.3, 0.5, 1.0])
            p_keep = rng.uniform(0, 1 - p_drop)
            backend = backend.crash(rng, p_keep=p_keep, p_drop=p_drop)
        backend.ignore_sync = False
        await _final_check(backend, model, wal_class, cfg)

    trio.run(main)
    return model.violations
