"""After a third-party suite ran through walproxy: is every batch walproxy acknowledged in the
broker's log, at its acknowledged offset, once?

The acknowledged side comes from walproxy's WAL (read-only, after the proxy stopped): each
BATCH entry whose OUTCOME says error 0 at base offset B holds record batches that the client
was told are at B, B+n, ... The log side comes from the brokers' log directories, read as
files: franz-go's tests delete their topics when they pass, so the partitions are read from
the ``<topic>-<p>.<id>-delete`` directories Kafka leaves behind for
``log.segment.delete.delay.ms`` (:func:`keep_deleted_logs` raises it for the run). Both sides
go through durability.py's :func:`~tests.integration.durability.compare`, one topic at a
time, with a batch's identity as the "value":

* idempotent batches (producer id >= 0) by producer id, epoch and sequence (unique per
  partition, so two copies in the log are a duplicate);
* other batches by CRC and record count plus how many identical batches came before in the
  partition (a client may legitimately send the same records twice; Kafka's at-least-once
  for a non-idempotent producer allows the second copy, which shows as "unacked").
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from offload.kafka_logdir import parse_partition_metadata
from offload.wal_tail import collect
from proxy.kafka.record_batch import BatchHeader, iter_batches
from wal.directory import read_directory

from .durability import Acked, DurabilityReport, compare

_PARTITION_DIR = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)(?:\.[0-9a-f]{32}-delete)?$")

#: Long enough to outlive the three suite runs and the check.
KEEP_DELETED_MS = 3_600_000


def _identity(partition: int, h: BatchHeader, seen: Counter[str]) -> bytes:
    """compare() matches values across a topic's partitions: the partition is part of it."""
    if h.producer_id >= 0:
        pid = f"pid {h.producer_id} epoch {h.producer_epoch} seq {h.base_sequence}"
        return f"p{partition} {pid}".encode()
    key = f"p{partition} crc {h.crc:#010x} n {h.record_count}"
    seen[key] += 1
    return f"{key} #{seen[key]}".encode()


@dataclass
class WalAcks:
    #: topic (name, or topic id as str when the request named the id) -> acked batches
    acked: dict[str, list[Acked]] = field(default_factory=lambda: defaultdict(list))
    entries: int = 0  # BATCH and OUTCOME entries in the WAL
    acked_batches: int = 0  # BATCH entries with an OUTCOME of error 0
    in_doubt: int = 0  # BATCH entries without an outcome (none once the proxy stopped)


def wal_acks(wal_dir: Path) -> WalAcks:
    """Every record batch the proxy acknowledged, from its (stopped) WAL, folded by the
    rebuild's own reader (offload.wal_tail.collect)."""
    facts = collect(read_directory(str(wal_dir)))
    out = WalAcks(entries=facts.entries, acked_batches=len(facts.acked))
    out.in_doubt = len(facts.in_doubt)
    pending: dict[tuple[str, int], list[tuple[int, BatchHeader]]] = defaultdict(list)
    for b in facts.acked:
        topic = b.topic if b.topic is not None else str(b.topic_id)
        offset = b.base_offset
        for h in b.headers:
            pending[(topic, b.partition)].append((offset, h))
            offset += h.last_offset_delta + 1
    for (topic, partition), items in pending.items():
        seen: Counter[str] = Counter()
        for offset, h in sorted(items, key=lambda x: x[0]):
            out.acked[topic].append(Acked(partition, offset, _identity(partition, h, seen)))
    return out


@dataclass
class LogPartition:
    topic: str
    topic_id: uuid.UUID | None
    partition: int
    batches: list[tuple[int, BatchHeader]]


def _segments(directory: Path) -> Iterator[tuple[int, BatchHeader]]:
    for seg in sorted(directory.glob("*.log")):
        data = seg.read_bytes()
        for h in iter_batches(data):
            if not h.is_control:  # markers are the broker's, never a client's
                yield h.base_offset, h


def read_log_dirs(log_dirs: Iterable[Path]) -> Iterator[LogPartition]:
    """Every partition directory (live or awaiting deletion) of the given broker log dirs."""
    for log_dir in log_dirs:
        for d in sorted(p for p in log_dir.iterdir() if p.is_dir()):
            m = _PARTITION_DIR.match(d.name)
            meta = d / "partition.metadata"
            if m is None or not meta.exists():
                continue
            yield LogPartition(
                m["topic"],
                parse_partition_metadata(meta.read_text()),
                int(m["partition"]),
                list(_segments(d)),
            )


@dataclass
class Check:
    topics: int
    acked_batches: int
    read_batches: int
    wal: WalAcks
    reports: dict[str, DurabilityReport]
    missing_topics: list[str]

    @property
    def bad(self) -> dict[str, DurabilityReport]:
        return {t: r for t, r in self.reports.items() if not r.intact}

    def summary(self) -> str:
        lines = [
            f"{self.wal.entries} WAL entries: {self.wal.acked_batches} acknowledged produces "
            f"holding {self.acked_batches} record batches in {self.topics} topics, "
            f"{self.wal.in_doubt} in doubt; {self.read_batches} batches of those topics read "
            "from the log dirs"
        ]
        for topic, report in sorted(self.bad.items())[:5]:
            lines.append(f"{topic}:\n{report.summary()}")
        if self.missing_topics:
            lines.append(f"topics not in any log dir: {self.missing_topics[:5]}")
        return "\n".join(lines)


def check(wal_dir: Path, log_dirs: Iterable[Path]) -> Check:
    acks = wal_acks(wal_dir)
    by_name: dict[str, list[LogPartition]] = defaultdict(list)
    for lp in read_log_dirs(log_dirs):
        by_name[lp.topic].append(lp)
        if lp.topic_id is not None:
            by_name[str(lp.topic_id)].append(lp)
    reports: dict[str, DurabilityReport] = {}
    missing: list[str] = []
    read = 0
    for topic, acked in acks.acked.items():
        parts = by_name.get(topic)
        if not parts:
            missing.append(topic)
            continue
        consumed: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        for lp in parts:
            seen: Counter[str] = Counter()
            for offset, h in lp.batches:
                consumed[lp.partition].append((offset, _identity(lp.partition, h, seen)))
                read += 1
        reports[topic] = compare(acked, dict(consumed))
    total = sum(len(v) for v in acks.acked.values())
    return Check(len(acks.acked), total, read, acks, reports, missing)


@contextlib.contextmanager
def keep_deleted_logs(bootstrap: str, node_ids: Iterable[int]) -> Iterator[None]:
    """Raise ``log.segment.delete.delay.ms`` (dynamic, set per broker: confluent-kafka cannot
    name the cluster default) so a deleted topic's files stay on disk until the check has
    read them; put it back after."""
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    node_ids = list(node_ids)

    def alter(op: AlterConfigOpType, value: str | None) -> None:
        entry = ConfigEntry("log.segment.delete.delay.ms", value, incremental_operation=op)
        for node in node_ids:
            res = ConfigResource(ResourceType.BROKER, str(node), incremental_configs=[entry])
            for fut in admin.incremental_alter_configs([res]).values():
                fut.result(30)

    alter(AlterConfigOpType.SET, str(KEEP_DELETED_MS))
    time.sleep(1)  # a broker applies it from the metadata log
    try:
        yield
    finally:
        alter(AlterConfigOpType.DELETE, None)
