"""Put Kafka log bytes into an offload target the way the offloader commits them.

For the rebuild's tests and bench/rebuild_bench.py: segment objects (If-None-Match), then the
manifest (If-Match), then broker.json, with the offload package's own layout, codec and
commit functions -- so the rebuild reads exactly what an offloader writes, without a broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from offload import commit, layout, segment_codec
from offload import manifest as mf
from offload.node_files import BrokerInfo, TopicEntry, encode_broker_info
from offload.store import ObjectStore
from proxy.kafka.record_batch import build_batch, iter_batches


def make_batches(
    base: int, count: int, records: int, value_bytes: int, leader_epoch: int = 0
) -> bytes:
    """``count`` batches of ``records`` records of ``value_bytes`` each, from ``base``."""
    out = bytearray()
    offset = base
    pad = b"x" * max(0, value_bytes - 12)
    for i in range(count):
        out += build_batch(
            [b"%012d" % (offset + j) + pad for j in range(records)],
            base_offset=offset,
            partition_leader_epoch=leader_epoch,
            timestamp_ms=1_700_000_000_000 + i,
        )
        offset += records
    return bytes(out)


def split_whole(log: bytes, object_bytes: int) -> list[bytes]:
    """Cut ``log`` at batch boundaries into runs of about ``object_bytes``."""
    runs, start, pos = [], 0, 0
    for h in iter_batches(log, check_crc=False):
        pos += h.length
        if pos - start >= object_bytes:
            runs.append(log[start:pos])
            start = pos
    if pos > start:
        runs.append(log[start:pos])
    return runs


def offload_partition(
    store: ObjectStore,
    cluster_id: str,
    topic: str,
    topic_id: uuid.UUID,
    partition: int,
    log: bytes,
    *,
    node_id: int = 1,
    writer_epoch: int = 1,
    object_bytes: int = 8 << 20,
    compression: str = "none",
    log_start_offset: int = 0,
) -> mf.Manifest:
    """Commit ``log`` (whole batches from ``log_start_offset``) as one manifest's segments."""
    key = layout.manifest_key(cluster_id, topic_id, partition)
    m = mf.initial_manifest(
        topic,
        topic_id,
        partition,
        writer_node=node_id,
        writer_epoch=writer_epoch,
        log_start_offset=log_start_offset,
    )
    etag = commit.commit_manifest(store, key, m, None)
    covers = log_start_offset
    for run in split_whole(log, object_bytes) if log else []:
        info = segment_codec.describe(run, covers)
        stored = segment_codec.encode(run, compression)
        seg_key = layout.segment_key(
            cluster_id,
            topic_id,
            partition,
            info.base_offset,
            info.last_offset,
            writer_epoch,
            compression == "zstd",
        )
        commit.put_segment(store, seg_key, stored)
        ref = segment_codec.segment_ref(seg_key, info, stored, compression)
        new = mf.append_segment(
            m,
            ref,
            writer_node=node_id,
            writer_epoch=writer_epoch,
            log_start_offset=log_start_offset,
            leader_epochs=info.leader_epochs,
            txn_batches=info.txn_batches,
        )
        etag = commit.commit_manifest(store, key, new, etag)
        m = new
        covers = info.last_offset + 1
    return m


def write_broker_info(
    store: ObjectStore,
    cluster_id: str,
    node_id: int,
    topics: Mapping[str, tuple[uuid.UUID, list[int]]],
    directory_id: str | None = None,
) -> None:
    info = BrokerInfo(
        cluster_id=cluster_id,
        node_id=node_id,
        directory_id=directory_id,
        meta_properties=None,
        topics={n: TopicEntry(tid, tuple(ps)) for n, (tid, ps) in topics.items()},
        writer_epoch=1,
    )
    store.put(layout.broker_key(cluster_id, node_id), encode_broker_info(info))
