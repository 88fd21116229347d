"""Broker endpoint rewriting: no client is ever handed an address that bypasses walproxy.

Metadata, FindCoordinator (single and batched forms) and DescribeCluster responses carry
broker host/port pairs. Each is passed through a :data:`Resolver`, which maps a broker node to
the walproxy address clients must use, or returns ``None`` when it cannot: such a broker is
left out of Metadata/DescribeCluster and its coordinator reported as not available (retriable),
so clients retry instead of connecting around the proxy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32

from proxy.kafka.codec import decode_response, encode
from proxy.kafka.protocol import (
    COORDINATOR_NOT_AVAILABLE,
    DESCRIBE_CLUSTER,
    FIND_COORDINATOR,
    METADATA,
)

REWRITTEN_APIS = frozenset({METADATA, FIND_COORDINATOR, DESCRIBE_CLUSTER})


Address = tuple[str, int]
Resolver = Callable[[int, str, int], Address | None]


@dataclass(frozen=True, slots=True)
class SidecarEndpoints:
    """Endpoint policy of a sidecar.

    ``upstream`` is this sidecar's broker and ``advertised`` the address clients use for it.
    ``peers`` optionally names the walproxy address of every other broker node; when given,
    the policy is strict and a node outside it is withheld from clients. Without peers, the
    brokers are trusted to advertise their own sidecars (the sidecar deployment contract),
    and only this sidecar's upstream address is rewritten.
    """

    upstream: Address
    advertised: Address
    node_id: int | None = None
    peers: Mapping[int, Address] = field(default_factory=dict)

    def __call__(self, node_id: int, host: str, port: int) -> Address | None:
        if self.node_id is not None and node_id == self.node_id:
            return self.advertised
        peer = self.peers.get(node_id)
        if peer is not None:
            return peer
        if (host, port) == self.upstream:
            return self.advertised
        if self.peers:
            return None
        return (host, port)


def _moved(old_host: str, old_port: int, new: Address) -> bool:
    return (old_host, int(old_port)) != new


def _rewrite_brokers(body: Any, resolve: Resolver, id_field: str) -> Any:
    brokers = []
    changed = False
    for b in body.brokers:
        target = resolve(int(getattr(b, id_field)), b.host, int(b.port))
        if target is None:
            changed = True
            continue
        if _moved(b.host, b.port, target):
            b = dataclasses.replace(b, host=target[0], port=i32(target[1]))
            changed = True
        brokers.append(b)
    return dataclasses.replace(body, brokers=tuple(brokers)) if changed else body


def rewrite_metadata(body: Any, resolve: Resolver) -> Any:
    return _rewrite_brokers(body, resolve, "node_id")


def _rewrite_coordinator(c: Any, resolve: Resolver) -> Any:
    """One coordinator entry (a v0-v3 body or a v4+ ``coordinators`` element)."""
    if c.error_code != 0 or c.node_id < 0:
        return c
    target = resolve(int(c.node_id), c.host, int(c.port))
    if target is None:
        return dataclasses.replace(
            c,
            error_code=ErrorCode(COORDINATOR_NOT_AVAILABLE),
            node_id=type(c.node_id)(-1),
            host="",
            port=i32(-1),
        )
    if _moved(c.host, c.port, target):
        return dataclasses.replace(c, host=target[0], port=i32(target[1]))
    return c


def rewrite_find_coordinator(body: Any, resolve: Resolver) -> Any:
    if hasattr(body, "coordinators"):  # v4+: batched
        new = tuple(_rewrite_coordinator(c, resolve) for c in body.coordinators)
        if all(a is b for a, b in zip(new, body.coordinators, strict=True)):
            return body
        return dataclasses.replace(body, coordinators=new)
    return _rewrite_coordinator(body, resolve)


def rewrite_describe_cluster(body: Any, resolve: Resolver) -> Any:
    if getattr(body, "endpoint_type", 1) != 1:
        return body  # KIP-919 controller endpoints: controllers are not behind walproxy
    return _rewrite_brokers(body, resolve, "broker_id")


_REWRITERS: dict[int, Callable[[Any, Resolver], Any]] = {
    METADATA: rewrite_metadata,
    FIND_COORDINATOR: rewrite_find_coordinator,
    DESCRIBE_CLUSTER: rewrite_describe_cluster,
}


def rewrite_response(
    api_key: int, version: int, frame: bytes | memoryview, resolve: Resolver
) -> bytes | memoryview:
    """Return ``frame`` with every broker endpoint resolved; the same object if none moved."""
    header, body = decode_response(api_key, version, frame)
    new_body = _REWRITERS[api_key](body, resolve)
    if new_body is body:
        return frame
    return encode(header, new_body)
