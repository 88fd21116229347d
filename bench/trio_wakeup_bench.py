"""What one trio wake-up costs: the floor under a WAL where every append is a trio task.

``tasks`` tasks park on one :class:`trio.lowlevel.ParkingLot`; a driver waits until all are
parked and unparks them all, ``rounds`` times. Each cycle is what a group commit does for
each of its appenders at the least (park until durable, be rescheduled), with no WAL work at
all. Prints CPU and wall time per task wake-up and the wake-ups per second one core can do.
Run: ``.venv/bin/python bench/trio_wakeup_bench.py`` on a quiet machine; a script, not a test.
"""

from __future__ import annotations

import argparse
import time

import trio


async def _measure(tasks: int, rounds: int) -> tuple[float, float]:
    lot = trio.lowlevel.ParkingLot()

    async def appender() -> None:
        for _ in range(rounds):
            await lot.park()

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(appender)
        await trio.sleep(0.01)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            while len(lot) < tasks:
                await trio.lowlevel.cancel_shielded_checkpoint()
            lot.unpark_all()
        cpu1, wall1 = time.process_time(), time.perf_counter()
    return cpu1 - cpu0, wall1 - wall0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = args.tasks * args.rounds
    for run in range(args.runs):
        cpu, wall = trio.run(_measure, args.tasks, args.rounds)
        print(
            f"run {run + 1}: {args.tasks} tasks x {args.rounds} rounds: "
            f"cpu {cpu / n * 1e6:.2f} us, wall {wall / n * 1e6:.2f} us per wake-up "
            f"-> {n / wall:,.0f} wake-ups/s"
        )


if __name__ == "__main__":
    main()
