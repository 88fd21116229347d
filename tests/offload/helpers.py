"""Building blocks for offload tests: Kafka-like runs of record batches."""

from __future__ import annotations

import uuid

from offload import layout, segment_codec
from offload.manifest import SegmentRef
from proxy.kafka.record_batch import build_batch

TOPIC_ID = uuid.UUID("6c1f6b3e-8f3a-4d5e-9b7a-0123456789ab")


def batches(
    base: int, counts: list[int], leader_epoch: int = 0, ts: int = 1_700_000_000_000
) -> bytes:
    """Consecutive batches starting at ``base`` with ``counts`` records each."""
    out = bytearray()
    offset = base
    for i, n in enumerate(counts):
        out += build_batch(
            [b"v%d" % (offset + j) for j in range(n)],
            base_offset=offset,
            partition_leader_epoch=leader_epoch,
            timestamp_ms=ts + i,
        )
        offset += n
    return bytes(out)


def segment(
    base: int, counts: list[int], *, epoch: int = 1, compression: str = "none", covers_from=None
) -> tuple[SegmentRef, bytes, segment_codec.LogInfo]:
    log = batches(base, counts)
    info = segment_codec.describe(log, base if covers_from is None else covers_from)
    stored = segment_codec.encode(log, compression)
    key = layout.segment_key(
        "c1", TOPIC_ID, 0, info.base_offset, info.last_offset, epoch, compression == "zstd"
    )
    return segment_codec.segment_ref(key, info, stored, compression), stored, info
