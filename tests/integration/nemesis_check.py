"""The nemesis's verdict over a run's history, as a pure function (no I/O).

Input: per producer what it sent (per partition, in send order), what it was acknowledged
(partition, offset, value) and whether it is idempotent; what the final read found; what the
consumer group was acknowledged committing and what is committed at the end. Checks, on top
of :func:`tests.integration.durability.compare` (acked ⊆ read, each at its acked offset):

* no duplicates of an idempotent producer's records (acknowledged or not); a
  non-idempotent producer's duplicates are counted, not failed (at-least-once, see
  docs/durability.md);
* order: each producer's acknowledged offsets rise in its send order, per partition;
* group offsets: no committed offset the broker acknowledged goes backwards (walproxy puts
  every acknowledged OffsetCommit in its WAL and restores it after a page-cache loss or a
  rebuild, docs/durability.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .durability import Acked, compare


@dataclass(frozen=True)
class ProducerHistory:
    name: str
    idempotent: bool
    sent: Mapping[int, Sequence[bytes]]  # partition -> values in send order
    acked: Sequence[Acked]
    failed: int = 0  # deliveries the client gave up on (never acknowledged)
    unsettled: int = 0  # sent, neither acknowledged nor failed once the faults had healed
    fatal: Sequence[str] = ()  # fatal client errors (each ended a producer instance)


@dataclass
class ProducerVerdict:
    name: str
    idempotent: bool
    sent: int
    acked: int
    failed: int
    unsettled: int = 0
    fatal: Sequence[str] = ()
    lost: list[Acked] = field(default_factory=list)
    moved: list[tuple[Acked, int]] = field(default_factory=list)
    duplicates: list[bytes] = field(default_factory=list)
    out_of_order: list[tuple[int, bytes]] = field(default_factory=list)  # (partition, value)

    @property
    def ok(self) -> bool:
        """Safety (nothing acknowledged lost, moved or reordered; no idempotent duplicate)
        and, once the faults healed, every record answered. A fatal client error is
        reported, not judged: the records it failed were never acknowledged."""
        dup_ok = not self.duplicates or not self.idempotent
        return not (self.lost or self.moved or self.out_of_order or self.unsettled) and dup_ok

    def summary(self) -> str:
        kind = "idempotent" if self.idempotent else "non-idempotent"
        line = (
            f"{self.name} ({kind}): sent {self.sent}, acked {self.acked}, failed {self.failed}, "
            f"lost {len(self.lost)}, offset mismatches {len(self.moved)}, duplicates "
            f"{len(self.duplicates)}, out of order {len(self.out_of_order)}"
        )
        if self.unsettled:
            line += f"; UNANSWERED after the faults healed: {self.unsettled}"
        if self.fatal:
            line += f"; fatal client errors {len(self.fatal)}, first: {self.fatal[0]}"
        if self.lost:
            line += f"; lost e.g. {[(a.partition, a.offset) for a in self.lost[:5]]}"
        if self.moved:
            a, got = self.moved[0]
            line += f"; e.g. {a.value!r} acked at {a.partition}/{a.offset}, read at {got}"
        if self.duplicates and self.idempotent:
            line += f"; duplicated e.g. {self.duplicates[:3]}"
        return line


@dataclass
class Verdict:
    producers: list[ProducerVerdict]
    read: int  # records in the final read
    unacked_extras: int  # read, never acknowledged (in doubt, then kept: allowed)
    #: partition -> (offset the group's commit was acknowledged at, committed at the end)
    #: where the end is lower
    commit_regressions: dict[int, tuple[int, int]]

    @property
    def ok(self) -> bool:
        """Every acknowledged record is read back at its offset, in order, no idempotent
        record twice, and no group's committed offset behind one it was acknowledged."""
        return all(p.ok for p in self.producers) and not self.commit_regressions

    @property
    def lost(self) -> int:
        return sum(len(p.lost) for p in self.producers)

    def summary(self) -> str:
        lines = [p.summary() for p in self.producers]
        lines.append(
            f"final read {self.read} records, {self.unacked_extras} never acknowledged; "
            f"committed group offsets gone backwards: {self.commit_regressions or 'none'}"
        )
        return "\n".join(lines)


def _out_of_order(history: ProducerHistory) -> list[tuple[int, bytes]]:
    where = {a.value: a.offset for a in history.acked}
    bad: list[tuple[int, bytes]] = []
    for p, values in history.sent.items():
        last = -1
        for v in values:
            offset = where.get(v)
            if offset is None:
                continue
            if offset <= last:
                bad.append((p, v))
            last = max(last, offset)
    return bad


def check_history(
    producers: Sequence[ProducerHistory],
    consumed: Mapping[int, Sequence[tuple[int, bytes]]],
    *,
    commits_acked: Mapping[int, int] | None = None,
    commits_final: Mapping[int, int] | None = None,
) -> Verdict:
    names = [p.name for p in producers]
    if len(set(names)) != len(names):
        raise ValueError(f"producer names must be unique: {names}")
    acked = [a for p in producers for a in p.acked]
    report = compare(acked, {p: list(v) for p, v in consumed.items()})
    owner = {v: h.name for h in producers for vs in h.sent.values() for v in vs}
    verdicts = {
        h.name: ProducerVerdict(
            h.name,
            h.idempotent,
            sum(len(v) for v in h.sent.values()),
            len(h.acked),
            h.failed,
            h.unsettled,
            h.fatal,
            out_of_order=_out_of_order(h),
        )
        for h in producers
    }
    unowned = [a.value for a in acked if a.value not in owner]
    if unowned:
        raise ValueError(f"acknowledged values nobody sent: {unowned[:3]}")
    for a in report.lost:
        verdicts[owner[a.value]].lost.append(a)
    for a, got in report.moved:
        verdicts[owner[a.value]].moved.append((a, got))
    for v in report.duplicates:
        if v in owner:
            verdicts[owner[v]].duplicates.append(v)
    final = commits_final or {}
    regressions = {
        p: (o, final.get(p, -1)) for p, o in (commits_acked or {}).items() if final.get(p, -1) < o
    }
    return Verdict(
        list(verdicts.values()),
        sum(len(v) for v in consumed.values()),
        sum(len(r.unacked) for r in report.partitions.values()),
        regressions,
    )
