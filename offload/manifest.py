"""Per-partition manifests: the commit point of the S3 copy, and the rules for changing one.

A manifest lists a partition's segment objects in offset order. It is written last, with a
conditional PUT, after every segment object it names exists; a reader trusts only what a
manifest names. Everything here is sans-IO: dataclasses, JSON encode/decode with
validation, and pure functions that compute the next manifest from the current one
(:func:`append_segment`, :func:`advance_log_start`) and enforce writer fencing
(:func:`check_writer`).

Invariants (checked by :func:`validate`, so a decoded manifest always satisfies them):

* segments are contiguous: ``segments[i].base_offset == segments[i-1].last_offset + 1``.
  A segment's range is the offsets it *covers*; its first batch may start later (Kafka's
  compaction leaves gaps inside a range) but never earlier;
* ``next_offset`` is one past the last segment's ``last_offset``, or ``log_start_offset``
  when there are no segments;
* ``segments[0].base_offset <= log_start_offset <= segments[0].last_offset``: segments wholly
  below the log start are dropped, as Kafka drops them;
* ``leader_epochs`` are strictly increasing in both epoch and start offset;
* ``open_transactions`` (one per producer id, sorted) start below ``next_offset``.

``open_transactions`` are the transactions with batches in the copy and no commit or abort
marker after them in it (what Kafka's producer snapshot and transaction index tell a
tiered-storage reader, KIP-405): the copy may end between a transaction's batches and its
marker, and a rebuild must then write that marker from the WAL. The key is written only when
non-empty (readers of earlier manifests ignore it; a manifest without it has none open).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .layout import LayoutError, parse_segment_key, parse_topic_id, topic_id_text

FORMAT = 1
COMPRESSIONS = ("none", "zstd")


class ManifestError(ValueError):
    """A manifest does not decode, breaks an invariant, or a change to it is not allowed."""


class FencedError(Exception):
    """A writer with a newer epoch owns this node's offload; the older writer must stop."""


@dataclass(frozen=True, slots=True)
class SegmentRef:
    key: str  # relative to the target prefix
    base_offset: int  # first offset covered
    last_offset: int  # last offset covered (= last batch's last offset)
    size: int  # uncompressed bytes (the Kafka .log data)
    stored_size: int  # bytes of the object
    crc32c: int  # CRC32C of the uncompressed bytes
    compression: str  # "none" or "zstd"
    max_timestamp: int  # largest batch max_timestamp, -1 if none
    batches: int  # record batches in the object


@dataclass(frozen=True, slots=True, order=True)
class OpenTxn:
    """A transaction open at the end of the copy: its producer and its first offset there."""

    producer_id: int
    producer_epoch: int
    first_offset: int


@dataclass(frozen=True, slots=True)
class Manifest:
    topic: str
    topic_id: uuid.UUID
    partition: int
    writer_node: int
    writer_epoch: int
    version: int  # +1 per commit; the first written manifest has version 1
    log_start_offset: int
    next_offset: int  # one past the last offset covered
    leader_epochs: tuple[tuple[int, int], ...] = ()  # (epoch, start offset)
    segments: tuple[SegmentRef, ...] = field(default_factory=tuple)
    open_transactions: tuple[OpenTxn, ...] = ()

    @property
    def open_first_offsets(self) -> dict[int, int]:
        """Producer id -> first offset of its transaction open at :attr:`next_offset`."""
        return {t.producer_id: t.first_offset for t in self.open_transactions}

    @property
    def stored_bytes(self) -> int:
        return sum(s.stored_size for s in self.segments)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)


# -- encoding --------------------------------------------------------------------------------
def _segment_json(s: SegmentRef) -> dict[str, Any]:
    return {
        "key": s.key,
        "base_offset": s.base_offset,
        "last_offset": s.last_offset,
        "size": s.size,
        "stored_size": s.stored_size,
        "crc32c": s.crc32c,
        "compression": s.compression,
        "max_timestamp": s.max_timestamp,
        "batches": s.batches,
    }


def encode(m: Manifest) -> bytes:
    """Canonical JSON (UTF-8, sorted keys) of a valid manifest."""
    validate(m)
    doc = {
        "format": FORMAT,
        "topic": m.topic,
        "topic_id": topic_id_text(m.topic_id),
        "partition": m.partition,
        "writer_node": m.writer_node,
        "writer_epoch": m.writer_epoch,
        "version": m.version,
        "log_start_offset": m.log_start_offset,
        "next_offset": m.next_offset,
        "leader_epochs": [list(e) for e in m.leader_epochs],
        "segments": [_segment_json(s) for s in m.segments],
    }
    if m.open_transactions:
        doc["open_transactions"] = [
            [t.producer_id, t.producer_epoch, t.first_offset] for t in m.open_transactions
        ]
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _int(doc: dict[str, Any], name: str, where: str, minimum: int | None = 0) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"{where}.{name}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ManifestError(f"{where}.{name}: must be >= {minimum}, got {value}")
    return value


