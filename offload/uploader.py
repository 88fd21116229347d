"""The uploader: turns partition buffers into segment objects and manifest commits.

A partition uploads when its buffer holds ``offload.object_bytes`` or its oldest byte is
``offload.max_lag_s`` old; at most ``offload.upload_concurrency`` partitions at a time, one
upload per partition at a time (commits are sequential per partition). Each upload checks
the lease, puts the segment object (If-None-Match: *) and then the manifest (If-Match),
the commit point, and only then frees the buffer and moves the coverage the WAL is trimmed
by. A log start that moved (retention, DeleteRecords) is committed on its own when it
drops a segment or once a minute.
"""

from __future__ import annotations

import structlog
import trio

from . import commit, layout, segment_codec
from . import manifest as mf
from . import metrics as m
from .partition import PartitionState

log = structlog.get_logger("walproxy.offload.uploader")

_LOG_START_COMMIT_S = 60.0
_LAG_GAUGE_INTERVAL_S = 0.5


async def upload_loop(off) -> None:  # off: Offloader
    cfg = off.cfg
    limiter = trio.CapacityLimiter(cfg.upload_concurrency)
    tick = min(0.05, cfg.max_lag_s / 10)
    # The lag gauges are for scrapes (seconds apart): refreshing them for every partition on
    # every tick costs the proxy's thread real CPU once a broker hosts hundreds of partitions.
    gauges_due = 0.0
    async with trio.open_nursery() as nursery:
        while True:
            now = trio.current_time()
            refresh = now >= gauges_due
            if refresh:
                gauges_due = now + _LAG_GAUGE_INTERVAL_S
            for s in list(off.partitions.values()):
                if s.due(now, cfg.object_bytes, cfg.max_lag_s):
                    s.uploading = True
                    nursery.start_soon(_upload, off, s, limiter)
                elif _log_start_due(s, now):
                    s.uploading = True
                    nursery.start_soon(_commit_log_start, off, s, limiter)
                if refresh:
                    offsets, nbytes, seconds = s.lag(now)
                    labels = (s.topic, str(s.partition))
                    m.LAG_OFFSETS.labels(*labels).set(offsets)
                    m.LAG_BYTES.labels(*labels).set(nbytes)
                    m.LAG_SECONDS.labels(*labels).set(seconds)
                    m.OFFLOADED_OFFSET.labels(*labels).set(s.committed_next)
            with trio.move_on_after(tick):
                await off.work.wait()


def _log_start_due(s: PartitionState, now: float) -> bool:
    if s.uploading or s.stopped or s.buffer or s.log_start <= s.manifest.log_start_offset:
        return False
    if s.manifest.version == 0:
        return True  # record a log start > 0 for a partition with nothing to copy
    drops = bool(s.manifest.segments) and s.manifest.segments[0].last_offset < s.log_start
    return drops or now - s.last_commit_at >= _LOG_START_COMMIT_S


async def _upload(off, s: PartitionState, limiter: trio.CapacityLimiter) -> None:
    cfg = off.cfg
    lease = off.lease
    try:
        async with limiter:
            generation = s.generation
            cut = s.cut(cfg.object_bytes)
            old = s.manifest
            key = layout.segment_key(
                off.cluster_id,
                s.topic_id,
                s.partition,
                cut.info.base_offset,
                cut.info.last_offset,
                lease.epoch,
                cfg.compression == "zstd",
            )
            stored = await trio.to_thread.run_sync(segment_codec.encode, cut.data, cfg.compression)
            ref = segment_codec.segment_ref(key, cut.info, stored, cfg.compression)
            new = mf.append_segment(
                old,
                ref,
                writer_node=lease.node_id,
                writer_epoch=lease.epoch,
                log_start_offset=s.log_start,
                leader_epochs=cut.info.leader_epochs,
                txn_batches=cut.info.txn_batches,
            )
            # Fencing before any write: a newer writer's lease stops us here.
            await off.calls("check_lease", commit.check_lease, off.cluster_id, lease)
            await off.calls("put_segment", commit.put_segment, key, stored)
            m.OBJECTS_UPLOADED.inc()
            m.BYTES_UPLOADED.inc(len(stored))
            mkey = layout.manifest_key(off.cluster_id, s.topic_id, s.partition)
            etag = await off.calls("commit_manifest", commit.commit_manifest, mkey, new, s.etag)
            m.COMMITS.inc()
            s.committed(cut, generation, new, etag, trio.current_time())
            s.report_to(off.coverage)
            off.freed()
            await _collect(off, old, new)
    except commit.CommitConflict as exc:
        _resync(off, s, exc)
    except (mf.ManifestError, segment_codec.SegmentError, commit.SegmentConflict) as exc:
        s.stopped = str(exc)
        log.error(
            "offload of a partition stopped", topic=s.topic, partition=s.partition, error=str(exc)
        )
    finally:
        s.uploading = False
        off.wake()


async def _commit_log_start(off, s: PartitionState, limiter: trio.CapacityLimiter) -> None:
    lease = off.lease
    try:
        async with limiter:
            old = s.manifest
            if old.version == 0:
                new = mf.initial_manifest(
                    s.topic,
                    s.topic_id,
                    s.partition,
                    writer_node=lease.node_id,
                    writer_epoch=lease.epoch,
                    log_start_offset=max(old.log_start_offset, s.log_start, old.next_offset),
                )
                if new.next_offset != s.position:  # data arrived meanwhile; upload it instead
                    return
            else:
                maybe = mf.advance_log_start(
                    old, s.log_start, writer_node=lease.node_id, writer_epoch=lease.epoch
                )
                if maybe is None:
                    return
                new = maybe
            await off.calls("check_lease", commit.check_lease, off.cluster_id, lease)
            mkey = layout.manifest_key(off.cluster_id, s.topic_id, s.partition)
            etag = await off.calls("commit_manifest", commit.commit_manifest, mkey, new, s.etag)
            m.COMMITS.inc()
            s.commit_log_start(new, etag, trio.current_time())
            if s.position < new.next_offset:
                s.position = s.buffer_from = new.next_offset
            s.report_to(off.coverage)
            await _collect(off, old, new)
    except commit.CommitConflict as exc:
        _resync(off, s, exc)
    finally:
        s.uploading = False


def _resync(off, s: PartitionState, exc: commit.CommitConflict) -> None:
    log.warning(
        "manifest changed under the offloader (another node took over?); resyncing",
        topic=s.topic,
        partition=s.partition,
        error=str(exc),
    )
    if exc.current is None:
        base = mf.initial_manifest(
            s.topic,
            s.topic_id,
            s.partition,
            writer_node=off.lease.node_id,
            writer_epoch=off.lease.epoch,
            log_start_offset=s.log_start,
            version=0,
        )
        s.resync(base, None)
    else:
        s.resync(exc.current, exc.etag)
    off.freed()


async def _collect(off, old: mf.Manifest, new: mf.Manifest) -> None:
    """Delete segment objects the new manifest no longer names (below the log start)."""
    for ref in mf.dropped_segments(old, new):
        try:
            await off.calls("delete_segment", lambda st, k=ref.key: st.delete(k))
        except Exception as exc:  # garbage left behind is harmless; verify lists it
            log.warning("could not delete a dropped segment", key=ref.key, error=repr(exc))
