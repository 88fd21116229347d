"""Skimmer for offset commits: OffsetCommit (v2-v10) and TxnOffsetCommit (v0-v5).

The durable commit path needs, of a commit request, only what a consumer's position is:
the group, and per partition the topic (name, or topic id from OffsetCommit v10), the
partition, the offset, its leader epoch and metadata; for TxnOffsetCommit also the
transactional id, producer id and epoch. The skimmer reads those in one pass and skips the
rest (generation or member epoch, member id, group instance id, retention time, tagged
fields); the frame itself is forwarded unchanged.

Layouts (Kafka's ``OffsetCommitRequest.json``, ``TxnOffsetCommitRequest.json``):

* OffsetCommit: ``group_id``, ``generation_id_or_member_epoch``, ``member_id``,
  ``group_instance_id`` (v7+), ``retention_time_ms`` (v2-v4), topics (name; topic id in
  v10) of partitions (index, offset, leader epoch v6+, metadata). Flexible from v8. v9 is
  v8's layout (KIP-848 groups). v0 and v1 were removed in Kafka 4.0 and are not advertised.
* TxnOffsetCommit: ``transactional_id``, ``group_id``, ``producer_id``, ``producer_epoch``,
  then (v3+) ``generation_id``, ``member_id``, ``group_instance_id``; topics (name) of
  partitions (index, offset, leader epoch v2+, metadata). Flexible from v3.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from proxy.kafka.cursor import Cursor, WireError
from proxy.kafka.protocol import OFFSET_COMMIT, TXN_OFFSET_COMMIT

#: The versions the skimmer reads; ApiVersions advertises no others for these APIs.
VERSION_RANGES: dict[int, tuple[int, int]] = {OFFSET_COMMIT: (2, 10), TXN_OFFSET_COMMIT: (0, 5)}

_HEADER = struct.Struct(">hhi")
_ZERO_ID = bytes(16)


class CommitSkimError(ValueError):
    """The commit request is malformed (truncated, negative length, trailing bytes)."""


@dataclass(frozen=True, slots=True)
class CommittedPartition:
    topic: str | None  # None when the request named the topic id (OffsetCommit v10)
    topic_id: uuid.UUID | None
    partition: int
    offset: int
    leader_epoch: int  # -1: not sent (older versions) or unknown
    metadata: str | None


@dataclass(frozen=True, slots=True)
class SkimmedCommit:
    api_key: int
    version: int
    correlation_id: int
    group_id: str
    transactional_id: str | None  # TxnOffsetCommit only
    producer_id: int  # -1 unless TxnOffsetCommit
    producer_epoch: int
    partitions: list[CommittedPartition]


def skim_commit(frame: bytes | memoryview) -> SkimmedCommit:
    """The commit of an OffsetCommit or TxnOffsetCommit request frame (no size prefix)."""
    if len(frame) < 10:
        raise CommitSkimError("commit request shorter than its header")
    api_key, version, correlation_id = _HEADER.unpack_from(frame, 0)
    rng = VERSION_RANGES.get(api_key)
    if rng is None:
        raise CommitSkimError(f"api_key {api_key} is not an offset commit")
    if not rng[0] <= version <= rng[1]:
        raise CommitSkimError(f"api_key {api_key} v{version} is not supported by the skimmer")
    txn = api_key == TXN_OFFSET_COMMIT
    flexible = version >= (3 if txn else 8)
    try:
        cur = Cursor(frame, 8, flexible=False)
        cur.string()  # client_id: a nullable int16 string in every header version
        cur.flexible = flexible
        cur.skip_tags()  # request header v2 tagged fields
        transactional_id = None
        producer_id, producer_epoch = -1, -1
        if txn:
            transactional_id = _required(cur, "transactional_id")
            group_id = _required(cur, "group_id")
            producer_id = cur.int64()
            producer_epoch = cur.int16()
            if version >= 3:
                cur.skip(4)  # generation_id
                cur.string()  # member_id
                cur.string()  # group_instance_id
        else:
            group_id = _required(cur, "group_id")
            cur.skip(4)  # generation_id_or_member_epoch
            cur.string()  # member_id
            if version >= 7:
                cur.string()  # group_instance_id
            if version <= 4:
                cur.skip(8)  # retention_time_ms
        epochs = version >= (2 if txn else 6)
        by_id = not txn and version >= 10
        partitions: list[CommittedPartition] = []
        n_topics = cur.length()
        if n_topics < 0:
            raise CommitSkimError("null topic array")
        for _ in range(n_topics):
            topic: str | None = None
            topic_id: uuid.UUID | None = None
            if by_id:
                cur.need(16)
                raw = bytes(frame[cur.pos : cur.pos + 16])
                topic_id = uuid.UUID(bytes=raw) if raw != _ZERO_ID else None  # as kio reads it
                cur.pos += 16
            else:
                topic = _required(cur, "topic name")
            n_parts = cur.length()
            if n_parts < 0:
                raise CommitSkimError("null partition array")
            for _ in range(n_parts):
                partition = cur.int32()
                offset = cur.int64()
                leader_epoch = cur.int32() if epochs else -1
                metadata = cur.string()
                cur.skip_tags()
                partitions.append(
                    CommittedPartition(topic, topic_id, partition, offset, leader_epoch, metadata)
                )
            cur.skip_tags()
        cur.skip_tags()
        if cur.pos != len(frame):
            raise CommitSkimError(f"{len(frame) - cur.pos} trailing bytes after commit request")
    except WireError as exc:
        raise CommitSkimError(f"malformed commit request: {exc}") from None
    return SkimmedCommit(
        api_key,
        version,
        correlation_id,
        group_id,
        transactional_id,
        producer_id,
        producer_epoch,
        partitions,
    )


def _required(cur: Cursor, what: str) -> str:
    value = cur.string()
    if value is None:
        raise CommitSkimError(f"null {what}")
    return value
