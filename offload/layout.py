"""Where everything lives in the offload target: object keys and storage targets, sans-IO.

Every key is relative to the target's prefix (``s3://bucket/prefix`` or ``file:///path``)::

    v1/<cluster_id>/nodes/<node_id>/lease.json
    v1/<cluster_id>/nodes/<node_id>/broker.json
    v1/<cluster_id>/topics/<topic_id>/<partition>/manifest.json
    v1/<cluster_id>/topics/<topic_id>/<partition>/seg/<base:020d>-<last:020d>-e<epoch>.log[.zst]

``topic_id`` is Kafka's own text form of a topic id (URL-safe base64 of the 16 bytes without
padding, 22 characters, as ``kafka-topics --describe`` and ``partition.metadata`` show it),
so a topic deleted and re-created under the same name never mixes with its predecessor.
Offsets are zero-padded to 20 digits so keys sort in offset order. docs/offload-format.md
is the full description.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass

FORMAT_DIR = "v1"
LEASE = "lease.json"
BROKER = "broker.json"
MANIFEST = "manifest.json"
SEGMENT_DIR = "seg"

_TOPIC_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_SEGMENT_NAME = re.compile(r"^(\d{20})-(\d{20})-e(\d+)\.log(\.zst)?$")


class LayoutError(ValueError):
    """A key, topic id or target does not have the expected form."""


# -- topic ids -------------------------------------------------------------------------------
def topic_id_text(topic_id: uuid.UUID) -> str:
    """Kafka's ``Uuid.toString()``: URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(topic_id.bytes).decode().rstrip("=")


def parse_topic_id(text: str) -> uuid.UUID:
    """The inverse of :func:`topic_id_text`; only its canonical form is accepted.

    ``base64.urlsafe_b64decode`` alone drops characters outside the alphabet and ignores
    the unused low bits of the last character, so 22 characters could decode to fewer than
    16 bytes (a ``ValueError`` from ``uuid``) or two texts to one id (two keys, one topic).
    """
    if not isinstance(text, str) or not _TOPIC_ID.fullmatch(text):
        raise LayoutError(f"topic id {text!r} is not 22 URL-safe base64 characters")
    value = uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=="))
    if topic_id_text(value) != text:
        raise LayoutError(f"topic id {text!r} is not in canonical form")
    return value


# -- keys ------------------------------------------------------------------------------------
def _check_cluster(cluster_id: str) -> str:
    if not cluster_id or "/" in cluster_id:
        raise LayoutError(f"cluster id {cluster_id!r} cannot be part of a key")
    return cluster_id


def cluster_prefix(cluster_id: str) -> str:
    return f"{FORMAT_DIR}/{_check_cluster(cluster_id)}/"


def node_prefix(cluster_id: str, node_id: int) -> str:
    return f"{cluster_prefix(cluster_id)}nodes/{int(node_id)}/"


def lease_key(cluster_id: str, node_id: int) -> str:
    return node_prefix(cluster_id, node_id) + LEASE


def broker_key(cluster_id: str, node_id: int) -> str:
    return node_prefix(cluster_id, node_id) + BROKER


def topics_prefix(cluster_id: str) -> str:
    return f"{cluster_prefix(cluster_id)}topics/"


def partition_prefix(cluster_id: str, topic_id: uuid.UUID, partition: int) -> str:
    if partition < 0:
        raise LayoutError(f"partition {partition} is negative")
    return f"{topics_prefix(cluster_id)}{topic_id_text(topic_id)}/{int(partition)}/"


def manifest_key(cluster_id: str, topic_id: uuid.UUID, partition: int) -> str:
    return partition_prefix(cluster_id, topic_id, partition) + MANIFEST


def segment_name(base_offset: int, last_offset: int, writer_epoch: int, compressed: bool) -> str:
    if not 0 <= base_offset <= last_offset:
        raise LayoutError(f"segment offsets {base_offset}..{last_offset} are not a range")
    if writer_epoch < 0:
        raise LayoutError(f"writer epoch {writer_epoch} is negative")
    suffix = ".log.zst" if compressed else ".log"
    return f"{base_offset:020d}-{last_offset:020d}-e{writer_epoch}{suffix}"


def segment_key(
    cluster_id: str,
    topic_id: uuid.UUID,
    partition: int,
    base_offset: int,
    last_offset: int,
    writer_epoch: int,
    compressed: bool,
) -> str:
    """The key of a segment object; the writer's epoch in it keeps a zombie's object apart."""
    return (
        partition_prefix(cluster_id, topic_id, partition)
        + f"{SEGMENT_DIR}/"
        + segment_name(base_offset, last_offset, writer_epoch, compressed)
    )


@dataclass(frozen=True, slots=True)
class SegmentName:
    base_offset: int
    last_offset: int
    writer_epoch: int
    compressed: bool


def parse_segment_key(key: str) -> SegmentName:
    """Offsets, epoch and compression from a segment key (or just its last component)."""
    m = _SEGMENT_NAME.match(key.rsplit("/", 1)[-1])
    if m is None:
        raise LayoutError(f"{key!r} is not a segment object key")
    base, last, epoch = int(m[1]), int(m[2]), int(m[3])
    if base > last:
        raise LayoutError(f"{key!r}: base offset above last offset")
    return SegmentName(base, last, epoch, m[4] is not None)


@dataclass(frozen=True, slots=True)
class PartitionPath:
    topic_id: uuid.UUID
    partition: int


def parse_manifest_key(cluster_id: str, key: str) -> PartitionPath:
    """Topic id and partition of a manifest key under :func:`topics_prefix`."""
    prefix = topics_prefix(cluster_id)
    if not key.startswith(prefix) or not key.endswith("/" + MANIFEST):
        raise LayoutError(f"{key!r} is not a manifest key of cluster {cluster_id}")
    parts = key[len(prefix) :].split("/")
    if len(parts) != 3 or not parts[1].isdigit():
        raise LayoutError(f"{key!r} is not <topic_id>/<partition>/{MANIFEST}")
    return PartitionPath(parse_topic_id(parts[0]), int(parts[1]))


# -- targets ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    """``s3://bucket/prefix`` (scheme "s3") or ``file:///path`` (scheme "file", bucket "")."""

    scheme: str
    bucket: str = ""
    prefix: str = ""  # S3 only: "" or ends with "/"; every key is under it
    path: str = ""  # file only: the directory (relative paths are relative to the cwd)


def parse_target(text: str, setting: str = "offload.target") -> Target:
    """Parse an offload target; errors name ``setting`` (``proxy.config`` style)."""
    if text.startswith("s3://"):
        rest = text[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise LayoutError(f"{setting}: {bucket!r} is not a valid S3 bucket name")
        prefix = prefix.strip("/")
        return Target("s3", bucket=bucket, prefix=prefix + "/" if prefix else "")
    if text.startswith("file://"):
        path = text[len("file://") :]
        if not path:
            raise LayoutError(f"{setting}: file:// target needs a path")
        return Target("file", path=path.rstrip("/") or "/")
    raise LayoutError(f"{setting}: expected s3://bucket/prefix or file:///path, got {text!r}")
