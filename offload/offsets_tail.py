"""The ``__consumer_offsets`` tail of a rebuild: acknowledged commits as the coordinator's own
records, sans-IO.

Every OffsetCommit that walproxy acknowledged is in its WAL (COMMIT entry, COMMIT_OUTCOME of
error 0; :mod:`offload.wal_tail` folds them). The group coordinator keeps committed offsets
in ``__consumer_offsets`` as records whose key and value are Kafka's ``OffsetCommitKey`` and
``OffsetCommitValue`` (``group-coordinator/src/main/resources/common/message/``), each
prefixed by its int16 version:

* key, version 1: ``group`` (string), ``topic`` (string), ``partition`` (int32);
* value, version 3: ``offset`` (int64), ``leaderEpoch`` (int32, -1 unknown), ``metadata``
  (string, not nullable: null is written as ""), ``commitTimestamp`` (int64 ms).

Strings are int16-length-prefixed UTF-8 (neither schema version is flexible). The broker
replays these records when it loads the partition on start, classic and KIP-848 groups
alike (a commit for a group it has no metadata for makes an empty classic group, which a
KIP-848 member may take over).

Which commits: for each (group, topic, partition) the last acknowledged one in the WAL.
Since the WAL is trimmed as a prefix (by LSN), a commit still in it has every later commit
through walproxy beside it, so the last one is the newest a client was told about. They are
appended after the S3 copy of the group's partition whether or not S3 already has them:
a commit written again with its own value changes nothing.

A transactional commit (TxnOffsetCommit) counts only if its transaction committed. The
coordinator then applies it at the place of its own record in the log: a plain commit
written after it wins, one written before it loses (Kafka's ``olderThan`` on the record's
offset when the marker completes the pending commit). So where the same WAL proves the
transaction's end (:class:`~offload.txn_tail.EndIndex`: a durable EndTxn outcome of error 0,
as for the data partitions' markers), a committed one takes its place in the WAL order like a
plain commit and is written as one (its transaction is over, so it needs no marker here), and
an aborted one is passed over. One whose end the WAL does not prove (its coordinator is
another broker's, or the EndTxn is in doubt) leaves its (group, topic, partition) out unless a
plain commit follows it: writing the plain commit before it could take back an offset the
transaction committed and S3 holds. Both are counted in the report.

A transactional commit's record may be in the S3 copy while its marker is not (the manifest's
``open_transactions`` names its producer): the coordinator would load it as pending for good,
and a consumer asking for stable offsets would wait forever. :func:`plan_open_markers` finds
the TxnOffsetCommits of that producer and epoch in the WAL for the partition's groups; where
they all belong to one transaction whose end the WAL proves, its marker is written first in
the tail (the real one came after the copy's end, so before or among the records written
after it; a plain commit written after the marker still wins, as after the real one).
Otherwise the rebuild warns: which of several transactions of one epoch (transaction.version
1) is the open one, or how it ended, is not in this WAL.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proxy.kafka.groups import CONSUMER_OFFSETS, group_partition
from proxy.kafka.record_batch import build_batch

from .manifest import OpenTxn
from .txn_tail import EndIndex, TxnEnd, Unresolved
from .wal_tail import AckedCommit, TailBatch, WalFacts

KEY_VERSION = 1
VALUE_VERSION = 3

_I16 = struct.Struct(">h")


def _string(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0x7FFF:
        raise ValueError(f"string of {len(raw)} bytes does not fit an int16 length")
    return _I16.pack(len(raw)) + raw


def commit_key(group: str, topic: str, partition: int) -> bytes:
    """``OffsetCommitKey`` as the coordinator writes it (version 1)."""
    return _I16.pack(KEY_VERSION) + _string(group) + _string(topic) + struct.pack(">i", partition)


def commit_value(offset: int, leader_epoch: int, metadata: str | None, commit_time: int) -> bytes:
    """``OffsetCommitValue`` version 3."""
    return (
        _I16.pack(VALUE_VERSION)
        + struct.pack(">qi", offset, leader_epoch)
        + _string(metadata or "")
        + struct.pack(">q", commit_time)
    )


def decode_commit_record(key: bytes, value: bytes) -> tuple[str, str, int, int, int, str, int]:
    """``(group, topic, partition, offset, leader epoch, metadata, commit time)`` of an
    offset commit record of key version 0/1 and value version 1/3 (the tests read the
    rebuilt log with it)."""

    def string(buf: bytes, pos: int) -> tuple[str, int]:
        (n,) = _I16.unpack_from(buf, pos)
        return buf[pos + 2 : pos + 2 + n].decode(), pos + 2 + n

    (kv,) = _I16.unpack_from(key, 0)
    if kv not in (0, 1):
        raise ValueError(f"not an offset commit key (version {kv})")
    group, pos = string(key, 2)
    topic, pos = string(key, pos)
    (partition,) = struct.unpack_from(">i", key, pos)
    (vv,) = _I16.unpack_from(value, 0)
    (offset,) = struct.unpack_from(">q", value, 2)
    pos, epoch = 10, -1
    if vv >= 3:
        (epoch,) = struct.unpack_from(">i", value, pos)
        pos += 4
    metadata, pos = string(value, pos)
    (commit_time,) = struct.unpack_from(">q", value, pos)
    return group, topic, partition, offset, epoch, metadata, commit_time


@dataclass
class OffsetsTail:
    """What the WAL adds to the ``__consumer_offsets`` partitions of this node."""

    #: partition -> the commits to append there, oldest first
    commits: dict[int, list[AckedCommit]] = field(default_factory=dict)
    acknowledged: int = 0  # latest acknowledged (group, topic, partition) commits in the WAL
    #: transactional commits (partition offsets) whose transaction the WAL proves committed
    #: (folded in with the plain ones) or aborted (passed over)
    transactional_committed: int = 0
    transactional_aborted: int = 0
    #: (group, topic, partition)s left out: their last commit is transactional and its
    #: transaction's end is not in this WAL
    transactional_unresolved: int = 0
    #: commits of groups whose partition this node does not host (another coordinator's)
    elsewhere: int = 0
    unknown_topic: int = 0  # named by a topic id the offload target does not list

    @property
    def restored(self) -> int:
        return sum(len(c) for c in self.commits.values())

    @property
    def transactional_skipped(self) -> int:
        """Transactional commits not written: aborted, or their end not in the WAL."""
        return self.transactional_aborted + self.transactional_unresolved


def plan_offsets_tail(
    facts: WalFacts,
    hosted: set[int],
    topic_names: Mapping[uuid.UUID, str],
    partitions: int,
) -> OffsetsTail:
    """Group the last acknowledged commit per (group, topic, partition) by the
    ``__consumer_offsets`` partition that holds the group (of ``partitions``), keeping those
    of the ``hosted`` partitions."""
    out = OffsetsTail()
    ends = EndIndex(facts.end_txns)
    latest: dict[tuple[str, str | None, uuid.UUID | None, int], AckedCommit | None] = {}
    for c in facts.commits:  # LSN order
        key = (c.group_id, c.topic, c.topic_id, c.partition)
        if c.transactional_id is not None:
            end = ends.resolve(c.lsn, c.producer_id, c.producer_epoch)
            if isinstance(end, Unresolved):
                latest[key] = None  # unknown: nothing before it may be written
                continue
            if not end.committed:
                out.transactional_aborted += 1
                continue  # never counted: the commit before it stands
            out.transactional_committed += 1
        latest[key] = c
    out.transactional_unresolved = sum(1 for c in latest.values() if c is None)
    known = [c for c in latest.values() if c is not None]
    for c in sorted(known, key=lambda c: c.lsn):
        out.acknowledged += 1
        if c.topic is None and (c.topic_id is None or c.topic_id not in topic_names):
            out.unknown_topic += 1
            continue
        p = group_partition(c.group_id, partitions)
        if p not in hosted:
            out.elsewhere += 1
            continue
        out.commits.setdefault(p, []).append(c)
    return out


def commit_batches(
    commits: list[AckedCommit],
    start: int,
    leader_epoch: int,
    topic_names: Mapping[uuid.UUID, str],
) -> list[TailBatch]:
    """One record batch per commit, at offsets from ``start``, stamped with its commit time
    (what the coordinator writes: a non-transactional batch, no producer id)."""
    out = []
    offset = start
    for c in commits:
        topic = c.topic if c.topic is not None else topic_names[c.topic_id]  # type: ignore[index]
        data = build_batch(
            [commit_value(c.offset, c.leader_epoch, c.metadata, c.commit_time_ms)],
            keys=[commit_key(c.group_id, topic, c.partition)],
            timestamp_ms=c.commit_time_ms,
            base_offset=offset,
            partition_leader_epoch=leader_epoch,
        )
        out.append(TailBatch(offset, offset, data, c.lsn))
        offset += 1
    return out


@dataclass
class OpenMarkers:
    """Markers for the transactions open at the end of the S3 copy of this node's
    ``__consumer_offsets`` partitions, and those it cannot decide."""

    #: partition -> the ends to write first in its tail
    markers: dict[int, list[TxnEnd]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def plan_open_markers(
    facts: WalFacts, open_at_start: Mapping[int, Sequence[OpenTxn]], partitions: int
) -> OpenMarkers:
    """For each transaction open at the end of a ``__consumer_offsets`` partition's S3 copy
    (``open_at_start``: partition -> the manifest's ``open_transactions``), its marker when
    the WAL's TxnOffsetCommits of that producer and epoch to the partition's groups all belong
    to one transaction whose end the WAL proves; else a warning naming it."""
    out = OpenMarkers()
    ends = EndIndex(facts.end_txns)
    for p, txns in sorted(open_at_start.items()):
        for t in txns:
            found: dict[int, TxnEnd] = {}
            unknown: list[str] = []
            for c in facts.commits:
                if (
                    c.transactional_id is None
                    or (c.producer_id, c.producer_epoch) != (t.producer_id, t.producer_epoch)
                    or group_partition(c.group_id, partitions) != p
                ):
                    continue
                end = ends.resolve(c.lsn, c.producer_id, c.producer_epoch)
                if isinstance(end, Unresolved):
                    unknown.append(end.reason)
                else:
                    found[end.end_lsn] = end
            if len(found) == 1 and not unknown:
                out.markers.setdefault(p, []).extend(found.values())
                continue
            if not found and not unknown:
                why = "the WAL holds no TxnOffsetCommit of it"
            elif not found:
                why = f"its end is not known from this WAL ({unknown[0]})"
            else:
                why = (
                    f"the WAL holds TxnOffsetCommits of {len(found) + bool(unknown)} "
                    "transactions of that producer and epoch, and which one is open is not known"
                )
            out.warnings.append(
                f"{CONSUMER_OFFSETS}-{p}: the transactional offset commit of producer "
                f"{t.producer_id} (epoch {t.producer_epoch}) from offset {t.first_offset} is "
                f"open at the end of the S3 copy and no marker is written: {why}. The "
                "coordinator keeps it pending (consumers asking for stable offsets wait) "
                "until its own coordinator ends it; if `kafka-transactions.sh describe` shows "
                "that transaction ended, abort the hanging one with `kafka-transactions.sh "
                f"abort --topic {CONSUMER_OFFSETS} --partition {p} --start-offset "
                f"{t.first_offset}` (an abort: the pending offsets are dropped)"
            )
    return out
