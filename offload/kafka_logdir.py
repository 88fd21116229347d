"""The files of a Kafka 4.1 log directory, sans-IO: encoders, parsers and the segment roller.

What ``walproxy rebuild`` writes so that an unmodified broker starts on the directory with
the same node id and serves every partition at its original offsets (formats as Kafka's own
``MetaProperties``, ``PartitionMetadataFile``, ``LeaderEpochCheckpointFile`` and
``OffsetCheckpointFile`` write them; checked against files a 4.1.1 broker wrote)::

    meta.properties                      node.id, directory.id, version=1, cluster.id
    recovery-point-offset-checkpoint     "0", count, "<topic> <partition> <offset>" lines
    log-start-offset-checkpoint          same format
    replication-offset-checkpoint        same format (high watermarks)
    <topic>-<partition>/
        partition.metadata               "version: 0" / "topic_id: <base64 uuid>"
        leader-epoch-checkpoint          "0", count, "<epoch> <start offset>" lines
        <base offset:020d>.log           record batches as Kafka stored them

Left out on purpose, because the broker rebuilds them from the ``.log`` files while it loads
(``LogLoader``: a segment without its ``.index`` is recovered, which re-validates every
batch's CRC and rebuilds the offset and time indexes; producer state is replayed from the
batches when no ``.snapshot`` exists):

* ``.index``, ``.timeindex``, ``.txnindex`` and ``.snapshot`` files;
* ``.kafka_cleanshutdown``: without it the broker treats the start as a recovery, which is
  what a rebuilt directory is;
* ``__cluster_metadata-0`` and ``bootstrap.checkpoint``: a broker fetches the metadata log
  from the controller quorum; only ``meta.properties`` is needed in the metadata log dir.

Kafka's own ``Uuid`` strings are URL-safe base64 of the 16 bytes without padding.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .layout import LayoutError, parse_topic_id, topic_id_text
from .node_files import NodeFileError
from .node_files import parse_meta_properties as parse_properties

META_PROPERTIES = "meta.properties"
PARTITION_METADATA = "partition.metadata"
LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
REPLICATION_OFFSET_CHECKPOINT = "replication-offset-checkpoint"
CLEAN_SHUTDOWN = ".kafka_cleanshutdown"

#: Kafka's default ``log.segment.bytes`` (1 GiB).
DEFAULT_SEGMENT_BYTES = 1 << 30
#: Offsets in a segment's index are 4-byte deltas from its base offset.
MAX_OFFSET_DELTA = (1 << 31) - 1
#: Kafka's ``Uuid`` reserves ids whose high 64 bits are 0 and low 64 bits are below 100
#: (for directory ids: UNASSIGNED, LOST, MIGRATING, ...).
_RESERVED_LOW = 100
_TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


class LogDirFormatError(ValueError):
    """A log-directory file does not parse, or a value cannot be written into one."""


# -- ids -------------------------------------------------------------------------------------
def kafka_uuid(value: uuid.UUID) -> str:
    """``value`` as Kafka's ``Uuid.toString()`` writes it (URL-safe base64, no padding)."""
    return topic_id_text(value)


def parse_kafka_uuid(text: str) -> uuid.UUID:
    """The inverse of :func:`kafka_uuid`."""
    try:
        return parse_topic_id(text.strip())
    except LayoutError as exc:
        raise LogDirFormatError(f"{text!r} is not a Kafka Uuid: {exc}") from None


def new_directory_id() -> str:
    """A random directory id Kafka accepts (not one of its reserved ids)."""
    while True:
        u = uuid.uuid4()
        if u.int >> 64 != 0 or (u.int & ((1 << 64) - 1)) >= _RESERVED_LOW:
            return kafka_uuid(u)


# -- meta.properties -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MetaProperties:
    """``meta.properties`` version 1 (KRaft): one per log directory, same node and cluster."""

    cluster_id: str
    node_id: int
    directory_id: str

    def encode(self) -> bytes:
        if self.node_id < 0:
            raise LogDirFormatError(f"node.id must be >= 0, got {self.node_id}")
        for name, value in (("cluster.id", self.cluster_id), ("directory.id", self.directory_id)):
            parse_kafka_uuid(value)  # Kafka refuses a malformed id at start; refuse it here
            if value != value.strip():
                raise LogDirFormatError(f"{name} has surrounding blanks: {value!r}")
        return (
            "#\n#Written by walproxy rebuild\n"
            f"node.id={self.node_id}\n"
            f"directory.id={self.directory_id}\n"
            "version=1\n"
            f"cluster.id={self.cluster_id}\n"
        ).encode()


def parse_meta_properties(text: str) -> MetaProperties:
    try:
        props = parse_properties(text)
    except NodeFileError as exc:
        raise LogDirFormatError(str(exc)) from None
    if props.get("version") != "1":
        raise LogDirFormatError(f"meta.properties version {props.get('version')!r} is not 1")
    try:
        return MetaProperties(props["cluster.id"], int(props["node.id"]), props["directory.id"])
    except (KeyError, ValueError) as exc:
        raise LogDirFormatError(f"meta.properties lacks or mangles {exc}") from exc


