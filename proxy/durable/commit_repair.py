"""Commit repair: the trio/Kafka shell around :mod:`proxy.durable.commit_repair_plan`.

Run by the reconciler when the broker may have come back without its page cache (at start-up
and after the upstream broker went away), while the group gate holds every group API
(:data:`proxy.kafka.protocol.GROUP_APIS`) at the proxy: no member can fetch a regressed
offset, commit, join or heartbeat until this is done. For each group with acknowledged
commits in the WAL whose coordinator is the broker this proxy reconciles (every broker's in
a gateway), it fetches the committed offsets (OffsetFetch), plans, and commits the missing
ones again with a memberless OffsetCommit (generation -1, no member id).

The coordinator accepts a memberless commit only from a group with no members (classic:
state Empty, or no group at all; KIP-848: no members). A group that still has members after
the restart (its membership records survived the crash) answers UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS or STALE_MEMBER_EPOCH; its members' heartbeats are
held at the gate, so the coordinator expires them after their session timeout, and the
repair retries every second until the commit is accepted or ``wait_s`` has passed (then it
reports the group as not restored and the gate opens). Committing as one of the members is
not an option: walproxy does not keep their member ids and epochs, and a commit in a member's
name races with that member's own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import structlog
import trio

from proxy.client.group_client import CommitOffset, offset_commit, offset_fetch
from proxy.client.upstream_client import ClusterClient, UpstreamClient
from proxy.durable import metrics as pm
from proxy.durable.commit_repair_plan import (
    AckedCommit,
    CommitKey,
    latest_acked,
    plan_commit_repair,
)
from proxy.durable.wal_entries import (
    COMMIT,
    COMMIT_OUTCOME,
    CommitEntry,
    CommitOutcomeEntry,
    decode_commit,
    decode_commit_outcome,
)
from wal import Wal
from wal.s3_wal import S3Wal

log = structlog.get_logger("walproxy.reconcile")

#: Longer than the default session timeouts (45 s, classic and KIP-848) plus the time a
#: restarted coordinator takes to load its partitions.
WAIT_S = 120.0
_COORDINATOR_LOADING = frozenset({14, 15, 16})  # LOAD_IN_PROGRESS, NOT_AVAILABLE, NOT_COORDINATOR
#: The coordinator refuses a memberless commit because the group has members.
_HAS_MEMBERS = frozenset({22, 25, 27, 110, 113})  # ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
# REBALANCE_IN_PROGRESS, FENCED_MEMBER_EPOCH, STALE_MEMBER_EPOCH


@dataclass
class CommitReport:
    groups: int = 0  # groups with acknowledged commits checked against their coordinator
    elsewhere: int = 0  # groups another broker coordinates now (not this proxy's to repair)
    intact: int = 0  # partition offsets the broker serves as acknowledged
    ahead: int = 0  # partition offsets the broker has a newer commit for (left alone)
    restored: int = 0  # partition offsets committed again
    groups_restored: int = 0
    problems: list[str] = field(default_factory=list)
    #: group -> offsets behind at its last refused attempt (the group still had members)
    behind: dict[str, int] = field(default_factory=dict)


def scan_commits(
    wal: Wal | S3Wal,
) -> tuple[list[tuple[int, CommitEntry]], dict[int, CommitOutcomeEntry]]:
    """Every COMMIT entry (LSN, entry) and its COMMIT_OUTCOME, from the WAL's start."""
    entries: list[tuple[int, CommitEntry]] = []
    outcomes: dict[int, CommitOutcomeEntry] = {}
    for entry in wal.read_from(None):
        if entry.type == COMMIT:
            entries.append((entry.lsn, decode_commit(entry.payload)))
        elif entry.type == COMMIT_OUTCOME:
            o = decode_commit_outcome(entry.payload)
            outcomes[o.commit_lsn] = o
    return entries, outcomes


