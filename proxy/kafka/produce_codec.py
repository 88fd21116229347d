"""Produce responses and rewritten requests, sans-IO (kio underneath).

The hot path forwards Produce requests as they are; these functions serve the rest: reading
each partition's outcome from a response, answering a request locally with an error for
every partition, and the rare request that must be forwarded without some partitions (a
corrupt batch is refused with Kafka's CORRUPT_MESSAGE while the others go on).
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kio.index import load_response_schema
from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64

from proxy.kafka.codec import CodecError, decode_request, decode_response, encode
from proxy.kafka.cursor import Cursor, WireError
from proxy.kafka.protocol import PRODUCE

#: A partition key as the request names it: (topic name or None, topic id or None, index).
PartitionKey = tuple[str | None, uuid.UUID | None, int]


@dataclass(frozen=True, slots=True)
class PartitionOutcome:
    key: PartitionKey
    error_code: int
    base_offset: int
    log_append_time: int  # ms since the epoch, -1 when the topic uses CreateTime


def _topic_key(topic: Any) -> tuple[str | None, uuid.UUID | None]:
    return getattr(topic, "name", None), getattr(topic, "topic_id", None)


def response_outcomes(version: int, payload: bytes | memoryview) -> list[PartitionOutcome]:
    """Each partition's outcome in a Produce response (v0-v13), read in place.

    This runs for every Produce response, so it walks the bytes with a :class:`Cursor`
    instead of kio (whose decode, with the bounds check it needs first, cost three times as
    much); ``tests/fuzz`` checks it reads what kio reads. An error code kio does not know (a
    newer broker's) is taken as it is. Raises :class:`CodecError` on bytes that do not parse.
    """
    cur = Cursor(payload, 4, flexible=version >= 9)
    fixed = _PARTITION_V5 if version >= 5 else _PARTITION_V2 if version >= 2 else _PARTITION_V0
    out: list[PartitionOutcome] = []
    try:
        cur.skip_tags()  # response header v1
        for _ in range(_count(cur, "responses")):
            name: str | None = None
            tid: uuid.UUID | None = None
            if version >= 13:
                cur.need(16)
                raw = bytes(payload[cur.pos : cur.pos + 16])
                cur.pos += 16
                tid = uuid.UUID(bytes=raw) if raw != _ZERO_ID else None  # kio: zero is none
            else:
                name = cur.string()
                if name is None:
                    raise CodecError("null topic name in produce response")
            for _ in range(_count(cur, "partition_responses")):
                # index, error code, base offset, log append time (v2+), log start (v5+)
                cur.need(fixed.size)
                index, error_code, base_offset, *rest = fixed.unpack_from(payload, cur.pos)
                cur.pos += fixed.size
                log_append_time = rest[0] if rest else -1
                if version >= 8:
                    for _ in range(_count(cur, "record_errors")):
                        cur.skip(4)  # batch index
                        cur.string()  # its error message
                        cur.skip_tags()
                    cur.string()  # error message
                cur.skip_tags()  # v10+: current leader
                out.append(
                    PartitionOutcome((name, tid, index), error_code, base_offset, log_append_time)
                )
            cur.skip_tags()
        if version >= 1:
            cur.skip(4)  # throttle time
        cur.skip_tags()  # v10+: node endpoints
    except WireError as exc:
        raise CodecError(f"produce response v{version} does not parse: {exc}") from None
    if cur.pos != len(payload):
        raise CodecError(f"produce response v{version}: {len(payload) - cur.pos} trailing bytes")
    return out


_ZERO_ID = bytes(16)
_PARTITION_V0 = struct.Struct(">ihq")
_PARTITION_V2 = struct.Struct(">ihqq")
_PARTITION_V5 = struct.Struct(">ihqq8x")


def _count(cur: Cursor, what: str) -> int:
    n = cur.length()
    if n < 0:
        raise CodecError(f"null {what} array in produce response")
    return n


def _response_module(version: int) -> Any:
    schema = load_response_schema(PRODUCE, version)
    return schema, __import__(schema.__module__, fromlist=["x"])


def _partition_response(module: Any, index: int, error_code: int) -> Any:
    fields = {f.name for f in dataclasses.fields(module.PartitionProduceResponse)}
    kwargs: dict[str, Any] = {
        "index": i32(index),
        "error_code": ErrorCode(error_code),
        "base_offset": i64(-1),
    }
    if "record_errors" in fields:
        kwargs["record_errors"] = ()
    return module.PartitionProduceResponse(**kwargs)


def _topic_response(module: Any, name: str | None, tid: uuid.UUID | None, parts: list[Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(module.TopicProduceResponse)}
    key = {"topic_id": tid} if "topic_id" in fields else {"name": name}
    return module.TopicProduceResponse(**key, partition_responses=tuple(parts))


def error_response(version: int, correlation_id: int, errors: dict[PartitionKey, int]) -> bytes:
    """A complete ProduceResponse payload (header included) with one error per partition."""
    schema, module = _response_module(version)
    topics: dict[tuple[str | None, uuid.UUID | None], list[Any]] = {}
    for (name, tid, index), code in errors.items():
        topics.setdefault((name, tid), []).append(_partition_response(module, index, code))
    body_fields = {f.name for f in dataclasses.fields(schema)}
    kwargs: dict[str, Any] = {
        "responses": tuple(_topic_response(module, n, t, ps) for (n, t), ps in topics.items()),
        "throttle_time": datetime.timedelta(0),
    }
    if "node_endpoints" in body_fields:
        kwargs["node_endpoints"] = ()
    header = schema.__header_schema__(correlation_id=i32(correlation_id))
    return encode(header, schema(**kwargs))


def request_without(
    version: int, payload: bytes | memoryview, dropped: Iterable[PartitionKey]
) -> bytes:
    """The request payload re-encoded without the ``dropped`` partitions."""
    drop = set(dropped)
    header, body = decode_request(PRODUCE, version, payload)
    topics = []
    for topic in body.topic_data:
        name, tid = _topic_key(topic)
        parts = tuple(p for p in topic.partition_data if (name, tid, int(p.index)) not in drop)
        if parts:
            topics.append(dataclasses.replace(topic, partition_data=parts))
    return encode(header, dataclasses.replace(body, topic_data=tuple(topics)))


def response_with_errors(
    version: int, payload: bytes | memoryview, errors: dict[PartitionKey, int]
) -> bytes:
    """The broker's response payload plus an error entry for each partition in ``errors``."""
    header, body = decode_response(PRODUCE, version, payload)
    _, module = _response_module(version)
    by_topic: dict[tuple[str | None, uuid.UUID | None], list[Any]] = {}
    order: list[tuple[str | None, uuid.UUID | None]] = []
    for topic in body.responses:
        key = _topic_key(topic)
        order.append(key)
        by_topic[key] = list(topic.partition_responses)
    for (name, tid, index), code in errors.items():
        if (name, tid) not in by_topic:
            order.append((name, tid))
            by_topic[(name, tid)] = []
        by_topic[(name, tid)].append(_partition_response(module, index, code))
    responses = tuple(_topic_response(module, n, t, by_topic[(n, t)]) for n, t in order)
    return encode(header, dataclasses.replace(body, responses=responses))
