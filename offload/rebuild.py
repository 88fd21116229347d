"""``walproxy rebuild``: a broker's log directory from the offload target plus the WAL tail.

For a broker whose disk is gone: read ``broker.json`` and every hosted partition's manifest,
download and verify each segment object (size, CRC32C of the Kafka bytes, whole batches
with valid CRCs, the offsets the manifest claims, continuity with the segment before, leader
epochs never going back), append the acknowledged batches the WAL holds past each
manifest's ``next_offset`` (:mod:`offload.wal_tail`; the WAL is a directory or, for
``wal.backend = "s3"``, the node's S3 WAL prefix, read through :mod:`wal`'s read-only
readers), and write a Kafka 4.1 log directory
(:mod:`offload.logdir_writer`) that the unmodified broker starts on with the same node id.

It refuses (:class:`RebuildError`, nothing half-served) when an object is missing or fails
a check, when offsets do not continue, or when the target directory holds anything but its
own unfinished rebuild; it never moves an offset. A re-run continues an interrupted rebuild:
finished partitions are kept, the rest are redone. ``__cluster_metadata`` is not rebuilt:
the broker fetches the metadata log from the controllers.

Downloads run on a small thread pool, a bounded window ahead of the writer (at most
``parallel`` objects in memory); verification (zstd, CRC32C) runs in the same threads.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import wal
from proxy.kafka.groups import CONSUMER_OFFSETS
from proxy.kafka.record_batch import iter_batches
from wal import WalError

from . import kafka_logdir as kl
from . import layout, segment_codec
from . import manifest as mf
from .logdir_writer import FinishedPartition, LogDirNotEmpty, LogDirWriter
from .node_files import BrokerInfo, NodeFileError, decode_broker_info
from .offsets_tail import OpenMarkers, commit_batches, plan_offsets_tail, plan_open_markers
from .store import ObjectNotFound, ObjectStore, StoreError
from .txn_tail import marker_batch
from .wal_tail import (
    PartitionTail,
    TailBatch,
    TailError,
    WalFacts,
    abort_hint,
    collect,
    open_without_wal,
    plan_tail,
)

EXIT_OK = 0
EXIT_REFUSED = 1  # the data cannot be restored as it is: a human must look
EXIT_TRANSIENT = 3  # the store or a disk failed: re-run to resume


class RebuildError(Exception):
    """The rebuild refuses: the message says what is wrong and where."""

    exit_code = EXIT_REFUSED


class RebuildTransient(RebuildError):
    """Reading the store failed after retries; a re-run resumes where this one stopped."""

    exit_code = EXIT_TRANSIENT


@dataclass
class RebuildOptions:
    log_dir: Path
    node_id: int
    cluster_id: str | None = None  # None: found in the target (exactly one may match)
    metadata_log_dir: Path | None = None
    wal_dir: str | None = None  # None: S3 only (acknowledged records not yet offloaded lost)
    #: An S3 WAL (``wal.backend = "s3"``) under its own prefix, read instead of ``wal_dir``.
    wal_store: ObjectStore | None = None
    segment_bytes: int = kl.DEFAULT_SEGMENT_BYTES
    allow_gaps: bool = False
    parallel: int = 8
    #: ``offsets.topic.num.partitions`` of the cluster (which partition holds a group);
    #: None: the count the offloader recorded in ``broker.json``.
    offsets_partitions: int | None = None
    #: The WAL is a gateway's (``gateway.enabled``): it holds every broker's batches, and
    #: those of partitions this node does not host are left to their own node's rebuild
    #: (its EndTxn entries still count: the gateway saw every transaction's end).
    gateway_wal: bool = False


@dataclass
class PartitionPlan:
    topic: str
    partition: int
    manifest: mf.Manifest
    etag: str
    tail: PartitionTail | None

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    @property
    def next_offset(self) -> int:
        return self.tail.next_offset if self.tail is not None else self.manifest.next_offset

    @property
    def size(self) -> int:
        return self.manifest.size + (self.tail.size if self.tail else 0)

    @property
    def source(self) -> str:
        t = self.tail
        tail = f"{t.start}..{t.next_offset}/{len(t.batches)}" if t else "none"
        return f"manifest v{self.manifest.version} {self.etag}; wal tail {tail}"

    def leader_epochs(self) -> list[tuple[int, int]]:
        epochs = list(self.manifest.leader_epochs)
        if not epochs and self.tail is not None and self.tail.batches:
            epochs = [(0, self.tail.start)]  # the tail's batches carry epoch 0 then
        return epochs


@dataclass
class Report:
    cluster_id: str = ""
    node_id: int = -1
    partitions: int = 0
    skipped_finished: int = 0
    segments: int = 0
    s3_bytes: int = 0  # uncompressed Kafka bytes from the store
    stored_bytes: int = 0  # object bytes downloaded
    tail_batches: int = 0
    tail_bytes: int = 0
    wal_in_doubt: int = 0
    #: in-doubt batches placed in gaps of the tail they fit exactly (offload/wal_tail.py)
    wal_in_doubt_placed: int = 0
    #: acknowledged commits (latest per group, topic, partition) in the WAL, and of them
    #: those written to this node's __consumer_offsets partitions
    offset_commits_acknowledged: int = 0
    offset_commits_restored: int = 0
    #: TxnOffsetCommit offsets whose transaction the WAL proves committed (written like
    #: plain commits), and those not written: aborted, or their end not in the WAL
    offset_commits_transactional_committed: int = 0
    offset_commits_transactional: int = 0
    #: markers written for transactional commits the S3 copy of __consumer_offsets left open,
    #: and such open commits the WAL cannot decide (warned, left pending)
    offset_commit_txn_markers: int = 0
    offset_commit_txns_open_undecided: int = 0
    offset_commits_elsewhere: int = 0  # groups of partitions this node does not host
    #: a gateway's WAL: acknowledged batches of partitions other nodes host (not written)
    wal_tail_elsewhere: int = 0
    #: transactions of the WAL tail whose EndTxn the WAL proves (offload/txn_tail.py): the
    #: control batches written for them (one per partition), and the transactions, by outcome
    txn_markers_written: int = 0
    txn_restored_committed: int = 0
    txn_restored_aborted: int = 0
    #: transactional batches whose end the WAL does not prove: left out with --allow-gaps
    #: (without it the rebuild refuses, exit 1, naming the first)
    txn_batches_refused: int = 0
    #: transactions open at the end of a partition's S3 copy (the manifest's
    #: ``open_transactions``): markers written for them from the WAL's proof of their end,
    #: and those the rebuilt log leaves open (end not known: --allow-gaps; or no batch of
    #: them in the WAL), each named in a warning with the operator's remedy
    txn_markers_for_s3_open: int = 0
    txn_open_unresolved: int = 0
    seconds: float = 0.0
    already_complete: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return (self.s3_bytes + self.tail_bytes) / 1e6 / self.seconds if self.seconds else 0.0


# -- reading the target ----------------------------------------------------------------------
def find_cluster_id(store: ObjectStore, node_id: int) -> str:
    """The one cluster of the target that has a ``broker.json`` for ``node_id``."""
    suffix = f"/nodes/{node_id}/{layout.BROKER}"
    found = sorted(
        {o.key.split("/")[1] for o in store.list(layout.FORMAT_DIR + "/") if o.key.endswith(suffix)}
    )
    if not found:
        raise RebuildError(
            f"{store.describe()} has no {layout.FORMAT_DIR}/<cluster>{suffix}: nothing was "
            f"offloaded for node {node_id} (check offload.target and proxy.node_id)"
        )
    if len(found) > 1:
        raise RebuildError(
            f"{store.describe()} holds node {node_id} of several clusters {found}; pass "
            "--cluster-id"
        )
    return found[0]


def _get(store: ObjectStore, key: str, what: str) -> tuple[bytes, str]:
    try:
        obj = store.get(key)
    except ObjectNotFound:
        raise RebuildError(f"{what}: {key} is missing from {store.describe()}") from None
    except StoreError as exc:
        raise RebuildTransient(f"{what}: reading {key} failed: {exc}") from None
    return obj.data, obj.etag


def read_broker_info(store: ObjectStore, cluster_id: str, node_id: int) -> BrokerInfo:
    data, _ = _get(store, layout.broker_key(cluster_id, node_id), "broker.json")
    try:
        info = decode_broker_info(data)
    except NodeFileError as exc:
        raise RebuildError(f"broker.json: {exc}") from None
    if (info.cluster_id, info.node_id) != (cluster_id, node_id):
        raise RebuildError(
            f"broker.json names cluster {info.cluster_id} node {info.node_id}, expected "
            f"{cluster_id} node {node_id}"
        )
    return info


def read_manifests(
    store: ObjectStore, info: BrokerInfo, report: Report
) -> dict[tuple[str, int], tuple[mf.Manifest, str]]:
    out = {}
    for topic, entry in sorted(info.topics.items()):
        for p in entry.partitions:
            key = layout.manifest_key(info.cluster_id, entry.topic_id, p)
            try:
                data, etag = _get(store, key, f"{topic}-{p}")
            except RebuildError as exc:
                if isinstance(exc, RebuildTransient):
                    raise
                # broker.json is written before a new partition's first manifest
                report.warnings.append(
                    f"{topic}-{p}: hosted but never offloaded (no manifest); Kafka creates it "
                    "empty at offset 0"
                )
                continue
            try:
                m = mf.decode(data)
            except mf.ManifestError as exc:
                raise RebuildError(f"{topic}-{p}: {key}: {exc}") from None
            if (m.topic, m.topic_id, m.partition) != (topic, entry.topic_id, p):
                raise RebuildError(
                    f"{key} describes {m.topic}-{m.partition} ({m.topic_id}), expected "
                    f"{topic}-{p} ({entry.topic_id})"
                )
            out[(topic, p)] = (m, etag)
    return out


# -- verifying segments ----------------------------------------------------------------------
@dataclass
class _Fetched:
    plan: PartitionPlan
    ref: mf.SegmentRef
    log: bytes


def _fetch(store: ObjectStore, plan: PartitionPlan, ref: mf.SegmentRef) -> _Fetched:
    what = f"{plan.topic}-{plan.partition} (manifest v{plan.manifest.version})"
    data, _ = _get(store, ref.key, f"{what} lists a segment but")
    try:
        log = segment_codec.decode(data, ref)
    except segment_codec.SegmentError as exc:
        raise RebuildError(f"{what}: segment cannot be used: {exc}") from None
    return _Fetched(plan, ref, log)


def _batches(log: bytes, after: int, last_epoch: int, where: str) -> tuple[list, int, int]:
    """``(base, last, length)`` of each batch; checks offsets increase past ``after`` and
    leader epochs never decrease. Returns the batches, the last offset and last epoch."""
    out = []
    for h in iter_batches(log, check_crc=False):  # CRCs were checked by decode()
        last = h.base_offset + h.last_offset_delta
        if h.base_offset <= after:
            raise RebuildError(f"{where}: batch at {h.base_offset} does not follow offset {after}")
        if 0 <= h.partition_leader_epoch < last_epoch:
            raise RebuildError(
                f"{where}: batch at {h.base_offset} has leader epoch "
                f"{h.partition_leader_epoch} after epoch {last_epoch}"
            )
        last_epoch = max(last_epoch, h.partition_leader_epoch)
        out.append((h.base_offset, last, h.length))
        after = last
    return out, after, last_epoch


# -- the rebuild -----------------------------------------------------------------------------
class _Progress:
    def __init__(self, total_bytes: int, partitions: int, out: TextIO, every_s: float) -> None:
        self.total, self.partitions, self.out, self.every = total_bytes, partitions, out, every_s
        self.done = 0
        self.parts_done = 0
        self.start = time.monotonic()
        self.last = 0.0

    def add(self, n: int, *, partition_done: bool = False, force: bool = False) -> None:
        self.done += n
        self.parts_done += partition_done
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            rate = self.done / 1e6 / max(now - self.start, 1e-9)
            print(
                f"rebuild: {self.parts_done}/{self.partitions} partitions, "
                f"{self.done / 2**20:.1f}/{self.total / 2**20:.1f} MiB, {rate:.1f} MB/s",
                file=self.out,
                flush=True,
            )


def plan(
    store: ObjectStore, opts: RebuildOptions, report: Report, facts: WalFacts | None
) -> tuple[BrokerInfo, list[PartitionPlan]]:
    cluster_id = opts.cluster_id or find_cluster_id(store, opts.node_id)
    info = read_broker_info(store, cluster_id, opts.node_id)
    report.cluster_id, report.node_id = cluster_id, opts.node_id
    manifests = read_manifests(store, info, report)
    # data partitions' open transactions; __consumer_offsets' (transactional offset
    # commits, no BATCH entries) are _offsets_tail's
    opened = {
        tp: m.open_transactions
        for tp, (m, _) in manifests.items()
        if m.open_transactions and tp[0] != CONSUMER_OFFSETS
    }
    tails: dict[tuple[str, int], PartitionTail] = {}
    if facts is not None:
        names = {t.topic_id: name for name, t in info.topics.items()}
        if opts.gateway_wal:
            facts = _hosted_only(facts, info, names, report)
        _never_offloaded(facts, info, manifests, names, opts.node_id)
        try:
            tails = plan_tail(
                facts,
                {tp: m.next_offset for tp, (m, _) in manifests.items()},
                {
                    tp: (m.leader_epochs[-1][0] if m.leader_epochs else 0)
                    for tp, (m, _) in manifests.items()
                },
                names,
                allow_gaps=opts.allow_gaps,
                open_at_start=opened,
            )
        except TailError as exc:
            raise RebuildError(f"WAL tail: {exc}") from None
        _count_transactions(tails, report)
        _offsets_tail(facts, info, manifests, tails, names, opts, report)
    _count_s3_open(opened, tails, report, wal=facts is not None)
    plans = [
        PartitionPlan(tp[0], tp[1], m, etag, tails.get(tp))
        for tp, (m, etag) in sorted(manifests.items())
    ]
    return info, plans


def _hosted_only(
    facts: WalFacts, info: BrokerInfo, names: dict[uuid.UUID, str], report: Report
) -> WalFacts:
    """A gateway's WAL without the batches of partitions this node does not host."""
    hosted = {(name, p) for name, t in info.topics.items() for p in t.partitions}

    def here(topic: str | None, topic_id: uuid.UUID | None, partition: int) -> bool:
        name = topic if topic is not None else names.get(topic_id)  # type: ignore[arg-type]
        return (name, partition) in hosted

    acked = [a for a in facts.acked if here(a.topic, a.topic_id, a.partition)]
    report.wal_tail_elsewhere = len(facts.acked) - len(acked)
    in_doubt = [(lsn, b) for lsn, b in facts.in_doubt if here(b.topic, b.topic_id, b.partition)]
    return dataclasses.replace(facts, acked=acked, in_doubt=in_doubt)