def _str(doc: dict[str, Any], name: str, where: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}.{name}: expected a non-empty string, got {value!r}")
    return value


def _segment(doc: Any, where: str) -> SegmentRef:
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected an object")
    ref = SegmentRef(
        key=_str(doc, "key", where),
        base_offset=_int(doc, "base_offset", where),
        last_offset=_int(doc, "last_offset", where),
        size=_int(doc, "size", where, 1),
        stored_size=_int(doc, "stored_size", where, 1),
        crc32c=_int(doc, "crc32c", where),
        compression=_str(doc, "compression", where),
        max_timestamp=_int(doc, "max_timestamp", where, -1),
        batches=_int(doc, "batches", where, 1),
    )
    return ref


def decode(data: bytes) -> Manifest:
    """Parse and validate; raises :class:`ManifestError` naming the bad field."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # also: deep nesting, a 5000-digit integer
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest: expected a JSON object")
    if doc.get("format") != FORMAT:
        raise ManifestError(f"manifest.format: expected {FORMAT}, got {doc.get('format')!r}")
    try:
        topic_id = parse_topic_id(_str(doc, "topic_id", "manifest"))
    except LayoutError as exc:
        raise ManifestError(f"manifest.topic_id: {exc}") from None
    epochs = doc.get("leader_epochs")
    if not isinstance(epochs, list) or not all(
        isinstance(e, list)
        and len(e) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in e)
        for e in epochs
    ):
        raise ManifestError("manifest.leader_epochs: expected [[epoch, start_offset], ...]")
    segments = doc.get("segments")
    if not isinstance(segments, list):
        raise ManifestError("manifest.segments: expected a list")
    txns = doc.get("open_transactions", [])
    if not isinstance(txns, list) or not all(
        isinstance(t, list)
        and len(t) == 3
        and all(isinstance(x, int) and not isinstance(x, bool) for x in t)
        for t in txns
    ):
        raise ManifestError(
            "manifest.open_transactions: expected [[producer_id, epoch, first_offset], ...]"
        )
    m = Manifest(
        topic=_str(doc, "topic", "manifest"),
        topic_id=topic_id,
        partition=_int(doc, "partition", "manifest"),
        writer_node=_int(doc, "writer_node", "manifest"),
        writer_epoch=_int(doc, "writer_epoch", "manifest"),
        version=_int(doc, "version", "manifest", 1),
        log_start_offset=_int(doc, "log_start_offset", "manifest"),
        next_offset=_int(doc, "next_offset", "manifest"),
        leader_epochs=tuple((e[0], e[1]) for e in epochs),
        segments=tuple(_segment(s, f"manifest.segments[{i}]") for i, s in enumerate(segments)),
        open_transactions=tuple(OpenTxn(t[0], t[1], t[2]) for t in txns),
    )
    validate(m)
    return m


def validate(m: Manifest) -> None:
    """Raise :class:`ManifestError` unless ``m`` satisfies the module's invariants."""
    if m.log_start_offset > m.next_offset:
        raise ManifestError(
            f"manifest: log_start_offset {m.log_start_offset} > next_offset {m.next_offset}"
        )
    prev = None
    for i, s in enumerate(m.segments):
        where = f"manifest.segments[{i}]"
        if s.base_offset > s.last_offset:
            raise ManifestError(f"{where}: base_offset {s.base_offset} > last {s.last_offset}")
        if s.compression not in COMPRESSIONS:
            raise ManifestError(f"{where}.compression: {s.compression!r} not in {COMPRESSIONS}")
        if s.compression == "none" and s.stored_size != s.size:
            raise ManifestError(f"{where}: uncompressed but stored_size != size")
        try:
            name = parse_segment_key(s.key)
        except LayoutError as exc:
            raise ManifestError(f"{where}.key: {exc}") from None
        if (name.base_offset, name.last_offset, name.compressed) != (
            s.base_offset,
            s.last_offset,
            s.compression == "zstd",
        ):
            raise ManifestError(f"{where}.key: {s.key!r} does not match its offsets/compression")
        if prev is not None and s.base_offset != prev.last_offset + 1:
            kind = "gap" if s.base_offset > prev.last_offset + 1 else "overlap"
            raise ManifestError(
                f"{where}: {kind}: base_offset {s.base_offset} after last_offset {prev.last_offset}"
            )
        prev = s
    if m.segments:
        first, last = m.segments[0], m.segments[-1]
        if m.next_offset != last.last_offset + 1:
            raise ManifestError(
                f"manifest: next_offset {m.next_offset} != last segment end {last.last_offset + 1}"
            )
        if not first.base_offset <= m.log_start_offset <= first.last_offset:
            raise ManifestError(
                f"manifest: log_start_offset {m.log_start_offset} outside the first segment "
                f"{first.base_offset}..{first.last_offset}"
            )
    elif m.next_offset != m.log_start_offset:
        raise ManifestError(
            f"manifest: no segments but next_offset {m.next_offset} != log_start_offset "
            f"{m.log_start_offset}"
        )
    for a, b in zip(m.leader_epochs, m.leader_epochs[1:], strict=False):
        if not (b[0] > a[0] and b[1] > a[1]):
            raise ManifestError(f"manifest.leader_epochs: {list(a)} then {list(b)} not increasing")
    pids = [t.producer_id for t in m.open_transactions]
    if pids != sorted(set(pids)):
        raise ManifestError("manifest.open_transactions: producer ids not unique and sorted")
    for t in m.open_transactions:
        if not (t.producer_id >= 0 and 0 <= t.first_offset < m.next_offset):
            raise ManifestError(
                f"manifest.open_transactions: producer {t.producer_id} from offset "
                f"{t.first_offset} is not inside the copy (next_offset {m.next_offset})"
            )


