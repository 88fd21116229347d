"""The two per-node documents, sans-IO: the writer lease and what a rebuild needs.

``nodes/<node>/lease.json`` — who may write this node's offload::

    {"format": 1, "node_id": 1, "epoch": 4, "owner": "host:pid:uuid", "acquired_at": "ISO-8601"}

An offloader starting up takes the next epoch with a conditional PUT (If-Match on the ETag
it read, If-None-Match: * when there is none); its segment keys and manifests carry that
epoch. An offloader that finds a higher epoch than its own is fenced and stops.

``nodes/<node>/broker.json`` — the broker's identity and what it hosts::

    {"format": 1, "cluster_id": "...", "node_id": 1, "directory_id": "..." | null,
     "meta_properties": {"cluster.id": "...", "node.id": "1", "directory.id": "...",
                         "version": "1"} | null,
     "topics": {"<name>": {"topic_id": "<22 chars>", "partitions": [0, 1, 2],
                "partition_count": 50}},
     "writer_epoch": 4, "updated_at": "ISO-8601"}

``directory_id`` and ``meta_properties`` come from the broker's log directory
``meta.properties`` (setting ``offload.broker_meta_properties``); without it they are null and
a rebuild must format the new log directory itself (``kafka-storage format`` with the cluster
id, which picks a new directory id — fine for a single log directory).
"""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from .layout import LayoutError, parse_topic_id, topic_id_text

FORMAT = 1


class NodeFileError(ValueError):
    """lease.json or broker.json does not decode."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # also: deep nesting, a 5000-digit integer
        raise NodeFileError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise NodeFileError(f"{what}: expected a JSON object with format {FORMAT}")
    return doc


def _int(doc: dict[str, Any], name: str, what: str) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise NodeFileError(f"{what}.{name}: expected an integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Lease:
    node_id: int
    epoch: int
    owner: str
    acquired_at: str = field(default_factory=_now)


def encode_lease(lease: Lease) -> bytes:
    return json.dumps(
        {
            "format": FORMAT,
            "node_id": lease.node_id,
            "epoch": lease.epoch,
            "owner": lease.owner,
            "acquired_at": lease.acquired_at,
        },
        sort_keys=True,
    ).encode()


def decode_lease(data: bytes) -> Lease:
    doc = _load(data, "lease.json")
    owner = doc.get("owner")
    if not isinstance(owner, str):
        raise NodeFileError("lease.json.owner: expected a string")
    return Lease(
        _int(doc, "node_id", "lease.json"),
        _int(doc, "epoch", "lease.json"),
        owner,
        str(doc.get("acquired_at", "")),
    )


def next_lease(current: Lease | None, node_id: int, owner: str) -> Lease:
    """The lease a new writer takes: one epoch above the current one (epochs start at 1)."""
    if current is not None and current.node_id != node_id:
        raise NodeFileError(f"lease.json names node {current.node_id}, expected {node_id}")
    return Lease(node_id, (current.epoch if current else 0) + 1, owner)


@dataclass(frozen=True, slots=True)
class TopicEntry:
    topic_id: uuid.UUID
    partitions: tuple[int, ...]
    #: How many partitions the topic has in the cluster (all brokers), when recorded; the
    #: rebuild needs ``__consumer_offsets``'s to know which partition holds a group.
    partition_count: int | None = None


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    cluster_id: str
    node_id: int
    directory_id: str | None
    meta_properties: dict[str, str] | None
    topics: dict[str, TopicEntry]
    writer_epoch: int
    updated_at: str = field(default_factory=_now)


def encode_broker_info(info: BrokerInfo) -> bytes:
    return json.dumps(
        {
            "format": FORMAT,
            "cluster_id": info.cluster_id,
            "node_id": info.node_id,
            "directory_id": info.directory_id,
            "meta_properties": info.meta_properties,
            "topics": {
                name: {"topic_id": topic_id_text(t.topic_id), "partitions": list(t.partitions)}
                | ({"partition_count": t.partition_count} if t.partition_count else {})
                for name, t in sorted(info.topics.items())
            },
            "writer_epoch": info.writer_epoch,
            "updated_at": info.updated_at,
        },
        sort_keys=True,
        indent=1,
    ).encode()


def decode_broker_info(data: bytes) -> BrokerInfo:
    doc = _load(data, "broker.json")
    topics_doc = doc.get("topics")
    if not isinstance(topics_doc, dict):
        raise NodeFileError("broker.json.topics: expected an object")
    topics = {}
    for name, t in topics_doc.items():
        try:
            parts = t["partitions"]
            if not isinstance(parts, list) or not all(isinstance(p, int) for p in parts):
                raise TypeError("partitions")
            count = t.get("partition_count")
            if count is not None and (not isinstance(count, int) or count <= 0):
                raise TypeError("partition_count")
            topics[name] = TopicEntry(parse_topic_id(t["topic_id"]), tuple(parts), count)
        except (KeyError, TypeError, LayoutError) as exc:
            raise NodeFileError(f"broker.json.topics.{name}: {exc!r}") from None
    meta = doc.get("meta_properties")
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
    ):
        raise NodeFileError("broker.json.meta_properties: expected an object of strings")
    cluster_id = doc.get("cluster_id")
    if not isinstance(cluster_id, str) or not cluster_id:
        raise NodeFileError("broker.json.cluster_id: expected a string")
    directory_id = doc.get("directory_id")
    if directory_id is not None and not isinstance(directory_id, str):
        raise NodeFileError("broker.json.directory_id: expected a string or null")
    return BrokerInfo(
        cluster_id=cluster_id,
        node_id=_int(doc, "node_id", "broker.json"),
        directory_id=directory_id,
        meta_properties=meta,
        topics=topics,
        writer_epoch=_int(doc, "writer_epoch", "broker.json"),
        updated_at=str(doc.get("updated_at", "")),
    )


def parse_meta_properties(text: str) -> dict[str, str]:
    """Kafka's ``meta.properties`` (java.util.Properties subset Kafka writes: key=value)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise NodeFileError(f"meta.properties: line {line!r} is not key=value")
        out[key.strip()] = value.strip()
    return out