async def repair_commits(
    client: UpstreamClient | ClusterClient,
    wal: Wal | S3Wal,
    *,
    node_id: int | None,
    wait_s: float = WAIT_S,
    retry_s: float = 1.0,
) -> CommitReport:
    """Restore every acknowledged commit the coordinators lost; raises UpstreamError when
    the broker cannot be reached (the caller retries the whole pass: restores are
    idempotent, a restored offset is then intact)."""
    report = CommitReport()
    entries, outcomes = scan_commits(wal)
    if not any(outcomes.get(lsn) and 0 in outcomes[lsn].error_codes for lsn, _ in entries):
        return report
    topics = await client.metadata(None)
    by_id = {t.topic_id: name for name, t in topics.items()}

    def topic_name(name: str | None, topic_id: uuid.UUID | None) -> str | None:
        if name is None and topic_id is not None:
            name = by_id.get(topic_id)
        return name if name in topics else None  # a deleted topic's commits are moot

    by_group: dict[str, dict[CommitKey, AckedCommit]] = {}
    for key, commit in latest_acked(entries, outcomes, topic_name).items():
        by_group.setdefault(key[0], {})[key] = commit
    pending = set(by_group)
    why: dict[str, str] = {}
    deadline = trio.current_time() + wait_s
    while True:
        for group in sorted(pending):
            wait = await _repair_group(client, group, by_group[group], node_id, report)
            if wait is None:
                pending.discard(group)
                report.behind.pop(group, None)
            else:
                why[group] = wait
        if not pending or trio.current_time() >= deadline:
            break
        await trio.sleep(retry_s)
    for group in sorted(pending):
        problem = (
            f"group {group}: committed offsets not restored within {wait_s:.0f}s ({why[group]})"
        )
        report.problems.append(problem)
        pm.COMMITS_UNRESTORED.inc(report.behind.get(group, len(by_group[group])))
        log.error("committed offsets not restored", group=group, reason=why[group])
    log.info(
        "committed offsets checked",
        groups=report.groups,
        elsewhere=report.elsewhere,
        intact=report.intact,
        ahead=report.ahead,
        restored=report.restored,
        groups_restored=report.groups_restored,
        problems=len(report.problems),
    )
    return report


async def _repair_group(
    client: UpstreamClient | ClusterClient,
    group: str,
    acked: dict[CommitKey, AckedCommit],
    node_id: int | None,
    report: CommitReport,
) -> str | None:
    """One attempt for one group: None when it is done with, else why to try again."""
    err, node, coordinator = await client.coordinator(group)
    if err != 0 or coordinator is None:
        return f"FindCoordinator error {err}"
    if node_id is not None and node != node_id:
        report.elsewhere += 1
        return None
    partitions: dict[str, set[int]] = {}
    for _, topic, partition in acked:
        partitions.setdefault(topic, set()).add(partition)
    fetched = await offset_fetch(coordinator, group, partitions)
    if fetched.error_code in _COORDINATOR_LOADING:
        return f"OffsetFetch error {fetched.error_code}"
    if fetched.error_code != 0 or fetched.errors:
        if any(e in _COORDINATOR_LOADING for e in fetched.errors.values()):
            return f"OffsetFetch partition errors {sorted(set(fetched.errors.values()))}"
        problem = f"group {group}: OffsetFetch error {fetched.error_code} {fetched.errors}"
        report.problems.append(problem)
        log.error("cannot check committed offsets", group=group, problem=problem)
        return None
    plan = plan_commit_repair(acked, {(group, t, p): o for (t, p), o in fetched.offsets.items()})
    report.groups += 1
    report.intact += plan.intact
    report.ahead += plan.ahead
    if not plan.restores:
        return None
    [restore] = plan.restores
    codes = await offset_commit(
        coordinator,
        group,
        {
            (r.topic, r.partition): CommitOffset(
                r.commit.offset, r.commit.leader_epoch, r.commit.metadata
            )
            for r in restore.offsets
        },
    )
    refused = {k: c for k, c in codes.items() if c != 0}
    if refused and all(c in _HAS_MEMBERS | _COORDINATOR_LOADING for c in refused.values()):
        report.groups -= 1  # counted again on the next attempt
        report.intact -= plan.intact
        report.ahead -= plan.ahead
        if group not in report.behind:
            log.info(
                "group has members; its committed offsets wait for the coordinator to expire them",
                group=group,
                behind=plan.restored_offsets,
                error_codes=sorted(set(refused.values())),
            )
        report.behind[group] = plan.restored_offsets
        return (
            f"OffsetCommit error {sorted(set(refused.values()))}: the group still has "
            "members; waiting for the coordinator to expire them"
        )
    done = [r for r in restore.offsets if codes.get((r.topic, r.partition), -1) == 0]
    report.restored += len(done)
    report.groups_restored += 1 if done else 0
    pm.COMMITS_RESTORED.inc(len(done))
    log.warning(
        "committed offsets restored",
        group=group,
        restored=len(done),
        offsets=[
            {
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.commit.offset,
                "broker_had": r.broker_offset,
            }
            for r in done
        ],
    )
    if refused:
        problem = f"group {group}: OffsetCommit refused {refused}"
        report.problems.append(problem)
        pm.COMMITS_UNRESTORED.inc(len(refused))
        log.error("committed offsets not restored", group=group, refused=str(refused))
    return None


__all__ = ["WAIT_S", "CommitReport", "repair_commits", "scan_commits"]
