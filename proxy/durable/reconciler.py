"""Reconciliation and repair: the trio/Kafka shell around :mod:`proxy.durable.repair_plan`.

Runs when the proxy starts, whenever a connection leaves produce batches in doubt, and
whenever the upstream broker went away (it may have come back without its page cache).
While it runs, the produce gate is closed: no new produce reaches the broker until every
lost acknowledged batch is back at its offset. At start-up and after the broker went away,
the group gate is closed too, and once produce is repaired (its gate open again) the
acknowledged offset commits are checked and the lost ones restored
(:mod:`proxy.durable.commit_repair`) before any group API is forwarded. Other APIs keep
flowing.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
import trio

from proxy.client.errors import UpstreamError
from proxy.client.upstream_client import (
    EARLIEST,
    LATEST,
    ClusterClient,
    UpstreamClient,
    plain_dial,
)
from proxy.durable import metrics as pm
from proxy.durable.commit_repair import WAIT_S, CommitReport, repair_commits
from proxy.durable.ledger import CoverKey, cover_key
from proxy.durable.produce_path import DurableProduce
from proxy.durable.repair_plan import (
    Abandon,
    Found,
    LogBatch,
    Mismatch,
    Plan,
    Reproduce,
    WalBatch,
    plan_partition,
)
from proxy.durable.wal_entries import (
    BATCH,
    COMMIT,
    COMMIT_OUTCOME,
    OUTCOME,
    BatchEntry,
    OutcomeEntry,
    Source,
    decode_batch,
    decode_commit,
    decode_commit_outcome,
    decode_outcome,
    encode_outcome,
)
from proxy.kafka.leader_epochs import RestoredRanges
from proxy.kafka.produce_codec import PartitionKey
from proxy.kafka.protocol import DUPLICATE_SEQUENCE_NUMBER
from proxy.kafka.record_batch import HEADER_SIZE, BatchError, iter_batches, parse_header
from wal import Wal, WalError
from wal.s3_wal import S3Wal

log = structlog.get_logger("walproxy.reconcile")

_UNKNOWN_TOPIC_GRACE_S = 3.0
#: In-doubt batches are looked for from a little before the acknowledged batches around them.
_LSN_WINDOW = 10_000

Client = UpstreamClient | ClusterClient
_T = TypeVar("_T")


@dataclass
class Report:
    partitions: int = 0
    intact: int = 0
    found: int = 0
    replayed: int = 0
    repaired: int = 0
    mismatched: int = 0
    abandoned_acked: int = 0
    abandoned: int = 0
    #: Committed offsets (acknowledged partition offsets, checked against the coordinator).
    commit_groups: int = 0
    commits_intact: int = 0
    commits_ahead: int = 0
    commits_restored: int = 0
    commit_groups_restored: int = 0
    problems: list[str] = field(default_factory=list)

    def add_commits(self, c: CommitReport) -> None:
        self.commit_groups += c.groups
        self.commits_intact += c.intact
        self.commits_ahead += c.ahead
        self.commits_restored += c.restored
        self.commit_groups_restored += c.groups_restored
        self.problems += c.problems

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass
class _PartitionState:
    topic: str
    partition: int
    batches: list[tuple[WalBatch, BatchEntry]] = field(default_factory=list)


def scan_wal(
    wal: Wal | S3Wal,
    from_lsn: int | None = None,
    acked_commits: dict[int, tuple[str, int]] | None = None,
) -> tuple[dict[int, BatchEntry], dict[int, OutcomeEntry]]:
    """Every BATCH and the latest OUTCOME per batch, from ``from_lsn`` (default: the start);
    with ``acked_commits``, also the LSN -> (group, producer id: -1 unless transactional) of
    every COMMIT entry that committed an offset (a COMMIT_OUTCOME with an error 0), in the
    same pass."""
    batches: dict[int, BatchEntry] = {}
    outcomes: dict[int, OutcomeEntry] = {}
    groups: dict[int, tuple[str, int]] = {}
    for entry in wal.read_from(from_lsn):
        if entry.type == BATCH:
            batches[entry.lsn] = decode_batch(bytes(entry.payload))
        elif entry.type == OUTCOME:
            o = decode_outcome(entry.payload)
            outcomes[o.batch_lsn] = o
        elif acked_commits is not None and entry.type == COMMIT:
            commit = decode_commit(entry.payload)
            groups[entry.lsn] = (commit.group_id, commit.producer_id)
        elif acked_commits is not None and entry.type == COMMIT_OUTCOME:
            c = decode_commit_outcome(entry.payload)
            if 0 in c.error_codes and c.commit_lsn in groups:
                acked_commits[c.commit_lsn] = groups[c.commit_lsn]
    return batches, outcomes


def _log_batches(records: bytes) -> tuple[list[LogBatch], int | None]:
    """Whole batches in a fetched blob, and the offset after the last one (None if empty)."""
    out = []
    pos = 0
    while len(records) - pos >= HEADER_SIZE:
        h = parse_header(records, pos)
        if pos + h.length > len(records):
            break  # a partial batch at the fetch size limit
        out.append(LogBatch.of(h))
        pos += h.length
    return out, (out[-1].last_offset + 1 if out else None)


class Reconciler:
    def __init__(
        self,
        durable: DurableProduce,
        upstream: tuple[str, int],
        *,
        node_id: int | None = None,
        scan_max_bytes: int = 256 << 20,
        client: Callable[[], UpstreamClient | ClusterClient] | None = None,
        commit_wait_s: float = WAIT_S,
        restored: RestoredRanges | None = None,
    ) -> None:
        #: How long the commit repair waits for a group with members to become empty.
        self.commit_wait_s = commit_wait_s
        #: Where replays put acknowledged batches back at their offsets (under a new leader
        #: epoch): the OffsetForLeaderEpoch filter keeps positions inside them valid.
        self.restored = restored if restored is not None else RestoredRanges()
        #: Makes the (unconnected) client each pass uses: one broker in a sidecar, the
        #: whole cluster (requests routed to partition leaders) in a gateway.
        self._new_client = client or (lambda: UpstreamClient.lazy(self.upstream, plain_dial))
        #: The upstream broker's node id: partitions another broker leads now are not this
        #: sidecar's to check (their leader's sidecar has their WAL entries).
        self.node_id = node_id
        self.durable = durable
        self.wal = durable.wal
        self.upstream = upstream
        self.scan_max_bytes = scan_max_bytes
        self._trouble = trio.Event()
        self.last_report: Report | None = None
        self._unknown_since: dict[PartitionKey, float] = {}
        self.completed = trio.Event()

    def upstream_trouble(self) -> None:
        """A connection lost its broker: check for lost acknowledged data when it is back."""
        self._trouble.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        startup = True
        while True:
            if not startup:
                with trio.move_on_after(5.0):  # also a periodic check for acks=0 in doubt
                    async with trio.open_nursery() as wait:

                        async def on(event: trio.Event) -> None:
                            await event.wait()
                            wait.cancel_scope.cancel()

                        wait.start_soon(on, self._trouble)
                        wait.start_soon(on, self.durable.in_doubt_changed)
                if not (self._trouble.is_set() or self.durable.ledger.in_doubt):
                    continue
            check_commits = startup or self._trouble.is_set()
            self._trouble = trio.Event()
            self.durable.gate.close()
            self.durable.epoch_gate.close()
            if check_commits:
                self.durable.group_gate.close()
            report = await self._until_done(functools.partial(self._produce_pass, startup))
            self.durable.gate.open()
            self.durable.epoch_gate.open()
            if check_commits:
                commits = await self._until_done(self.check_commits)
                report.add_commits(commits)
                self.durable.group_gate.open()
            self.last_report = report
            pm.RECONCILIATIONS.labels("clean" if report.clean else "problems").inc()
            self.completed.set()
            startup = False

    async def _produce_pass(self, startup: bool) -> Report:
        await self.durable.quiesce(timeout=30.0)
        return await self.reconcile(startup=startup)

    async def _until_done(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """``attempt()`` until the broker answers it (a fenced WAL stops here for good)."""
        delay = 0.2
        while True:
            try:
                return await attempt()
            except WalError as exc:
                if not self.wal.fenced:
                    raise
                # Nothing can be recorded any more, so nothing is settled or replayed:
                # the gate stays closed, produce is refused (KAFKA_STORAGE_ERROR), the
                # other APIs flow and /readyz says why, until walproxy is restarted
                # (docs/operations.md "The WAL is fenced"). Before, the error ended the
                # server.
                log.error(
                    "reconciliation stopped: the WAL is fenced; restart walproxy once "
                    "its volume is healthy",
                    error=str(exc),
                )
                # Group APIs flow like the others (commits are refused by the commit path):
                # holding them would hang every consumer until the restart.
                self.durable.group_gate.open()
                self.durable.epoch_gate.open()
                await trio.sleep_forever()
            except (UpstreamError, OSError, trio.TooSlowError) as exc:
                pm.RECONCILIATIONS.labels("broker_unavailable").inc()
                log.warning("reconciliation waits for the broker", error=str(exc), retry_in_s=delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def check_commits(self) -> CommitReport:
        """One check of the acknowledged commits in the WAL against their coordinators,
        restoring the lost ones; raises UpstreamError when the broker cannot be reached."""
        async with self._new_client() as client:
            return await repair_commits(
                client, self.wal, node_id=self.node_id, wait_s=self.commit_wait_s
            )

    async def reconcile(self, *, startup: bool) -> Report:
        """One pass; raises UpstreamError when the broker cannot be reached."""
        in_doubt = set(self.durable.take_in_doubt())
        async with self._new_client() as client:
            try:
                return await self._reconcile(client, in_doubt, startup)
            except BaseException:
                self.durable.ledger.doubt(in_doubt)  # not settled: keep them
                raise

    async def _reconcile(self, client: Client, in_doubt: set[int], startup: bool) -> Report:
        report = Report()
        topics = await client.metadata(None)
        by_id = {t.topic_id: name for name, t in topics.items()}

        def resolve(key: PartitionKey) -> str | None:
            """The topic's name, or None when the broker does not know it (deleted)."""
            name, tid, index = key
            if name is None and tid is not None:
                name = by_id.get(tid)
            info = topics.get(name) if name is not None else None
            return name if info is not None and index in info.partitions else None

        # Which partitions lost acknowledged data (their log ends before what we acked)?
        if startup:
            commits: dict[int, tuple[str, int]] = {}
            batches, outcomes = scan_wal(self.wal, acked_commits=commits)
            for lsn, (group, pid) in commits.items():  # an earlier process's: kept for S3
                if lsn < self.durable.session_start_lsn:
                    self.durable.note_commit_settled(lsn, group, pid)
            for lsn, b in batches.items():
                o = outcomes.get(lsn)
                if o is not None and lsn < self.durable.session_start_lsn:
                    self.durable.note_settled(lsn, _cover_key(b), o, _record_count(b))
                if o is not None and o.error_code == 0 and o.base_offset >= 0:
                    key = (b.topic, b.topic_id, b.partition)
                    self.durable.note_acked(key, o.base_offset + _record_count(b))
            start = self.durable.session_start_lsn  # later ones are live requests
            in_doubt |= {lsn for lsn in batches if lsn not in outcomes and lsn < start}
        lost: set[tuple[str, int]] = set()
        now = trio.current_time()
        gone = [k for k in self.durable.ledger.acked_end if resolve(k) is None]
        for key in gone:
            self._unknown_since.setdefault(key, now)
        if any(now - self._unknown_since[k] < _UNKNOWN_TOPIC_GRACE_S for k in gone):
            # A broker serves Metadata only once it caught up with the metadata log, so a
            # topic it does not list was deleted; a short grace covers a racing listing.
            raise UpstreamError(f"{len(gone)} partition(s) not in the broker's metadata")
        for key in gone:
            log.warning(
                "topic or partition no longer exists; forgetting its acknowledged offsets",
                topic=key[0] or str(key[1]),
                partition=key[2],
            )
            self.durable.ledger.forget_partition(key)
            self._unknown_since.pop(key, None)
        for key, end in list(self.durable.ledger.acked_end.items()):
            topic = resolve(key)
            assert topic is not None
            leader = topics[topic].partitions[key[2]]
            if self.node_id is not None and leader >= 0 and leader != self.node_id:
                continue
            leo = await client.list_offset(topic, key[2], LATEST)
            if leo < end:
                log.error(
                    "broker lost acknowledged records",
                    topic=topic,
                    partition=key[2],
                    log_end=leo,
                    acknowledged_end=end,
                )
                lost.add((topic, key[2]))
        if not in_doubt and not lost:
            return report
        if not startup:
            batches, outcomes = scan_wal(self.wal)
        return await self._repair(client, batches, outcomes, in_doubt, lost, resolve, report)

    async def _repair(
        self,
        client: Client,
        batches: dict[int, BatchEntry],
        outcomes: dict[int, OutcomeEntry],
        in_doubt: set[int],
        lost: set[tuple[str, int]],
        resolve: Callable[[PartitionKey], str | None],
        report: Report,
    ) -> Report:
        parts: dict[tuple[str, int], _PartitionState] = {}
        new_outcomes: list[OutcomeEntry] = []
        names: dict[int, str | None] = {}
        affected: set[tuple[str | None, int]] = set(lost)
        for lsn, b in batches.items():
            names[lsn] = resolve((b.topic, b.topic_id, b.partition))
            if lsn in in_doubt:
                if names[lsn] is None:
                    new_outcomes.append(
                        OutcomeEntry(lsn, Source.ABANDONED, -1, -1, reason="topic no longer exists")
                    )
                    report.abandoned += 1
                else:
                    affected.add((names[lsn], b.partition))
        for lsn, b in sorted(batches.items()):
            topic = names[lsn]
            if topic is None or (topic, b.partition) not in affected:
                continue
            o = outcomes.get(lsn)
            acked = o is not None and o.error_code == 0 and o.base_offset >= 0
            if not acked and lsn not in in_doubt:
                continue  # failed, abandoned, or still in flight on a live connection
            try:
                headers = tuple(iter_batches(b.records))
            except BatchError as exc:  # cannot happen for what prepare() let through
                report.problems.append(f"WAL batch {lsn} does not parse: {exc}")
                continue
            wb = WalBatch(lsn, headers, b.acks0, o.base_offset if acked and o else None)
            state = parts.setdefault((topic, b.partition), _PartitionState(topic, b.partition))
            state.batches.append((wb, b))
        for state in parts.values():
            report.partitions += 1
            plan = await self._plan(client, state)
            report.intact += plan.intact
            new_outcomes += await self._execute(client, state, plan, report)
        if new_outcomes:
            submission = await self.wal.submit_many(
                [(OUTCOME, encode_outcome(o)) for o in new_outcomes]
            )
            await submission.wait()
        self.durable.ledger.resolved(o.batch_lsn for o in new_outcomes)
        for o in new_outcomes:
            b = batches[o.batch_lsn]
            self.durable.note_settled(o.batch_lsn, _cover_key(b), o, _record_count(b))
            if o.error_code == 0 and o.base_offset >= 0:
                key = (b.topic, b.topic_id, b.partition)
                self.durable.note_acked(key, o.base_offset + _record_count(b))
        pm.IN_DOUBT.set(len(self.durable.ledger.in_doubt))
        log.info(
            "reconciliation done",
            **{k: v for k, v in vars(report).items() if k != "problems"},
            problems=len(report.problems),
        )
        return report

    async def _plan(self, client: Client, state: _PartitionState) -> Plan:
        leo = await client.list_offset(state.topic, state.partition, LATEST)
        start = await client.list_offset(state.topic, state.partition, EARLIEST)
        wal_batches = [wb for wb, _ in state.batches]
        doubt_lsns = [wb.lsn for wb in wal_batches if wb.acked_offset is None]
        log_batches: list[LogBatch] = []
        if doubt_lsns:
            first = min(doubt_lsns)
            near = [
                wb.acked_offset
                for wb in wal_batches
                if wb.acked_offset is not None and wb.lsn >= first - _LSN_WINDOW
            ]
            before = [
                wb.acked_offset + wb.record_count
                for wb in wal_batches
                if wb.acked_offset is not None and wb.lsn < first - _LSN_WINDOW
            ]
            scan_from = min(near) if near else (max(before) if before else start)
            offset, scanned = max(start, scan_from), 0
            while offset < leo and scanned < self.scan_max_bytes:
                fetched = await client.fetch(state.topic, state.partition, offset)
                found, next_offset = _log_batches(fetched.records)
                if next_offset is None:
                    break
                log_batches += found
                scanned += len(fetched.records)
                offset = next_offset
        return plan_partition(wal_batches, leo, log_batches)

    async def _execute(
        self, client: Client, state: _PartitionState, plan: Plan, report: Report
    ) -> list[OutcomeEntry]:
        entries = {wb.lsn: (wb, b) for wb, b in state.batches}
        out: list[OutcomeEntry] = []
        where = f"{state.topic}-{state.partition}"
        landed: list[tuple[int, int]] = []  # [base, end) of replays at their planned offset
        exact = True  # every replay where planned, no acknowledged batch left out
        for action in plan.actions:
            wb, b = entries[action.lsn]
            if isinstance(action, Found):
                out.append(OutcomeEntry(action.lsn, Source.FOUND, 0, action.base_offset))
                report.found += 1
                pm.FOUND.inc()
            elif isinstance(action, Abandon):
                out.append(OutcomeEntry(action.lsn, Source.ABANDONED, -1, -1, reason=action.reason))
                pm.ABANDONED.labels(str(action.was_acked).lower()).inc()
                exact = exact and not action.was_acked
                if action.was_acked:
                    report.abandoned_acked += 1
                    report.problems.append(f"{where}: {action.reason}")
                    log.error(
                        "acknowledged batch cannot be restored",
                        partition=where,
                        lsn=action.lsn,
                        reason=action.reason,
                    )
                else:
                    report.abandoned += 1
                    log.warning(
                        "in-doubt batch abandoned",
                        partition=where,
                        lsn=action.lsn,
                        reason=action.reason,
                    )
            else:
                expected = action.expected_offset
                if isinstance(action, Mismatch):
                    expected = None
                err, base = await client.produce(state.topic, state.partition, bytes(b.records))
                out.append(self._replayed(action, wb, err, base, expected, where, report))
                planned = wb.acked_offset if wb.acked_offset is not None else expected
                if err == 0 and base >= 0 and base == planned:
                    landed.append((base, base + _record_count(b)))
                else:
                    exact = False
        if exact and landed and all(x[1] == y[0] for x, y in itertools.pairwise(landed)):
            self.restored.note(state.topic, state.partition, landed[0][0], landed[-1][1])
        return out

    def _replayed(
        self,
        action: Reproduce | Mismatch,
        wb: WalBatch,
        err: int,
        base: int,
        expected: int | None,
        where: str,
        report: Report,
    ) -> OutcomeEntry:
        kind = "in_doubt" if wb.acked_offset is None else "lost_acked"
        if err == DUPLICATE_SEQUENCE_NUMBER:
            report.found += 1
            return OutcomeEntry(action.lsn, Source.FOUND, 0, -1)
        if err != 0:
            reason = f"broker refused the replay with error {err}"
            report.problems.append(f"{where}: batch {action.lsn}: {reason}")
            log.error(
                "replay refused",
                partition=where,
                lsn=action.lsn,
                error_code=err,
                acknowledged=wb.acked_offset is not None,
            )
            pm.ABANDONED.labels(str(wb.acked_offset is not None).lower()).inc()
            return OutcomeEntry(action.lsn, Source.ABANDONED, err, -1, reason=reason)
        pm.REPLAYED.labels(kind).inc()
        report.replayed += 1
        if wb.acked_offset is not None:
            if base == wb.acked_offset:
                pm.REPAIRED.inc()
                report.repaired += 1
            else:
                pm.OFFSET_MISMATCHES.inc()
                report.mismatched += 1
                why = action.reason if isinstance(action, Mismatch) else "the log moved"
                report.problems.append(
                    f"{where}: acknowledged batch at offset {wb.acked_offset} restored at "
                    f"{base} ({why})"
                )
                log.error(
                    "acknowledged batch restored at another offset",
                    partition=where,
                    lsn=action.lsn,
                    acknowledged_offset=wb.acked_offset,
                    restored_offset=base,
                    reason=why,
                )
        elif expected is not None and base != expected:
            log.warning(
                "in-doubt batch landed elsewhere than planned",
                partition=where,
                planned=expected,
                offset=base,
            )
        return OutcomeEntry(action.lsn, Source.REPRODUCED, 0, base)


def _cover_key(b: BatchEntry) -> CoverKey:
    """What S3 must hold before the entry may be trimmed (a transactional batch: its marker
    too, :func:`proxy.durable.ledger.cover_key`)."""
    key = (b.topic, b.topic_id, b.partition)
    if b.transactional_id is None:
        return key
    first = next(iter_batches(b.records, check_crc=False), None)
    return cover_key(key, first.producer_id if first is not None else -1)


def _record_count(b: BatchEntry) -> int:
    return sum(h.last_offset_delta + 1 for h in iter_batches(b.records, check_crc=False))


__all__ = ["Reconciler", "Report", "scan_wal"]
