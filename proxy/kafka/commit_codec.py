"""Offset commit responses, sans-IO (kio underneath): each partition's error code, and the
proxy's own answer when a commit cannot be persisted.

Commit responses are small (a few partitions, no records), so they are decoded with kio
after the bounds check of :mod:`proxy.kafka.codec`.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

from kio.index import load_response_schema
from kio.schema.errors import ErrorCode
from kio.static.primitive import i32

from proxy.kafka.codec import decode_response, encode
from proxy.kafka.commit_skim import SkimmedCommit
from proxy.kafka.protocol import TXN_OFFSET_COMMIT

#: (topic name or None, topic id or None, partition), as the request named it.
CommitKey = tuple[str | None, uuid.UUID | None, int]


def response_errors(
    api_key: int, version: int, payload: bytes | memoryview
) -> dict[CommitKey, int]:
    """Each partition's error code in an OffsetCommit or TxnOffsetCommit response.

    Raises :class:`~proxy.kafka.codec.CodecError` on bytes that do not decode.
    """
    _, body = decode_response(api_key, version, payload)
    out: dict[CommitKey, int] = {}
    for topic in body.topics:
        name = getattr(topic, "name", None)
        tid = getattr(topic, "topic_id", None)
        for p in topic.partitions:
            out[(name, tid, int(p.partition_index))] = int(p.error_code)
    return out


def error_response(commit: SkimmedCommit, error_code: int) -> bytes:
    """A complete response payload (header included) giving every partition ``error_code``."""
    schema: Any = load_response_schema(commit.api_key, commit.version)
    module: Any = __import__(schema.__module__, fromlist=["x"])
    prefix = "TxnOffsetCommit" if commit.api_key == TXN_OFFSET_COMMIT else "OffsetCommit"
    partition_cls = getattr(module, f"{prefix}ResponsePartition")
    topic_cls = getattr(module, f"{prefix}ResponseTopic")
    topics: dict[tuple[str | None, uuid.UUID | None], list[Any]] = {}
    for p in commit.partitions:
        topics.setdefault((p.topic, p.topic_id), []).append(
            partition_cls(partition_index=i32(p.partition), error_code=ErrorCode(error_code))
        )
    by_id = commit.api_key != TXN_OFFSET_COMMIT and commit.version >= 10
    throttle = (
        {"throttle_time": datetime.timedelta(0)}
        if "throttle_time" in {f.name for f in dataclasses.fields(schema)}
        else {}
    )
    body = schema(
        **throttle,
        topics=tuple(
            topic_cls(**({"topic_id": tid} if by_id else {"name": name}), partitions=tuple(ps))
            for (name, tid), ps in topics.items()
        ),
    )
    header = schema.__header_schema__(correlation_id=i32(commit.correlation_id))
    return encode(header, body)