# -- leader epochs ---------------------------------------------------------------------------
def merge_leader_epochs(
    old: Sequence[tuple[int, int]], new: Iterable[tuple[int, int]]
) -> tuple[tuple[int, int], ...]:
    """Append (epoch, start offset) entries of newer epochs, as Kafka's epoch cache does."""
    out = list(old)
    for epoch, start in new:
        if epoch < 0:
            continue  # batches written before leader epochs existed
        if not out or (epoch > out[-1][0] and start > out[-1][1]):
            out.append((epoch, start))
        elif epoch > out[-1][0]:  # same start offset, newer epoch: the older one was empty
            out[-1] = (epoch, start)
    return tuple(out)


def truncate_leader_epochs(
    epochs: Sequence[tuple[int, int]], log_start_offset: int
) -> tuple[tuple[int, int], ...]:
    """Drop entries below the log start; the one covering it starts there (Kafka's
    ``LeaderEpochFileCache.truncateFromStart``)."""
    keep = [e for e in epochs if e[1] >= log_start_offset]
    below = [e for e in epochs if e[1] < log_start_offset]
    if below and (not keep or keep[0][1] > log_start_offset):
        keep.insert(0, (below[-1][0], log_start_offset))
    return tuple(keep)


# -- open transactions -----------------------------------------------------------------------
#: A transactional batch of a segment: (producer id, epoch, base offset, is a control batch).
TxnBatch = tuple[int, int, int, bool]


def open_after(before: Iterable[OpenTxn], batches: Iterable[TxnBatch]) -> tuple[OpenTxn, ...]:
    """The transactions open after ``batches`` (a segment's transactional batches, in offset
    order) given those open before: a data batch opens its producer's transaction unless one
    is open, a control batch (commit or abort marker) closes it."""
    open_ = {t.producer_id: t for t in before}
    for pid, epoch, offset, control in batches:
        if control:
            open_.pop(pid, None)
        elif pid not in open_:
            open_[pid] = OpenTxn(pid, epoch, offset)
    return tuple(sorted(open_.values()))


# -- commit rules ----------------------------------------------------------------------------
def check_writer(
    stored_node: int, stored_epoch: int, writer_node: int, writer_epoch: int, what: str
) -> None:
    """Raise :class:`FencedError` if ``what`` (a lease or manifest) was written by a newer
    writer of the same node. Another node's manifest may be taken over: partition
    leadership moves between brokers, and each node has its own epochs."""
    if stored_node == writer_node and stored_epoch > writer_epoch:
        raise FencedError(
            f"{what} is owned by node {stored_node} epoch {stored_epoch}; "
            f"this writer has epoch {writer_epoch}"
        )