def _count_transactions(tails: dict[tuple[str, int], PartitionTail], report: Report) -> None:
    ends = {lsn: e for t in tails.values() for lsn, e in t.markers.items()}
    report.txn_markers_written = sum(len(t.markers) for t in tails.values())
    report.txn_restored_committed = sum(1 for e in ends.values() if e.committed)
    report.txn_restored_aborted = len(ends) - report.txn_restored_committed
    for t in tails.values():
        report.txn_batches_refused += len(t.txn_left_out)
        report.warnings += [f"left out (--allow-gaps): {why}" for why in t.txn_left_out]


def _count_s3_open(
    opened: dict[tuple[str, int], tuple[mf.OpenTxn, ...]],
    tails: dict[tuple[str, int], PartitionTail],
    report: Report,
    *,
    wal: bool,
) -> None:
    """Count (and warn about) the transactions open at the end of the S3 copy: a marker
    from the WAL, left open with --allow-gaps, or not in the WAL at all."""
    for t in tails.values():
        for end in t.s3_open.values():
            if isinstance(end, str):
                report.txn_open_unresolved += 1
                report.warnings.append(f"left open (--allow-gaps): {end}")
            else:
                report.txn_markers_for_s3_open += 1
    source = "the WAL holds no batch of it" if wal else "no WAL was read (--no-wal)"
    for (topic, p), o in open_without_wal(opened, tails):
        report.txn_open_unresolved += 1
        where = f"{topic}-{p}"
        report.warnings.append(
            f"{where}: the transaction of producer id {o.producer_id}, epoch "
            f"{o.producer_epoch} from offset {o.first_offset} is open at the end of the S3 "
            f"copy and {source} (trimmed, or another WAL's), so its end is not known: it "
            f"stays open in the rebuilt log (LSO stuck at {o.first_offset}, read_committed "
            f"consumers stalled); once its coordinator's state shows it aborted or never "
            f"ended, {abort_hint(where, o)}"
        )


