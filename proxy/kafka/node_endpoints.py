"""KIP-951 node endpoints in Produce (v10+) and Fetch (v16+) responses.

When a partition's leader moved, the broker answers NOT_LEADER_OR_FOLLOWER together with the
new leader's id and, as a top-level tagged field after all partition data, that leader's host
and port, so the client can go there without a Metadata round trip. Those addresses must be
rewritten like every other endpoint, or clients would connect around walproxy.

Almost every response carries no such field, and a Fetch response is mostly record bytes, so
:func:`has_top_level_tags` walks the response structure (skipping record bytes by their
length, copying nothing) to the top-level tagged fields. Only a response that has some is
decoded with kio, rewritten and re-encoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kio.static.primitive import i32

from proxy.kafka.codec import CodecError, decode_response, encode
from proxy.kafka.cursor import Cursor, WireError
from proxy.kafka.endpoints import Resolver
from proxy.kafka.protocol import FETCH, PRODUCE

#: The first versions whose responses carry node endpoints.
FIRST_VERSION = {PRODUCE: 10, FETCH: 16}
#: The last versions whose layout the walker below knows (ApiVersions caps at these).
LAST_VERSION = {PRODUCE: 13, FETCH: 18}


def _struct(*fixed: int) -> Callable[[Cursor], None]:
    """A tagged struct of fixed-size fields followed by its own tagged fields."""
    size = sum(fixed)

    def walk(w: Cursor) -> None:
        w.skip(size)
        w.skip_tags()

    return walk


_LEADER = _struct(4, 4)  # LeaderIdAndEpoch: leader id, leader epoch
#: The tagged fields of a partition that Kafka's (and kio's) readers parse as structs: each
#: must fill its declared size (:meth:`Cursor.skip_known_tags`).
_PRODUCE_PARTITION_TAGS = {0: _LEADER}
_FETCH_PARTITION_TAGS = {
    0: _struct(4, 8),  # diverging epoch: epoch, end offset
    1: _LEADER,
    2: _struct(8, 4),  # snapshot id: end offset, epoch
}


def _walk_produce(w: Cursor, version: int) -> None:
    for _ in range(max(0, w.length())):  # topics
        if version >= 13:
            w.skip(16)  # topic id
        else:
            w.skip_bytes()  # name
        for _ in range(max(0, w.length())):  # partitions
            w.skip(4 + 2 + 8 + 8 + 8)  # index, error, base offset, append time, log start
            for _ in range(max(0, w.length())):  # record errors
                w.skip(4)
                w.skip_bytes()
                w.skip_tags()
            w.skip_bytes()  # error message
            w.skip_known_tags(_PRODUCE_PARTITION_TAGS)
        w.skip_tags()
    w.skip(4)  # throttle time


def _walk_fetch(w: Cursor, version: int) -> None:
    w.skip(4 + 2 + 4)  # throttle time, error code, session id
    for _ in range(max(0, w.length())):  # topics
        w.skip(16)  # topic id (v13+)
        for _ in range(max(0, w.length())):  # partitions
            w.skip(4 + 2 + 8 + 8 + 8)  # index, error, high watermark, LSO, log start
            for _ in range(max(0, w.length())):  # aborted transactions
                w.skip(8 + 8)
                w.skip_tags()
            w.skip(4)  # preferred read replica
            w.skip_bytes()  # records
            w.skip_known_tags(_FETCH_PARTITION_TAGS)
        w.skip_tags()


def has_top_level_tags(api_key: int, version: int, payload: bytes | memoryview) -> bool:
    """Whether the response (header included) has top-level tagged fields."""
    w = Cursor(payload, 4)  # correlation id
    try:
        w.skip_tags()  # response header v1
        (_walk_produce if api_key == PRODUCE else _walk_fetch)(w, version)
        count = w.uvarint()  # top-level tagged fields
    except WireError as exc:
        raise CodecError(f"api_key={api_key} v{version} response does not parse: {exc}") from exc
    return count > 0


def rewrite_response(
    api_key: int, version: int, payload: bytes | memoryview, resolve: Resolver
) -> bytes | memoryview:
    """``payload`` with its node endpoints resolved; the same object when there are none.

    A node the resolver withholds is left out: the client then finds the leader through a
    Metadata request, which walproxy rewrites as well.
    """
    if version < FIRST_VERSION[api_key] or not has_top_level_tags(api_key, version, payload):
        return payload
    header, body = decode_response(api_key, version, payload)
    endpoints: Any = getattr(body, "node_endpoints", ())
    out = []
    changed = False
    for ep in endpoints:
        target = resolve(int(ep.node_id), ep.host, int(ep.port))
        if target is None:
            changed = True
            continue
        if (ep.host, int(ep.port)) != target:
            ep = dataclasses.replace(ep, host=target[0], port=i32(target[1]))
            changed = True
        out.append(ep)
    if not changed:
        return payload
    return encode(header, dataclasses.replace(body, node_endpoints=tuple(out)))