def initial_manifest(
    topic: str,
    topic_id: uuid.UUID,
    partition: int,
    *,
    writer_node: int,
    writer_epoch: int,
    log_start_offset: int,
    version: int = 1,
) -> Manifest:
    """The first manifest of a partition: empty, starting at the broker's log start.

    ``version=0`` is the in-memory base of a partition with no stored manifest: the first
    commit (:func:`append_segment`) then stores version 1."""
    return Manifest(
        topic=topic,
        topic_id=topic_id,
        partition=partition,
        writer_node=writer_node,
        writer_epoch=writer_epoch,
        version=version,
        log_start_offset=log_start_offset,
        next_offset=log_start_offset,
    )


def _prune(
    segments: Sequence[SegmentRef], log_start_offset: int
) -> tuple[tuple[SegmentRef, ...], list[SegmentRef]]:
    keep = tuple(s for s in segments if s.last_offset >= log_start_offset)
    return keep, [s for s in segments if s.last_offset < log_start_offset]


def append_segment(
    old: Manifest,
    seg: SegmentRef,
    *,
    writer_node: int,
    writer_epoch: int,
    log_start_offset: int,
    leader_epochs: Iterable[tuple[int, int]] = (),
    txn_batches: Iterable[TxnBatch] = (),
) -> Manifest:
    """The manifest after committing ``seg``, which must continue where ``old`` ends.

    ``txn_batches`` are the segment's transactional batches (:func:`open_after`).

    ``log_start_offset`` is the broker's current log start. The segment normally starts at
    ``old.next_offset``. It may start elsewhere only where that offset is no longer in
    Kafka's log: when ``old`` has no segments, or the broker's log start has moved past
    ``old.next_offset`` (retention deleted what was never copied). Then the segment's first
    batch contains the effective start. Segments below the log start are dropped.
    """
    check_writer(old.writer_node, old.writer_epoch, writer_node, writer_epoch, "manifest")
    log_start = max(old.log_start_offset, log_start_offset)
    if seg.base_offset != old.next_offset:
        start = max(old.next_offset, log_start)
        jumped = not old.segments or log_start > old.next_offset
        if not (jumped and seg.base_offset <= start <= seg.last_offset):
            raise ManifestError(
                f"{old.topic}-{old.partition}: segment {seg.base_offset}..{seg.last_offset} "
                f"does not continue the manifest at {old.next_offset}"
            )
        if old.segments and seg.base_offset < old.next_offset:
            raise ManifestError(
                f"{old.topic}-{old.partition}: segment {seg.base_offset}..{seg.last_offset} "
                f"overlaps committed offsets below {old.next_offset}"
            )
        base_segments: tuple[SegmentRef, ...] = ()
        log_start = max(log_start, seg.base_offset)
    else:
        base_segments = old.segments
    segments, _ = _prune((*base_segments, seg), log_start)
    log_start = max(log_start, segments[0].base_offset)
    epochs = truncate_leader_epochs(
        merge_leader_epochs(old.leader_epochs, leader_epochs), log_start
    )
    new = replace(
        old,
        writer_node=writer_node,
        writer_epoch=writer_epoch,
        version=old.version + 1,
        log_start_offset=log_start,
        next_offset=seg.last_offset + 1,
        leader_epochs=epochs,
        segments=segments,
        open_transactions=open_after(old.open_transactions, txn_batches),
    )
    validate(new)
    return new


def advance_log_start(
    old: Manifest, log_start_offset: int, *, writer_node: int, writer_epoch: int
) -> Manifest | None:
    """The manifest after the broker's log start moved to ``log_start_offset`` (retention or
    DeleteRecords), or None if nothing changes. Segments wholly below it are dropped; a log
    start beyond everything copied empties the manifest at that offset."""
    check_writer(old.writer_node, old.writer_epoch, writer_node, writer_epoch, "manifest")
    if log_start_offset <= old.log_start_offset:
        return None
    segments, _ = _prune(old.segments, log_start_offset)
    next_offset = old.next_offset if segments else max(old.next_offset, log_start_offset)
    new = replace(
        old,
        writer_node=writer_node,
        writer_epoch=writer_epoch,
        version=old.version + 1,
        log_start_offset=log_start_offset if segments else next_offset,
        next_offset=next_offset,
        leader_epochs=truncate_leader_epochs(old.leader_epochs, log_start_offset),
        segments=segments,
    )
    validate(new)
    return new


def dropped_segments(old: Manifest, new: Manifest) -> list[SegmentRef]:
    """Segments ``old`` named that ``new`` does not: garbage once ``new`` is committed."""
    kept = {s.key for s in new.segments}
    return [s for s in old.segments if s.key not in kept]
