#!/usr/bin/env python3
"""WAL benchmark: the disk's physical floor vs the WAL with group commit.

Prints numbers; it is not a test.  Everything runs on the same directory
(default /var/tmp/wal-bench, --dir to change), each measurement bounded by
time (--seconds, --quick).

(a) floor:  one aligned 4 KiB O_DIRECT|O_DSYNC write per op (= one durable
            append without group commit), and sequential 1 MiB O_DIRECT|O_DSYNC
            writes (raw bandwidth).  Both on zero-filled, preallocated files,
            like the WAL's recycled segments.  Measured at the start, again
            right before every WAL shape (the ratios use that adjacent floor:
            on a shared machine the disk's speed drifts within a run), and at
            the end.
(b) WAL:    1/8/64/256 concurrent appenders of 1 KiB and 64 KiB entries, with an
            offloader-like task trimming every 50 ms so segments get recycled
            (steady state), after a short warm-up; then the produce path's shape,
            5 appenders of 1 MiB entries.

The machine's load average is printed at the start and the end: on a shared
machine the figures are only comparable between runs with similar load.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import logging

import structlog
import trio

from wal import WalConfig, open_wal

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


INFLIGHT = WalConfig().max_inflight_groups  # --inflight
IO = WalConfig().io  # --io


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * p))]


def load() -> str:
    """The 1/5/15-minute load averages (2 cores: above 2 the CPU is contended)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def prealloc(path: str, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    zeros = bytes(1 << 20)
    for off in range(0, size, 1 << 20):
        os.pwrite(fd, zeros, off)
    os.fsync(fd)
    os.close(fd)


class Floor:
    """The disk's physical floor, measurable again and again on the same files.

    On a shared machine the disk's speed drifts within a run, so every WAL shape is
    compared with a floor measured right before it, not only with the first one.
    """

    SYNC_SIZE = 64 << 20
    BW_SIZE = 256 << 20

    def __init__(self, directory: str) -> None:
        self._sync_path = os.path.join(directory, "floor.bin")
        self._bw_path = os.path.join(directory, "bw.bin")
        prealloc(self._sync_path, self.SYNC_SIZE)
        prealloc(self._bw_path, self.BW_SIZE)
        self._sync_off = 0
        self._bw_off = 0

    def sync(self, seconds: float) -> dict[str, float]:
        """One aligned 4 KiB O_DIRECT|O_DSYNC write per op: ops/s, p50, p99."""
        fd = os.open(self._sync_path, os.O_RDWR | os.O_DIRECT | os.O_DSYNC)
        buf = mmap.mmap(-1, 4096)
        buf.write(b"x" * 4096)
        lat: list[float] = []
        t_end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < t_end:
            s = time.perf_counter()
            os.pwrite(fd, buf, self._sync_off)
            lat.append(time.perf_counter() - s)
            self._sync_off = (self._sync_off + 4096) % self.SYNC_SIZE
        el = time.perf_counter() - t0
        os.close(fd)
        lat.sort()
        return {"ops": len(lat) / el, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}

    def bandwidth(self, seconds: float) -> float:
        """Sequential 1 MiB O_DIRECT|O_DSYNC writes, one at a time: MB/s."""
        fd = os.open(self._bw_path, os.O_RDWR | os.O_DIRECT | os.O_DSYNC)
        buf = mmap.mmap(-1, 1 << 20)
        buf.write(b"y" * (1 << 20))
        n = 0
        t_end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < t_end:
            os.pwrite(fd, buf, self._bw_off)
            n += 1
            self._bw_off = (self._bw_off + (1 << 20)) % self.BW_SIZE
        el = time.perf_counter() - t0
        os.close(fd)
        return n * (1 << 20) / el / 1e6


async def wal_run(
    directory: str, entry: int, conc: int, seconds: float, warmup: float
) -> dict[str, float]:
    cfg = WalConfig(spare_segments=6, max_inflight_groups=INFLIGHT, io=IO)
    payload = os.urandom(entry)
    lat: list[float] = []
    counting = False
    stop = False
    async with open_wal(directory, cfg) as wal:

        async def appender() -> None:
            while not stop:
                s = time.perf_counter()
                await wal.append(payload, type=1)
                if counting:
                    lat.append(time.perf_counter() - s)

        async def trimmer() -> None:
            while True:
                await trio.sleep(0.05)
                await wal.trim(wal.last_durable_lsn)

        async with trio.open_nursery() as n:
            n.start_soon(trimmer)
            for _ in range(conc):
                n.start_soon(appender)
            await trio.sleep(warmup)
            g0, e0 = wal.groups_written, wal.entries_written
            counting = True
            t0 = time.perf_counter()
            await trio.sleep(seconds)
            counting = False
            el = time.perf_counter() - t0
            g1, e1 = wal.groups_written, wal.entries_written
            stop = True
            n.cancel_scope.cancel()
        direct = wal.direct_io
    lat.sort()
    return {
        "ops": len(lat) / el,
        "mbs": len(lat) * entry / el / 1e6,
        "p50": pct(lat, 0.5),
        "p99": pct(lat, 0.99),
        "p999": pct(lat, 0.999),
        "group": (e1 - e0) / max(1, g1 - g0),
        "direct": float(direct),
    }


def main() -> int:
    global INFLIGHT, IO
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/var/tmp/wal-bench")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--quick", action="store_true", help="1 s per measurement")
    ap.add_argument(
        "--inflight",
        type=int,
        default=INFLIGHT,
        help="WalConfig.max_inflight_groups (default: the WAL's default)",
    )
    ap.add_argument(
        "--io",
        choices=["auto", "inline", "thread"],
        default=IO,
        help="WalConfig.io: write on the event loop's thread, or in worker threads",
    )
    ap.add_argument(
        "--shapes",
        default="",
        help="only these entry:conc shapes, e.g. 1024:64,65536:64 (default: all)",
    )
    args = ap.parse_args()
    INFLIGHT, IO = args.inflight, args.io
    secs = 1.0 if args.quick else args.seconds
    warm = 0.3 if args.quick else 1.0
    base = os.path.abspath(args.dir)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    try:
        floor = Floor(base)
        fl = floor.sync(secs)
        bw = floor.bandwidth(secs)
        print(
            f"directory: {base}  ({secs:g} s per measurement, io {IO}, "
            f"max_inflight_groups {INFLIGHT})"
        )
        print(
            f"floor: 4 KiB O_DIRECT|O_DSYNC write per op: {fl['ops']:.0f} ops/s, "
            f"p50 {fl['p50'] * 1e6:.0f} us, p99 {fl['p99'] * 1e6:.0f} us"
        )
        print(f"floor: sequential 1 MiB O_DIRECT|O_DSYNC writes: {bw:.0f} MB/s")
        print(f"load average at start: {load()}")
        print(
            "ratios use the floor re-measured right before each shape (columns fl ops/s, "
            "fl p99, fl MB/s)"
        )
        print()
        hdr = (
            f"{'entry':>6} {'conc':>5} {'appends/s':>10} {'MB/s':>7} {'p50 us':>8} "
            f"{'p99 us':>8} {'p999 us':>8} {'group':>6} {'fl ops/s':>8} {'fl p99':>7} "
            f"{'fl MB/s':>7} {'x floor':>8} {'%bw':>5} {'p99/floor':>9}"
        )
        print(hdr)
        res: dict[tuple[int, int], dict[str, float]] = {}
        shapes = [(e, c) for e in (1024, 65536) for c in (1, 8, 64, 256)] + [(1 << 20, 5)]
        if args.shapes:
            shapes = [tuple(int(x) for x in s.split(":")) for s in args.shapes.split(",")]
        adjacent = max(0.5, secs / 3)
        for entry, conc in shapes:
            f_sync = floor.sync(adjacent)
            f_bw = floor.bandwidth(adjacent)
            d = os.path.join(base, f"wal-{entry}-{conc}")
            r = trio.run(wal_run, d, entry, conc, secs, warm)
            shutil.rmtree(d)
            r["x_floor"] = r["ops"] / f_sync["ops"]
            r["bw_frac"] = r["mbs"] / f_bw
            r["p99_ratio"] = r["p99"] / f_sync["p99"]
            res[(entry, conc)] = r
            size = f"{entry // 1024}K" if entry < (1 << 20) else f"{entry >> 20}M"
            print(
                f"{size:>6} {conc:>5} {r['ops']:>10.0f} {r['mbs']:>7.1f} "
                f"{r['p50'] * 1e6:>8.0f} {r['p99'] * 1e6:>8.0f} {r['p999'] * 1e6:>8.0f} "
                f"{r['group']:>6.1f} {f_sync['ops']:>8.0f} {f_sync['p99'] * 1e6:>7.0f} "
                f"{f_bw:>7.0f} {r['x_floor']:>8.1f} {100 * r['bw_frac']:>5.0f} "
                f"{r['p99_ratio']:>9.1f}",
                flush=True,
            )
        fl_end = floor.sync(secs)
        bw_end = floor.bandwidth(secs)
        print(
            f"floor again at the end: {fl_end['ops']:.0f} ops/s, p99 "
            f"{fl_end['p99'] * 1e6:.0f} us; {bw_end:.0f} MB/s"
        )
        print()
        if (1024, 64) in res:
            small = res[(1024, 64)]
            t1, t3 = small["x_floor"], small["p99_ratio"]
            print(
                f"target 1: 64 x 1 KiB appends/s >= 20x floor: {t1:.1f}x -> "
                f"{'MET' if t1 >= 20 else 'NOT MET'}"
            )
            print(
                f"target 3: p99 (64 x 1 KiB) <= 3x single-sync p99: {t3:.1f}x -> "
                f"{'MET' if t3 <= 3 else 'NOT MET'}"
            )
        bigs = [res[(65536, c)] for c in (8, 64, 256) if (65536, c) in res]
        if bigs:
            t2 = max(r["bw_frac"] for r in bigs)
            print(
                f"target 2: 64 KiB entries >= 70% of raw bandwidth: {100 * t2:.0f}% -> "
                f"{'MET' if t2 >= 0.7 else 'NOT MET'}"
            )
        direct = next(iter(res.values()))["direct"]
        print(f"direct_io: {'yes' if direct else 'NO (buffered fallback)'}")
        print(f"load average at end: {load()}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
