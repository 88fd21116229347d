"""Repair planning for committed offsets, sans-IO: which acknowledged commits to restore.

A group coordinator that comes back without its page cache may have lost the tail of its
``__consumer_offsets`` partition: commits it had answered without error are gone, and the
group's committed offset went back (or vanished). The WAL holds every commit walproxy
acknowledged (a COMMIT entry whose COMMIT_OUTCOME gave the partition error 0). Given

* the acknowledged commits, reduced by :func:`latest_acked` to the last one per group, topic
  and partition in WAL order (a connection's commits are written, forwarded and answered in
  order; a group's members commit their own partitions, so two connections racing for one
  partition is a client's own race, which Kafka orders as it likes), and
* what the broker serves now (OffsetFetch: the committed offset, -1 for none),

:func:`plan_commit_repair` says which offsets to commit again, per group. An offset is restored
only when the broker's is *behind* the acknowledged one; one at it is intact, one ahead is a
newer commit (the group moved on, through walproxy or not) and is left alone. So a restore
never moves an offset backwards and never overwrites a newer commit.

Transactional offset commits (TxnOffsetCommit) are left out: they count only if their
transaction committed, which the coordinator decides from markers walproxy cannot see.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from proxy.durable.wal_entries import CommitEntry, CommitOutcomeEntry

#: (group id, topic name, partition)
CommitKey = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class AckedCommit:
    """One partition's offset from a COMMIT entry the broker answered with error 0."""

    lsn: int
    offset: int
    leader_epoch: int
    metadata: str | None


@dataclass(frozen=True, slots=True)
class RestoreOffset:
    topic: str
    partition: int
    commit: AckedCommit
    broker_offset: int  # what the broker served (-1: nothing committed)


@dataclass(frozen=True, slots=True)
class RestoreGroup:
    """One OffsetCommit to send for ``group``: every offset it must have again."""

    group: str
    offsets: tuple[RestoreOffset, ...]


@dataclass
class CommitPlan:
    restores: list[RestoreGroup] = field(default_factory=list)
    #: Acknowledged offsets the broker serves exactly (nothing to do).
    intact: int = 0
    #: Offsets the broker has ahead of the last acknowledged one (a newer commit: left alone).
    ahead: int = 0

    @property
    def restored_offsets(self) -> int:
        return sum(len(r.offsets) for r in self.restores)


def latest_acked(
    entries: Iterable[tuple[int, CommitEntry]],
    outcomes: Mapping[int, CommitOutcomeEntry],
    topic_name: Callable[[str | None, uuid.UUID | None], str | None] = lambda name, _id: name,
) -> dict[CommitKey, AckedCommit]:
    """The last acknowledged commit per group, topic and partition.

    ``entries`` are (LSN, COMMIT entry); ``outcomes`` the COMMIT_OUTCOME of each by commit
    LSN. A partition counts only where its outcome's error code is 0; transactional commits
    never count; ``topic_name`` resolves a topic id (OffsetCommit v10) to its name, None for
    a topic the broker no longer knows (its commits are skipped).
    """
    out: dict[CommitKey, AckedCommit] = {}
    for lsn, entry in sorted(entries, key=lambda e: e[0]):
        outcome = outcomes.get(lsn)
        if entry.transactional or outcome is None:
            continue
        for offset, code in zip(entry.offsets, outcome.error_codes, strict=False):
            if code != 0:
                continue
            topic = topic_name(offset.topic, offset.topic_id)
            if topic is None:
                continue
            out[(entry.group_id, topic, offset.partition)] = AckedCommit(
                lsn, offset.offset, offset.leader_epoch, offset.metadata
            )
    return out


def plan_commit_repair(
    acked: Mapping[CommitKey, AckedCommit], fetched: Mapping[CommitKey, int]
) -> CommitPlan:
    """What to commit again so that no group's offset is behind an acknowledged one.

    ``fetched`` is the broker's committed offset per key (-1, or a missing key: nothing
    committed). Restores are grouped per group (one OffsetCommit each), in a stable order.
    """
    plan = CommitPlan()
    by_group: dict[str, list[RestoreOffset]] = {}
    for key in sorted(acked):
        commit = acked[key]
        group, topic, partition = key
        have = fetched.get(key, -1)
        if have == commit.offset:
            plan.intact += 1
        elif have > commit.offset:
            plan.ahead += 1
        else:
            by_group.setdefault(group, []).append(RestoreOffset(topic, partition, commit, have))
    plan.restores = [RestoreGroup(g, tuple(offsets)) for g, offsets in by_group.items()]
    return plan


__all__ = [
    "AckedCommit",
    "CommitKey",
    "CommitPlan",
    "RestoreGroup",
    "RestoreOffset",
    "latest_acked",
    "plan_commit_repair",
]
