"""Zero-copy skimmer for Produce requests.

Decoding a whole ProduceRequest with kio copies every record batch; the proxy only needs the
acks, the transactional id and, per partition, where the records blob lies in the frame. The
skimmer walks the frame once and returns offsets, so callers slice a ``memoryview`` of the
original frame and forward the frame itself unchanged. It covers Produce v0-v13: v3 added
``transactional_id``, v9 made the message flexible (compact strings, tagged fields, request
header v2), v13 replaced the topic name by its topic id.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from proxy.kafka.cursor import Cursor, WireError
from proxy.kafka.protocol import PRODUCE

MAX_SKIM_VERSION = 13

_I16 = struct.Struct(">h")
_ACKS_TIMEOUT = struct.Struct(">hi")


class SkimError(ValueError):
    """The Produce request is malformed (truncated, negative length, trailing bytes)."""


def _malformed(exc: WireError) -> SkimError:
    return SkimError(f"malformed produce request: {exc}")


@dataclass(frozen=True, slots=True)
class PartitionRecords:
    """One partition's records blob: ``frame[start:end]`` holds its record batches."""

    topic: str | None
    topic_id: uuid.UUID | None
    partition: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class SkimmedProduce:
    version: int
    correlation_id: int
    transactional_id: str | None
    acks: int
    timeout_ms: int
    partitions: list[PartitionRecords]


def skim_produce(frame: bytes | memoryview) -> SkimmedProduce:
    """Locate the records of every partition in a Produce request frame (no size prefix)."""
    if len(frame) < 10:
        raise SkimError("produce request shorter than its header")
    api_key, version, correlation_id = struct.unpack_from(">hhi", frame, 0)
    if api_key != PRODUCE:
        raise SkimError(f"api_key {api_key} is not Produce")
    if not 0 <= version <= MAX_SKIM_VERSION:
        raise SkimError(f"produce version {version} is not supported by the skimmer")
    try:
        flexible = version >= 9
        cur = Cursor(frame, 8, flexible=False)
        cur.string()  # client_id: a nullable int16 string in every header version
        cur.flexible = flexible
        cur.skip_tags()  # request header v2 tagged fields
        transactional_id = cur.string() if version >= 3 else None
        cur.need(6)
        acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(frame, cur.pos)
        cur.pos += 6
        partitions: list[PartitionRecords] = []
        n_topics = cur.length()
        if n_topics < 0:
            raise SkimError("null topic array")
        for _ in range(n_topics):
            topic: str | None = None
            topic_id: uuid.UUID | None = None
            if version >= 13:
                cur.need(16)
                topic_id = uuid.UUID(bytes=bytes(frame[cur.pos : cur.pos + 16]))
                cur.pos += 16
            else:
                topic = cur.string()
            n_parts = cur.length()
            if n_parts < 0:
                raise SkimError("null partition array")
            for _ in range(n_parts):
                partition = cur.int32()
                size = cur.length()
                start = cur.pos
                if size > 0:
                    cur.need(size)
                    cur.pos += size
                partitions.append(PartitionRecords(topic, topic_id, partition, start, cur.pos))
                cur.skip_tags()
            cur.skip_tags()
        cur.skip_tags()
        if cur.pos != len(frame):
            raise SkimError(f"{len(frame) - cur.pos} trailing bytes after produce request")
    except WireError as exc:
        raise _malformed(exc) from None
    return SkimmedProduce(version, correlation_id, transactional_id, acks, timeout_ms, partitions)


def produce_acks(frame: bytes | memoryview) -> int:
    """Just the ``acks`` field, for the forward-only path: reads the header and one string."""
    if len(frame) < 10:
        raise SkimError("produce request shorter than its header")
    version = _I16.unpack_from(frame, 2)[0]
    cur = Cursor(frame, 8, flexible=False)
    try:
        cur.string()
        cur.flexible = version >= 9
        cur.skip_tags()
        if version >= 3:
            cur.string()
        return cur.int16()
    except WireError as exc:
        raise _malformed(exc) from None