def _never_offloaded(
    facts: WalFacts,
    info: BrokerInfo,
    manifests: dict[tuple[str, int], tuple[mf.Manifest, str]],
    names: dict[uuid.UUID, str],
    node_id: int,
) -> None:
    """Give an empty manifest (from offset 0) to each partition this node hosts that has
    acknowledged batches in the WAL but no manifest yet (lost within its first seconds, or
    while S3 was down since it was created): the WAL then rebuilds it alone. Nothing was
    trimmed from the WAL for it (trimming waits for a manifest), so its tail must start at
    offset 0; one that does not is refused by :func:`plan_tail` as a gap."""
    for a in facts.acked:
        name = a.topic
        if name is None and a.topic_id is not None:
            name = names.get(a.topic_id)
        entry = info.topics.get(name) if name is not None else None
        if name is None or entry is None or a.partition not in entry.partitions:
            continue  # plan_tail names what it cannot place
        if (name, a.partition) in manifests:
            continue
        manifests[(name, a.partition)] = (
            mf.initial_manifest(
                name,
                entry.topic_id,
                a.partition,
                writer_node=node_id,
                writer_epoch=0,
                log_start_offset=0,
                version=0,
            ),
            "none",
        )


def _offsets_tail(
    facts: WalFacts,
    info: BrokerInfo,
    manifests: dict[tuple[str, int], tuple[mf.Manifest, str]],
    tails: dict[tuple[str, int], PartitionTail],
    names: dict[uuid.UUID, str],
    opts: RebuildOptions,
    report: Report,
) -> None:
    """Append the acknowledged commits to this node's ``__consumer_offsets`` partitions."""
    entry = info.topics.get(CONSUMER_OFFSETS)
    hosted = set(entry.partitions) if entry is not None else set()
    count = opts.offsets_partitions or (entry.partition_count if entry is not None else None)
    open_at_start = {
        tp[1]: m.open_transactions
        for tp, (m, _) in manifests.items()
        if tp[0] == CONSUMER_OFFSETS and m.open_transactions
    }
    if open_at_start and count is not None:
        _open_markers(plan_open_markers(facts, open_at_start, count), manifests, tails, report)
    if not facts.commits:
        return
    if count is None:
        if entry is not None:
            report.warnings.append(
                f"{len(facts.commits)} acknowledged commit(s) in the WAL not restored: "
                f"broker.json does not record how many partitions {CONSUMER_OFFSETS} has "
                "(an older offloader); pass --offsets-topic-partitions"
            )
        return
    try:
        planned = plan_offsets_tail(facts, hosted, names, count)
    except ValueError as exc:
        raise RebuildError(f"--offsets-topic-partitions: {exc}") from None
    report.offset_commits_acknowledged = planned.acknowledged
    report.offset_commits_transactional_committed = planned.transactional_committed
    report.offset_commits_transactional = planned.transactional_skipped
    report.offset_commits_elsewhere = planned.elsewhere
    if planned.unknown_topic:
        report.warnings.append(
            f"{planned.unknown_topic} acknowledged commit(s) name a topic id the offload "
            "target does not list; not restored"
        )
    if planned.elsewhere and not planned.commits:
        report.warnings.append(
            f"{planned.elsewhere} acknowledged commit(s) belong to {CONSUMER_OFFSETS} "
            f"partitions this node does not host (of {count}); check "
            "--offsets-topic-partitions if this node coordinated them"
        )
    for p, commits in sorted(planned.commits.items()):
        assert entry is not None
        tp = (CONSUMER_OFFSETS, p)
        if tp not in manifests:  # hosted, never offloaded: the commits start its log
            manifests[tp] = (
                mf.initial_manifest(
                    CONSUMER_OFFSETS,
                    entry.topic_id,
                    p,
                    writer_node=opts.node_id,
                    writer_epoch=0,
                    log_start_offset=0,
                    version=0,
                ),
                "none",
            )
        m = manifests[tp][0]
        tail = tails.setdefault(tp, PartitionTail(CONSUMER_OFFSETS, p, m.next_offset))
        epoch = m.leader_epochs[-1][0] if m.leader_epochs else 0
        tail.batches += commit_batches(commits, tail.next_offset, epoch, names)
        report.offset_commits_restored += len(commits)