# -- per-partition files ---------------------------------------------------------------------
def partition_dir_name(topic: str, partition: int) -> str:
    if not _TOPIC_RE.match(topic) or topic in (".", ".."):
        raise LogDirFormatError(f"{topic!r} is not a legal Kafka topic name")
    if partition < 0:
        raise LogDirFormatError(f"partition must be >= 0, got {partition}")
    return f"{topic}-{partition}"


def segment_file_name(base_offset: int) -> str:
    if base_offset < 0:
        raise LogDirFormatError(f"segment base offset must be >= 0, got {base_offset}")
    return f"{base_offset:020d}.log"


def encode_partition_metadata(topic_id: uuid.UUID) -> bytes:
    return f"version: 0\ntopic_id: {kafka_uuid(topic_id)}".encode()


def parse_partition_metadata(text: str) -> uuid.UUID:
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    if fields.get("version") != "0" or "topic_id" not in fields:
        raise LogDirFormatError(f"partition.metadata does not parse: {text!r}")
    return parse_kafka_uuid(fields["topic_id"])


def check_leader_epochs(entries: Sequence[tuple[int, int]]) -> None:
    """Epochs and start offsets must both strictly increase, as in Kafka's epoch cache."""
    for (e0, o0), (e1, o1) in itertools.pairwise(entries):
        if not (e1 > e0 and o1 > o0):
            raise LogDirFormatError(
                f"leader epochs must increase in epoch and start offset: "
                f"[{e0}, {o0}] then [{e1}, {o1}]"
            )
    for e, o in entries:
        if e < 0 or o < 0:
            raise LogDirFormatError(f"leader epoch entry [{e}, {o}] is negative")


def encode_leader_epoch_checkpoint(entries: Sequence[tuple[int, int]]) -> bytes:
    check_leader_epochs(entries)
    lines = ["0", str(len(entries)), *(f"{e} {o}" for e, o in entries)]
    return ("\n".join(lines) + "\n").encode()


def _checkpoint_body(text: str, what: str) -> list[list[str]]:
    lines = text.splitlines()
    if len(lines) < 2 or lines[0].strip() != "0":
        raise LogDirFormatError(f"{what}: version line is not 0")
    try:
        count = int(lines[1])
    except ValueError as exc:
        raise LogDirFormatError(f"{what}: bad entry count {lines[1]!r}") from exc
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    if len(rows) != count:
        raise LogDirFormatError(f"{what}: {count} entries announced, {len(rows)} present")
    return rows


def parse_leader_epoch_checkpoint(text: str) -> list[tuple[int, int]]:
    rows = _checkpoint_body(text, LEADER_EPOCH_CHECKPOINT)
    try:
        return [(int(e), int(o)) for e, o in rows]
    except ValueError as exc:
        raise LogDirFormatError(f"{LEADER_EPOCH_CHECKPOINT}: {exc}") from exc


def encode_offset_checkpoint(offsets: Mapping[tuple[str, int], int]) -> bytes:
    """``recovery-point-offset-checkpoint`` and friends: ``topic partition offset`` lines."""
    rows = []
    for (topic, partition), offset in sorted(offsets.items()):
        partition_dir_name(topic, partition)  # validates the name (no blanks possible)
        if offset < 0:
            raise LogDirFormatError(f"checkpoint offset for {topic}-{partition} is {offset}")
        rows.append(f"{topic} {partition} {offset}")
    return ("\n".join(["0", str(len(rows)), *rows]) + "\n").encode()


def parse_offset_checkpoint(text: str) -> dict[tuple[str, int], int]:
    try:
        return {(t, int(p)): int(o) for t, p, o in _checkpoint_body(text, "offset checkpoint")}
    except ValueError as exc:
        raise LogDirFormatError(f"offset checkpoint: {exc}") from exc


# -- segments --------------------------------------------------------------------------------
def should_roll(
    segment_base: int,
    segment_size: int,
    batch_size: int,
    batch_last_offset: int,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
) -> bool:
    """Whether a batch must start a new segment, by Kafka's rules (``LogSegment.shouldRoll``):
    the segment is not empty and the batch would take it past ``segment_bytes``, or the
    batch's last offset is too far from the segment's base for the 4-byte index deltas."""
    if segment_size == 0:
        return False
    return (
        segment_size > segment_bytes - batch_size
        or batch_last_offset - segment_base > MAX_OFFSET_DELTA
    )


@dataclass(frozen=True, slots=True)
class SegmentSpan:
    """One ``.log`` file to write: the batches ``[first, end)`` of a list, by index."""

    base_offset: int
    first: int
    end: int
    size: int


def plan_segments(
    batches: Iterable[tuple[int, int, int]], segment_bytes: int = DEFAULT_SEGMENT_BYTES
) -> list[SegmentSpan]:
    """Group ``(base_offset, last_offset, size)`` batches, in offset order, into segments."""
    spans: list[SegmentSpan] = []
    base = first = size = 0
    i = -1
    for i, (b, _last, n) in enumerate(batches):
        if i == 0 or should_roll(base, size, n, _last, segment_bytes):
            if i > 0:
                spans.append(SegmentSpan(base, first, i, size))
            base, first, size = b, i, 0
        size += n
    if i >= 0:
        spans.append(SegmentSpan(base, first, i + 1, size))
    return spans
