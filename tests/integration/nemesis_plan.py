"""The nemesis's schedule and its measures, as pure functions (no I/O, no clock).

:func:`make_schedule` turns a seed into a list of :class:`Fault`: what breaks, where, when and
for how long. The same seed, duration and fault kinds always give the same schedule, so a
failing run is replayed with its printed seed (``WALPROXY_NEMESIS_SEED``). The rules it
keeps (tested in tests/unit/test_nemesis_plan.py):

* at most ``max_concurrent`` faults at any moment (one or two at a time);
* two faults that claim the same resource never overlap: a node (its broker, sidecar and the
  sidecar's broker connection) or S3; a disk wipe claims its node *and* S3, because the
  rebuild reads S3;
* every enabled kind comes once, in a seeded order, before any comes twice (a short run
  still mixes every kind it can fit), and every fault ends by ``duration_s``.

:func:`unavailability` measures, per fault, the longest pause in acknowledgements it caused.
The harness (tests/integration/nemesis.py) executes the schedule against a real cluster.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: Fault kinds, in the priority they were built in. Durations are (min, max) seconds the fault
#: is held; the harness adds what healing takes (a JVM start, a rebuild).
KINDS: dict[str, tuple[float, float]] = {
    "proxy_kill": (0.2, 3.0),  # SIGKILL the sidecar, start it again on its WAL after a while
    "proxy_stop": (6.5, 10.0),  # SIGSTOP past the clients' request timeout (5 s), SIGCONT
    "relay_cut": (0.0, 4.0),  # cut every sidecar-broker connection, refuse new ones a while
    "s3_down": (3.0, 15.0),  # S3 answers 503, resets or stalls
    "s3_slow": (3.0, 15.0),  # every S3 response held back 0.3-1.5 s
    "broker_crash": (0.0, 4.0),  # SIGKILL the broker, drop its unsynced writes, restart it
    "disk_wipe": (0.0, 2.0),  # broker's disk lost: `walproxy rebuild`, then start it again
    "wal_full": (6.0, 15.0),  # the sidecar's WAL volume full (a ballast file) until it fences
}

#: Kinds that act on one node; the others act on the cluster's S3.
NODE_KINDS = frozenset(
    {"proxy_kill", "proxy_stop", "relay_cut", "broker_crash", "disk_wipe", "wal_full"}
)

#: What a fault's slot on the schedule lasts on top of the time it is held: healing that the
#: harness waits for (a broker's JVM start, a rebuild), so that planned overlaps are real ones.
#: Measured on the 2-core build machine under load: a broker's restart after an unclean
#: shutdown on the FUSE log dir took 20-45 s; a rebuild and restart about as long again.
HEAL_S: dict[str, float] = {"broker_crash": 30.0, "disk_wipe": 50.0, "wal_full": 8.0}

S3_MODES = ("503", "reset", "stall")


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    start_s: float  # from the start of the fault phase
    hold_s: float  # how long the fault is held before it is healed
    node: int | None  # the node it acts on (None: S3)
    options: tuple[tuple[str, str], ...] = ()  # kind-specific, e.g. (("mode", "stall"),)

    @property
    def end_s(self) -> float:
        """When the schedule expects it healed (held, plus the healing it waits for)."""
        return self.start_s + self.hold_s + HEAL_S.get(self.kind, 0.0)

    @property
    def resources(self) -> frozenset[str]:
        return resources(self.kind, self.node)

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)

    def describe(self) -> str:
        where = f"node {self.node}" if self.node is not None else "s3"
        opts = "".join(f" {k}={v}" for k, v in self.options)
        return (
            f"#{self.index:<3} t={self.start_s:7.1f}s {self.kind:<12} {where:<7} "
            f"hold {self.hold_s:5.1f}s{opts}"
        )


def resources(kind: str, node: int | None) -> frozenset[str]:
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(KINDS)})")
    if kind in NODE_KINDS:
        if node is None:
            raise ValueError(f"{kind} acts on a node: node must be given")
        return frozenset({f"node-{node}", "s3"} if kind == "disk_wipe" else {f"node-{node}"})
    return frozenset({"s3"})


def _options(kind: str, rng: random.Random) -> tuple[tuple[str, str], ...]:
    if kind == "s3_down":
        return (("mode", rng.choice(S3_MODES)),)
    if kind == "s3_slow":
        return (("delay_s", f"{rng.uniform(0.3, 1.5):.2f}"),)
    if kind == "broker_crash":  # a machine crash takes the sidecar down too, sometimes
        return (("with_proxy", "yes" if rng.random() < 0.3 else "no"),)
    return ()


@dataclass
class _Kinds:
    """Every kind once in a seeded order, then seeded random picks."""

    rng: random.Random
    kinds: Sequence[str]
    first: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.first = list(self.kinds)
        self.rng.shuffle(self.first)

    def next(self) -> str:
        return self.first.pop(0) if self.first else self.rng.choice(list(self.kinds))


def make_schedule(
    seed: int,
    duration_s: float,
    kinds: Iterable[str] = tuple(KINDS),
    *,
    nodes: Sequence[int] = (1, 2, 3),
    max_concurrent: int = 2,
    overlap: float = 0.4,
) -> list[Fault]:
    """The faults of one run, in start order. ``overlap`` is the chance that the next fault
    starts while the last one is still on (when a resource and a slot are free). The order
    ``kinds`` are given in does not matter (a replay may list them differently)."""
    kinds = sorted(set(kinds), key=lambda k: list(KINDS).index(k) if k in KINDS else -1)
    for kind in kinds:
        resources(kind, nodes[0] if kind in NODE_KINDS else None)  # unknown kinds: ValueError
    if not kinds or duration_s <= 0:
        return []
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
    rng = random.Random(seed)
    picker = _Kinds(rng, kinds)
    out: list[Fault] = []
    t = rng.uniform(1.0, 3.0)
    kind = picker.next()
    misses = 0
    while t < duration_s and misses < 4 * len(kinds):
        lo, hi = KINDS[kind]
        hold = round(rng.uniform(lo, hi), 1)
        active = [f for f in out if f.end_s > t]
        taken = frozenset().union(*(f.resources for f in active))
        candidates = [
            n for n in (nodes if kind in NODE_KINDS else [None]) if not (resources(kind, n) & taken)
        ]
        if t + hold + HEAL_S.get(kind, 0.0) > duration_s:  # does not fit: another kind
            misses += 1
            kind = picker.next()
            continue
        if len(active) >= max_concurrent or not candidates:  # wait for a slot or resource
            misses += 1
            t = round(min(f.end_s for f in active) + rng.uniform(0.5, 2.0), 1)
            continue
        misses = 0
        node = rng.choice(candidates)
        fault = Fault(len(out), kind, round(t, 1), hold, node, _options(kind, rng))
        out.append(fault)
        kind = picker.next()
        if rng.random() < overlap:
            t = round(t + rng.uniform(0.5, max(1.0, fault.end_s - t)), 1)
        else:
            t = round(fault.end_s + rng.uniform(1.0, 5.0), 1)
    return out


def covering_seed(rng: random.Random, duration_s: float, kinds: Iterable[str]) -> int:
    """A seed (drawn from ``rng``) whose schedule has every kind in ``kinds``: a short run
    that must show each kind draws until one fits them all."""
    wanted = set(kinds)
    for _ in range(1000):
        seed = rng.randrange(1, 2**31)
        if {f.kind for f in make_schedule(seed, duration_s, sorted(wanted))} == wanted:
            return seed
    raise ValueError(f"{duration_s} s is too short to fit every fault kind of {sorted(wanted)}")


def describe_schedule(seed: int, faults: Sequence[Fault]) -> str:
    lines = [f"nemesis seed {seed} (replay: WALPROXY_NEMESIS_SEED={seed}), {len(faults)} faults"]
    lines += [f.describe() for f in faults]
    return "\n".join(lines)


def unavailability(
    ack_times: Mapping[int, Sequence[float]],
    start_s: float,
    end_s: float,
    partitions: Iterable[int],
    horizon_s: float,
    *,
    already_paused_s: float = 1.0,
) -> float:
    """The longest pause between acknowledgements, over ``partitions``, that overlaps the
    fault's window ``[start_s, end_s]``: from the last ack before the pause to the first after
    it (``horizon_s``, the end of the run, if none came). ``ack_times`` are sorted per
    partition. A fault that stopped nothing scores about the normal gap between acks. A
    pause that had gone on for ``already_paused_s`` when the fault began is another fault's
    (an overlapping one), not counted."""
    worst = 0.0
    for p in partitions:
        times = ack_times.get(p, ())
        # pauses overlapping the window: between acks a < b with b > start and a < end
        i = bisect.bisect_right(times, start_s)  # first ack after the start
        prev = times[i - 1] if i > 0 else start_s
        skip = start_s - prev > already_paused_s
        while True:
            nxt = times[i] if i < len(times) else horizon_s
            if not skip:
                worst = max(worst, nxt - prev)
            skip = False
            if i >= len(times) or nxt >= end_s:
                break
            prev, i = nxt, i + 1
    return worst
