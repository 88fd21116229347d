"""The tailer: reads every offloaded partition from the broker, as a consumer would.

One long-polling Fetch (READ_UNCOMMITTED, up to the high watermark, control batches and
aborted transactional data included: the bytes exactly as Kafka stored them) asks for all
partitions that have buffer room. Whole batches go to each partition's buffer; a partial
batch at the end of a response is fetched again next time. Memory is bounded: when the
buffers together hold ``offload.max_buffer_bytes`` the tailer waits for uploads to free
space (the data stays in Kafka and, until S3 has it, in the WAL).
"""

from __future__ import annotations

import structlog
import trio

from proxy.client.errors import UpstreamError
from proxy.client.upstream_client import EARLIEST, LATEST, UpstreamClient
from proxy.kafka.protocol import OFFSET_OUT_OF_RANGE

from . import metrics as m
from .partition import Diverged, PartitionState

log = structlog.get_logger("walproxy.offload.tailer")

#: Leadership moved, topic deleted, metadata stale: look again.
_REDISCOVER = {3, 5, 6, 74, 75, 100}


async def tail(off) -> None:  # off: Offloader (circular import avoided)
    client = await off.connect()
    cfg = off.cfg
    try:
        while True:
            budget = cfg.max_buffer_bytes - off.buffered_bytes()
            wanted = {
                tp: s.position
                for tp, s in off.partitions.items()
                if not s.stopped and len(s.buffer) < 2 * cfg.object_bytes
            }
            if budget < cfg.object_bytes // 4 or not wanted:
                with trio.move_on_after(cfg.poll_interval_s):
                    await (off.space if wanted else off.work).wait()
                continue
            started = trio.current_time()
            try:
                results = await client.fetch_many(
                    wanted,
                    # Waiting for fetch_min_bytes batches fetches (each costs the proxy's
                    # thread per partition); a quarter of max_lag_s bounds what it adds.
                    max_wait_s=min(cfg.poll_interval_s, cfg.max_lag_s / 4),
                    min_bytes=cfg.fetch_min_bytes,
                    max_bytes=max(budget, 1 << 20),
                    partition_max_bytes=min(cfg.object_bytes, budget),
                )
            except (UpstreamError, OSError, trio.BrokenResourceError) as exc:
                log.warning("offload fetch failed; reconnecting", error=str(exc))
                await client.aclose()
                await trio.sleep(0.5)
                client = await off.connect()
                off.discover_now.set()
                continue
            now = trio.current_time()
            for tp, r in results.items():
                s = off.partitions.get(tp)
                if s is None or s.position != wanted.get(tp):
                    continue  # released or reset while the fetch was out
                if r.error_code == 0:
                    s.take_fetch(r.records, r.high_watermark, r.log_start_offset, started, now)
                    s.report_to(off.coverage)
                elif r.error_code == OFFSET_OUT_OF_RANGE:
                    await _out_of_range(client, off, s)
                elif r.error_code in _REDISCOVER:
                    off.discover_now.set()
                else:
                    log.warning(
                        "offload fetch: partition error",
                        topic=s.topic,
                        partition=s.partition,
                        error_code=r.error_code,
                    )
            off.wake()
    finally:
        await client.aclose()


async def _out_of_range(client: UpstreamClient, off, s: PartitionState) -> None:
    start = await client.list_offset(s.topic, s.partition, EARLIEST)
    end = await client.list_offset(s.topic, s.partition, LATEST)
    if s.position < start:
        skipped = s.jump_to_log_start(start)
        if skipped:
            m.SKIPPED_OFFSETS.inc(skipped)
            log.warning(
                "the broker deleted offsets before they were offloaded",
                topic=s.topic,
                partition=s.partition,
                skipped=skipped,
                log_start=start,
            )
        return
    try:
        s.check_not_behind(end)
    except Diverged as exc:
        off.count_stopped()
        log.error("offload of a partition stopped", error=str(exc))
        return
    s.resync(s.manifest, s.etag)  # the broker truncated what we had not committed: refetch
