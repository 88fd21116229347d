"""The running offloader: lease, partition discovery, tailer and uploader under one nursery.

:class:`Offloader` copies every partition its broker leads (internal topics included) to
the offload target. It runs inside ``walproxy run`` (next to the produce path, which trims
the WAL by its :attr:`~Offloader.coverage`) or alone (``walproxy offload``).

* **lease**: at start it takes the next writer epoch of its node (``lease.json``); a writer
  that finds a newer epoch is *fenced*: it stops loudly (``walproxy_offload_fenced`` = 1,
  error log) and writes nothing more;
* **discovery** (:meth:`_discover`): Metadata every ``metadata_interval_s`` (and on fetch
  errors): new partitions start from their manifest (or the broker's log start), moved or
  deleted ones are released; ``broker.json`` is rewritten when the set changes;
* **tailer** (:mod:`offload.tailer`): one long-polling Fetch for all partitions, as a
  consumer would, into bounded per-partition buffers;
* **uploader** (:mod:`offload.uploader`): segment object then manifest, conditional writes.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
import trio

from proxy.client.errors import UpstreamError
from proxy.client.upstream_client import EARLIEST, LATEST, UpstreamClient
from proxy.kafka.groups import CONSUMER_OFFSETS

from . import commit, layout, segment_codec
from . import manifest as mf
from . import metrics as m
from .config import OffloadSection
from .coverage import Coverage
from .node_files import (
    BrokerInfo,
    Lease,
    TopicEntry,
    encode_broker_info,
    parse_meta_properties,
)
from .partition import Diverged, PartitionState
from .s3_calls import InstrumentedStore, Retrying
from .store import ObjectStore, PreconditionFailed, open_store

log = structlog.get_logger("walproxy.offload")

#: :meth:`Offloader._first_difference` could not read the broker: look again next time.
_NOT_YET = "not yet"

TP = tuple[str, int]
#: Opens (and authenticates) a client to this offloader's broker; raises to be retried.
Connector = Callable[[], Awaitable[UpstreamClient]]


class OffloadStartError(RuntimeError):
    """The offloader cannot start (names the setting when it is a configuration matter)."""


class Offloader:
    def __init__(
        self,
        cfg: OffloadSection,
        upstream: tuple[str, int],
        node_id: int | None,
        *,
        store: ObjectStore | None = None,
        owner: str | None = None,
        connector: Connector | None = None,
        coverage: Coverage | None = None,
        on_adopt: Callable[[Offloader, TP], None] | None = None,
    ) -> None:
        """``connector`` replaces the plain TCP connection to ``upstream`` (gateway mode: TLS,
        SASL, the broker's address as last learned); ``on_adopt`` is told of every partition
        this offloader takes on (gateway mode: the previous leader's offloader lets go)."""
        self.cfg = cfg
        m.MAX_LAG_SECONDS.set(cfg.max_lag_s)
        self.upstream = upstream
        self.node_id = node_id
        self._inner_store = store
        self._connector = connector
        self._on_adopt = on_adopt
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.coverage = coverage if coverage is not None else Coverage()
        self.partitions: dict[TP, PartitionState] = {}
        self.cluster_id = ""
        self.lease: Lease | None = None
        self.fenced = ""  # why, once fenced
        self.work = trio.Event()  # something changed: buffers, partitions
        self.space = trio.Event()  # buffer space was freed
        self.discover_now = trio.Event()
        self.started = trio.Event()
        self._hosted: dict[str, TopicEntry] = {}
        self._broker_etag: str | None = None
        self._topic_ids: dict[str, uuid.UUID] = {}
        self.store: InstrumentedStore
        self.calls: Retrying

    # -- helpers used by tailer and uploader ------------------------------------------------
    def wake(self) -> None:
        self.work.set()
        self.work = trio.Event()

    def freed(self) -> None:
        self.space.set()
        self.space = trio.Event()

    def buffered_bytes(self) -> int:
        return sum(len(s.buffer) for s in self.partitions.values())

    def fence(self, reason: str) -> None:
        if not self.fenced:
            self.fenced = reason
            m.FENCED.set(1)
            log.error(
                "offload FENCED: a newer writer owns this node's offload; stopping the offloader",
                reason=reason,
                node_id=self.node_id,
                epoch=self.lease.epoch if self.lease else None,
            )

    async def connect(self) -> UpstreamClient:
        """A broker connection, retried until it works (the broker may be restarting)."""
        delay = 0.2
        while True:
            try:
                if self._connector is not None:
                    return await self._connector()
                return await UpstreamClient.connect(*self.upstream, timeout=10.0)
            except (OSError, trio.TooSlowError, UpstreamError) as exc:
                log.warning(
                    "offloader cannot reach the broker",
                    node_id=self.node_id,
                    error=str(exc) or type(exc).__name__,
                    retry_in_s=delay,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- life cycle -------------------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[Offloader] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled; raises :class:`~offload.manifest.FencedError` when fenced."""
        from .tailer import tail
        from .uploader import upload_loop

        inner = self._inner_store
        if inner is None:
            cfg = self.cfg
            inner = await trio.to_thread.run_sync(
                lambda: open_store(
                    cfg.target,
                    endpoint_url=cfg.s3_endpoint_url,
                    region=cfg.s3_region,
                    request_timeout_s=cfg.request_timeout_s,
                    max_attempts=1,  # Retrying does the retries, with metrics
                )
            )
        self.store = InstrumentedStore(inner)
        self.calls = Retrying(self.store, self.cfg.request_timeout_s)
        client = await self._identify()
        try:
            self.lease = await self.calls(
                "acquire_lease", commit.acquire_lease, self.cluster_id, self.node_id, self.owner
            )
            m.FENCED.set(0)
            log.info(
                "offload writer",
                target=self.store.describe(),
                cluster_id=self.cluster_id,
                node_id=self.node_id,
                epoch=self.lease.epoch,
            )
            task_status.started(self)
            try:
                async with trio.open_nursery() as nursery:
                    client = await self._first_discovery(client)
                    self.started.set()
                    nursery.start_soon(self._discover_loop, client)
                    nursery.start_soon(tail, self)
                    nursery.start_soon(upload_loop, self)
            except BaseExceptionGroup as group:
                fenced, _ = group.split(mf.FencedError)
                if fenced is None:
                    raise
                first = _leaf(fenced)
                self.fence(str(first))
                raise first from None
        finally:
            await client.aclose()

    async def _identify(self) -> UpstreamClient:
        """Cluster id and node id from the broker (Metadata)."""
        while True:
            client = await self.connect()
            try:
                info = await client.cluster()
                break
            except UpstreamError as exc:
                await client.aclose()
                log.warning("offloader: Metadata failed", error=str(exc))
                await trio.sleep(1.0)
        if not info.cluster_id:
            raise OffloadStartError("the broker reported no cluster id")
        self.cluster_id = info.cluster_id
        if self.node_id is None or self.node_id < 0:
            if len(info.brokers) != 1:
                await client.aclose()
                raise OffloadStartError(
                    "proxy.node_id: must be set when offload.enabled and the cluster has "
                    f"{len(info.brokers)} brokers (the offloader copies the partitions its "
                    "broker leads)"
                )
            self.node_id = next(iter(info.brokers))
        return client

    # -- discovery --------------------------------------------------------------------------
    async def _discover_loop(self, client: UpstreamClient) -> None:
        while True:
            with trio.move_on_after(self.cfg.metadata_interval_s):
                await self.discover_now.wait()
            self.discover_now = trio.Event()
            try:
                await self._discover(client)
            except (UpstreamError, OSError, trio.BrokenResourceError) as exc:
                log.warning("offloader: metadata refresh failed; reconnecting", error=str(exc))
                await client.aclose()
                client = await self.connect()

    async def _first_discovery(self, client: UpstreamClient) -> UpstreamClient:
        """Discover until it works once (the broker may be restarting); returns the client."""
        while True:
            try:
                await self._discover(client)
                return client
            except (UpstreamError, OSError, trio.BrokenResourceError) as exc:
                log.warning("offloader: first discovery failed; retrying", error=str(exc))
                await client.aclose()
                await trio.sleep(1.0)
                client = await self.connect()

    def reset(self) -> None:
        """Forget per-run state before :meth:`run` is called again (after a failure): every
        partition is adopted afresh from its committed manifest."""
        for tp in list(self.partitions):
            self._release(tp, deleted=False)
        self._hosted = {}
        self._broker_etag = None
        self.started = trio.Event()
        self.discover_now = trio.Event()

    async def _discover(self, client: UpstreamClient) -> None:
        info = await client.cluster()
        mine: dict[TP, uuid.UUID] = {}
        counts: dict[str, int] = {}
        for name, t in info.topics.items():
            counts[name] = len(t.partitions)
            self.coverage.note_partition_count(name, len(t.partitions))
            for p, leader in t.partitions.items():
                if leader == self.node_id:
                    mine[(name, p)] = t.topic_id
                elif leader >= 0:  # not while it has no leader: it may come back here
                    self.coverage.led_elsewhere(name, t.topic_id, p)
        for tp, topic_id in mine.items():
            state = self.partitions.get(tp)
            if state is not None and state.topic_id != topic_id:  # deleted and re-created
                self._release(tp, deleted=True)
                state = None
            if state is None:
                try:
                    await self._adopt(client, tp, topic_id)
                except UpstreamError as exc:
                    # E.g. NOT_LEADER right after a topic is created or a leader moves: the
                    # partition is adopted on a later discovery; the others go on now.
                    log.warning(
                        "offloader: cannot adopt partition yet",
                        topic=tp[0],
                        partition=tp[1],
                        error=str(exc),
                    )
                    self.discover_now.set()
        for tp in [tp for tp in self.partitions if tp not in mine]:
            self._release(tp, deleted=tp[0] not in info.topics)
        for state in [s for s in self.partitions.values() if s.diverged_at is not None]:
            await self.recheck_diverged(client, state)
        hosted: dict[str, TopicEntry] = {}
        for (name, p), topic_id in sorted(mine.items()):
            entry = hosted.get(name)
            hosted[name] = TopicEntry(
                topic_id,
                (*(entry.partitions if entry else ()), p),
                counts[name] if name == CONSUMER_OFFSETS else None,
            )
        if hosted != self._hosted:
            await self._write_broker_json(hosted)
            self._hosted = hosted
        self.wake()

    async def _adopt(self, client: UpstreamClient, tp: TP, topic_id: uuid.UUID) -> None:
        topic, partition = tp
        key = layout.manifest_key(self.cluster_id, topic_id, partition)
        stored = await self.calls("read_manifest", commit.read_manifest, key)
        start = await client.list_offset(topic, partition, EARLIEST)
        end = await client.list_offset(topic, partition, LATEST)
        assert self.lease is not None
        if stored.manifest is not None:
            mf.check_writer(
                stored.manifest.writer_node,
                stored.manifest.writer_epoch,
                self.lease.node_id,
                self.lease.epoch,
                f"manifest of {topic}-{partition}",
            )
            manifest = stored.manifest
        else:
            manifest = mf.initial_manifest(
                topic,
                topic_id,
                partition,
                writer_node=self.lease.node_id,
                writer_epoch=self.lease.epoch,
                log_start_offset=start,
                version=0,
            )
        state = PartitionState(
            topic,
            topic_id,
            partition,
            manifest,
            stored.etag,
            position=manifest.next_offset,
            buffer_from=manifest.next_offset,
            log_start=start,
            high_watermark=end,
        )
        try:
            state.check_not_behind(end)
        except Diverged as exc:
            log.error("offload of a partition stopped", error=str(exc))
        self.partitions[tp] = state
        state.report_to(self.coverage, -1.0)
        if self._on_adopt is not None:
            self._on_adopt(self, tp)
        self.count_stopped()
        log.info(
            "offloading partition",
            topic=topic,
            partition=partition,
            from_offset=state.position,
            manifest_version=manifest.version,
        )

    async def recheck_diverged(self, client: UpstreamClient, state: PartitionState) -> None:
        """A partition whose broker log ended below the S3 copy: once the log reaches it again
        (the reconciler restores a lost page cache's tail from the WAL, at the original
        offsets), compare the batches S3 has past the point the log had fallen back to with
        the broker's, and go on if they are the same; stop for good if they are not."""
        end = await client.list_offset(state.topic, state.partition, LATEST)
        state.high_watermark = max(state.high_watermark, end)
        if end < state.committed_next:
            return  # still behind: the repair has not run yet, or cannot
        why = await self._first_difference(client, state)
        if why is _NOT_YET:
            return
        if why is not None:
            state.differs(why)
            self.count_stopped()
            log.error("offload of a partition stopped for good", error=state.stopped)
            return
        fell_to = state.diverged_at
        state.rejoin()
        self.count_stopped()
        state.report_to(self.coverage, -1.0)
        log.info(
            "offload of a partition resumed: the broker's log holds the S3 copy again",
            topic=state.topic,
            partition=state.partition,
            log_had_fallen_to=fell_to,
            from_offset=state.position,
        )
        self.wake()

    async def _first_difference(self, client: UpstreamClient, state: PartitionState) -> str | None:
        """How the broker's batches differ from the S3 segments the diverged log had lost
        (None: the same; :data:`_NOT_YET`: the broker could not be read now)."""
        for ref in state.segments_to_compare():
            stored = await self.calls("get_segment", lambda st, k=ref.key: st.get(k).data)
            try:
                log_bytes = segment_codec.decode(stored, ref)
            except segment_codec.SegmentError as exc:
                return f"cannot compare with the S3 copy: {exc}"
            fetched = await client.fetch(
                state.topic, state.partition, ref.base_offset, max_bytes=ref.size + (1 << 16)
            )
            if fetched.error_code != 0:
                return _NOT_YET  # leadership moving, say: the next discovery looks again
            why = segment_codec.first_difference(log_bytes, fetched.records)
            if why is not None:
                return why
        return None

    def count_stopped(self) -> None:
        """``walproxy_offload_diverged_partitions``: the partitions not offloaded now."""
        m.DIVERGED.set(sum(1 for s in self.partitions.values() if s.stopped))

    def release(self, tp: TP) -> None:
        """Stop offloading ``tp`` now (its leader moved to a broker whose offloader took it).
        An upload already under way may still commit: manifests are conditional writes."""
        if tp in self.partitions:
            self._release(tp, deleted=False)

    def _release(self, tp: TP, *, deleted: bool) -> None:
        state = self.partitions.pop(tp)
        state.stopped = "released"
        self.coverage.release(tp[0], state.topic_id, None if deleted else tp[1])
        for g in (m.LAG_OFFSETS, m.LAG_BYTES, m.LAG_SECONDS, m.OFFLOADED_OFFSET):
            try:
                g.remove(tp[0], str(tp[1]))
            except KeyError:
                pass
        log.info(
            "no longer offloading partition",
            topic=tp[0],
            partition=tp[1],
            why="topic deleted" if deleted else "led by another broker",
        )
        self.freed()

    async def _write_broker_json(self, hosted: dict[str, TopicEntry]) -> None:
        assert self.lease is not None
        meta = self._meta_properties()
        info = BrokerInfo(
            cluster_id=self.cluster_id,
            node_id=self.node_id if self.node_id is not None else -1,
            directory_id=meta.get("directory.id") if meta else None,
            meta_properties=meta,
            topics=hosted,
            writer_epoch=self.lease.epoch,
        )
        key = layout.broker_key(self.cluster_id, info.node_id)
        data = encode_broker_info(info)
        lease = self.lease
        etag = self._broker_etag

        def write(store: ObjectStore) -> str:
            commit.check_lease(store, self.cluster_id, lease)
            if etag is None:
                current = store.head(key)
                if current is None:
                    return store.put(key, data, if_none_match=True)
                return store.put(key, data, if_match=current.etag)
            return store.put(key, data, if_match=etag)

        try:
            self._broker_etag = await self.calls("put_broker_json", write)
        except PreconditionFailed:  # written by someone else in between: fenced or retry
            self._broker_etag = None
            self._broker_etag = await self.calls("put_broker_json", write)

    def _meta_properties(self) -> dict[str, str] | None:
        path = self.cfg.broker_meta_properties
        if not path:
            return None
        try:
            return parse_meta_properties(Path(path).read_text())
        except OSError as exc:
            log.warning(
                "offload.broker_meta_properties unreadable; broker.json without directory id",
                path=path,
                error=str(exc),
            )
            return None


def _leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group
