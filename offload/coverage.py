"""What the S3 copy covers, for trimming the WAL (shared by the offloader and produce path).

The offloader records each partition's committed next offset and sync time; the produce
path asks, for each settled WAL batch, whether S3 has it (:meth:`Coverage.covers`). A batch
of a partition that is deleted, or led by another broker now, counts as covered: nobody
will offload it from here (its leader's offloader copies it from that broker's log).

A transactional batch (``TxnPartitionKey``: the partition and the batch's producer id) is
covered only once the copy holds its marker too: S3 has the batch, and its producer has no
transaction open at the copy's end that began at or before the batch (the manifest's
``open_transactions``). Until then its BATCH entry holds the WAL's trim, and with it the
END_TXN after it, so a rebuild finds in the WAL what decides a transaction S3 holds unended.

A gateway runs one offloader per broker over one WAL: there a partition led elsewhere is
*not* covered by this offloader (``led_elsewhere_covered=False``) but by the leader's, and
:class:`AnyCoverage` asks them all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from proxy.kafka.groups import CONSUMER_OFFSETS, group_partition

PartitionKey = tuple[str | None, uuid.UUID | None, int]
#: A partition and the producer id of a transactional batch in it.
TxnPartitionKey = tuple[str | None, uuid.UUID | None, int, int]
#: A consumer group and the producer id of a transactional offset commit.
TxnGroupKey = tuple[str, int]
#: A partition, a transactional batch's partition and producer, or (a ``str``) a consumer
#: group: its commits live in the group's ``__consumer_offsets`` partition, which the
#: partition count of that topic says.
CoverKey = PartitionKey | TxnPartitionKey | str | TxnGroupKey


@dataclass(slots=True)
class _Committed:
    next_offset: int
    synced_at: float
    #: producer id -> first offset of its transaction open at ``next_offset``
    open_first: Mapping[int, int]


class Coverage:
    def __init__(self, *, led_elsewhere_covered: bool = True) -> None:
        self._led_elsewhere_covered = led_elsewhere_covered
        self._by_name: dict[tuple[str, int], _Committed] = {}
        self._names: dict[uuid.UUID, str] = {}
        self._released: set[tuple[str, int]] = set()
        self._released_ids: set[uuid.UUID] = set()
        self._offsets_partitions: int | None = None

    def note_partition_count(self, topic: str, count: int) -> None:
        """The broker's metadata lists ``count`` partitions of ``topic`` (only
        ``__consumer_offsets``'s is kept: a group's commits live in one of them)."""
        if topic == CONSUMER_OFFSETS and count > 0:
            self._offsets_partitions = count

    def update(
        self,
        topic: str,
        topic_id: uuid.UUID,
        partition: int,
        next_offset: int,
        synced_at: float,
        open_first: Mapping[int, int] | None = None,
    ) -> None:
        """The committed copy of a partition ends at ``next_offset`` (synced from a fetch
        started at ``synced_at``), with ``open_first`` its open transactions' first offsets."""
        self._names[topic_id] = topic
        self._released.discard((topic, partition))
        self._released.discard((topic, -1))  # re-created under the same name
        self._by_name[(topic, partition)] = _Committed(next_offset, synced_at, open_first or {})

    def led_elsewhere(self, topic: str, topic_id: uuid.UUID, partition: int) -> None:
        """Metadata says another broker leads the partition: covered by that broker's
        offloader, whether or not this one ever offloaded it (after a restart this process's
        WAL still holds entries of partitions it led before, e.g. a group's commits in a
        ``__consumer_offsets`` partition whose leadership moved while it was down)."""
        if self._led_elsewhere_covered and (topic, partition) not in self._by_name:
            self._names[topic_id] = topic
            self._released.add((topic, partition))

    def release(self, topic: str, topic_id: uuid.UUID | None, partition: int | None) -> None:
        """Not ours to offload any more (deleted topic: ``partition`` None, or led elsewhere)."""
        if partition is None:
            if topic_id is not None:
                self._released_ids.add(topic_id)
            for key in [k for k in self._by_name if k[0] == topic]:
                del self._by_name[key]
            self._released.add((topic, -1))
            return
        self._by_name.pop((topic, partition), None)
        if self._led_elsewhere_covered:
            self._released.add((topic, partition))

    def covers(self, key: CoverKey, last_offset: int | None, settled_at: float) -> bool:
        """Has S3 committed this batch (``last_offset`` None: offset unknown, e.g. acks=0;
        then a fetch after ``settled_at`` must have been fully committed)? For a group
        (``key`` a ``str``, or (group, producer id) for a transactional commit): has its
        ``__consumer_offsets`` partition been committed from a fetch after ``settled_at``
        (with no transaction of that producer open at the copy's end)?"""
        producer = -1
        if isinstance(key, str) or len(key) == 2:
            group, producer = (key, -1) if isinstance(key, str) else key
            if self._offsets_partitions is None:
                return False
            key = (CONSUMER_OFFSETS, None, group_partition(group, self._offsets_partitions))
            last_offset = None
        elif len(key) == 4:
            producer = key[3]
        name, topic_id, partition = key[0], key[1], key[2]
        if name is None and topic_id is not None:
            if topic_id in self._released_ids:
                return True
            name = self._names.get(topic_id)
        if name is None:
            return False
        if (name, partition) in self._released or (name, -1) in self._released:
            return True
        c = self._by_name.get((name, partition))
        if c is None:
            return False
        if last_offset is None:  # a commit's record offset is not known: any open one waits
            return c.synced_at > settled_at and producer not in c.open_first
        if c.next_offset <= last_offset:
            return False
        # A transactional batch: its marker is copied unless its producer's open transaction
        # began at or before it (one that began later follows the batch's marker).
        return producer < 0 or c.open_first.get(producer, last_offset + 1) > last_offset


class AnyCoverage:
    """Covered when any of ``coverages()`` covers it (each records only committed truth)."""

    def __init__(self, coverages: Callable[[], Iterable[Coverage]]) -> None:
        self._coverages = coverages

    def covers(self, key: CoverKey, last_offset: int | None, settled_at: float) -> bool:
        return any(c.covers(key, last_offset, settled_at) for c in self._coverages())