def _open_markers(
    planned: OpenMarkers,
    manifests: dict[tuple[str, int], tuple[mf.Manifest, str]],
    tails: dict[tuple[str, int], PartitionTail],
    report: Report,
) -> None:
    """Start the tails of ``__consumer_offsets`` partitions with the markers of transactional
    commits left open by the S3 copy."""
    report.warnings += planned.warnings
    report.offset_commit_txns_open_undecided += len(planned.warnings)
    for p, ends in sorted(planned.markers.items()):
        m = manifests[(CONSUMER_OFFSETS, p)][0]
        tail = tails.setdefault(
            (CONSUMER_OFFSETS, p), PartitionTail(CONSUMER_OFFSETS, p, m.next_offset)
        )
        epoch = m.leader_epochs[-1][0] if m.leader_epochs else 0
        for end in ends:
            offset = tail.next_offset
            data = marker_batch(end, offset, epoch)
            tail.batches.append(TailBatch(offset, offset, data, end.end_lsn))
            tail.markers[end.end_lsn] = end
            report.offset_commit_txn_markers += 1


def _meta(info: BrokerInfo, node_id: int) -> kl.MetaProperties:
    mp = info.meta_properties or {}
    directory_id = info.directory_id or mp.get("directory.id") or kl.new_directory_id()
    return kl.MetaProperties(info.cluster_id, node_id, directory_id)


def _read_s3_wal(wal_store: ObjectStore, parallel: int) -> WalFacts:
    """The S3 WAL's entries, folded. A store that stays unreachable is transient (re-run);
    no WAL there, corruption or an undecodable entry refuses, as for a WAL directory."""
    try:
        return collect(wal.read_s3_wal(wal_store, parallel=max(1, parallel)))
    except (WalError, TailError) as exc:
        raise RebuildError(
            f"WAL {wal_store.describe()}: {exc}; if the WAL is lost, --no-wal rebuilds from "
            "the offload target alone (acknowledged records not yet offloaded are then lost)"
        ) from None
    except (StoreError, OSError) as exc:
        raise RebuildTransient(f"WAL {wal_store.describe()}: {exc}") from None


def rebuild(
    store: ObjectStore,
    opts: RebuildOptions,
    *,
    out: TextIO = sys.stdout,
    progress_every_s: float = 1.0,
) -> Report:
    """Run (or resume) a rebuild; raises :class:`RebuildError` when it must refuse."""
    report = Report()
    t0 = time.monotonic()
    facts = None
    if opts.wal_store is not None:
        facts = _read_s3_wal(opts.wal_store, opts.parallel)
    elif opts.wal_dir is not None:
        try:
            facts = collect(wal.read_directory(opts.wal_dir))
        except (WalError, TailError) as exc:
            hint = ""
            if not Path(opts.wal_dir).is_dir():
                hint = (
                    "; if the WAL volume is lost, --no-wal rebuilds from the offload target "
                    "alone (acknowledged records not yet offloaded are then lost)"
                )
            raise RebuildError(f"WAL {opts.wal_dir}: {exc}{hint}") from None
    if facts is not None:
        report.wal_in_doubt = len(facts.in_doubt)
    info, plans = plan(store, opts, report, facts)
    writer = LogDirWriter(opts.log_dir, cluster_id=info.cluster_id, node_id=opts.node_id)
    try:
        writer.open()
    except LogDirNotEmpty as exc:
        raise RebuildError(str(exc)) from None
    if writer.complete:
        report.already_complete = True
        print(f"rebuild: {opts.log_dir} was already rebuilt completely; nothing to do", file=out)
        return report
    todo = [p for p in plans if not writer.is_finished(p.topic, p.partition, p.source)]
    report.skipped_finished = len(plans) - len(todo)
    report.partitions = len(plans)
    if report.skipped_finished:
        print(f"rebuild: resuming; {report.skipped_finished} partition(s) already done", file=out)
    for w in report.warnings:
        print(f"rebuild: warning: {w}", file=out)
    progress = _Progress(sum(p.size for p in todo), len(todo), out, progress_every_s)
    _write_partitions(store, opts, writer, todo, report, progress)
    writer.finish(
        _meta(info, opts.node_id),
        opts.metadata_log_dir,
        kl.MetaProperties(info.cluster_id, opts.node_id, kl.new_directory_id()),
    )
    report.seconds = time.monotonic() - t0
    progress.add(0, force=True)
    return report


def _fetches(
    pool: cf.ThreadPoolExecutor, store: ObjectStore, todo: list[PartitionPlan], window: int
) -> Iterator[cf.Future[_Fetched]]:
    """Futures of every segment of every partition, in order, at most ``window`` ahead."""
    jobs = ((p, ref) for p in todo for ref in p.manifest.segments)
    pending: list[cf.Future[_Fetched]] = []
    for p, ref in jobs:
        pending.append(pool.submit(_fetch, store, p, ref))
        if len(pending) >= window:
            yield pending.pop(0)
    yield from pending


def _write_partitions(
    store: ObjectStore,
    opts: RebuildOptions,
    writer: LogDirWriter,
    todo: list[PartitionPlan],
    report: Report,
    progress: _Progress,
) -> None:
    pool = cf.ThreadPoolExecutor(max(1, opts.parallel), thread_name_prefix="rebuild")
    try:
        fetches = _fetches(pool, store, todo, max(1, opts.parallel))
        for p in todo:
            _write_partition(p, fetches, opts, writer, report, progress)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _write_partition(
    p: PartitionPlan,
    fetches: Iterator[cf.Future[_Fetched]],
    opts: RebuildOptions,
    writer: LogDirWriter,
    report: Report,
    progress: _Progress,
) -> None:
    where = f"{p.topic}-{p.partition}"
    pw = writer.begin_partition(p.topic, p.partition, opts.segment_bytes)
    try:
        after, epoch = -1, -1
        for ref in p.manifest.segments:
            got = next(fetches).result()
            assert got.ref is ref
            batches, after, epoch = _batches(got.log, after, epoch, f"{where}: {ref.key}")
            pw.append(got.log, batches)
            report.segments += 1
            report.s3_bytes += len(got.log)
            report.stored_bytes += ref.stored_size
            progress.add(len(got.log))
        if p.tail is not None and p.tail.batches:
            if after >= 0 and p.tail.start != after + 1:
                raise RebuildError(
                    f"{where}: the S3 copy ends at {after}, the WAL tail starts at {p.tail.start}"
                )
            for b in p.tail.batches:
                batches, after, epoch = _batches(b.data, after, epoch, f"{where}: WAL tail")
                pw.append(b.data, batches)
            report.tail_batches += len(p.tail.batches)
            report.wal_in_doubt_placed += p.tail.gap_filled
            report.tail_bytes += p.tail.size
            progress.add(p.tail.size)
        pw.finish(p.manifest.topic_id, p.leader_epochs())
    except BaseException:
        pw.abort()
        raise
    writer.commit_partition(
        pw,
        FinishedPartition(
            p.topic, p.partition, p.manifest.log_start_offset, p.next_offset, pw.bytes, p.source
        ),
    )
    progress.add(0, partition_done=True)
