"""A small async Kafka client over trio, for the proxy's own talks with its broker.

Reconciliation and repair need a handful of requests — Metadata, ListOffsets, Fetch and
Produce, and for committed offsets FindCoordinator, OffsetFetch and OffsetCommit
(:mod:`proxy.client.group_client`) — on a connection of the proxy's own. Messages are
kio's; fixed versions that every Kafka 3.x/4.x broker serves, with topic names (not ids)
throughout.
"""

from __future__ import annotations

import datetime
import io
import itertools
import struct
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from kio.index import load_request_schema
from kio.serial import entity_writer
from kio.static.primitive import i8, i16, i32, i64

from proxy.client.errors import UpstreamError
from proxy.client.sasl_client import SaslCredentials, authenticate
from proxy.kafka.codec import decode_response
from proxy.kafka.protocol import (
    FETCH,
    FIND_COORDINATOR,
    LIST_OFFSETS,
    METADATA,
    OFFSET_COMMIT,
    OFFSET_FETCH,
    PRODUCE,
    SASL_AUTHENTICATE,
    SASL_HANDSHAKE,
)

_VERSIONS = {
    METADATA: 12,
    LIST_OFFSETS: 7,
    FETCH: 12,
    PRODUCE: 9,
    FIND_COORDINATOR: 4,  # the group requests of proxy.client.group_client
    OFFSET_FETCH: 8,
    OFFSET_COMMIT: 9,
    SASL_HANDSHAKE: 1,
    SASL_AUTHENTICATE: 2,
}
LATEST, EARLIEST = -1, -2

Address = tuple[str, int]
#: Opens a stream to a broker (TCP, and TLS when configured).
Dial = Callable[[Address], Awaitable[trio.abc.Stream]]


async def plain_dial(address: Address, timeout: float = 10.0) -> trio.abc.Stream:
    with trio.fail_after(timeout):
        return await trio.open_tcp_stream(*address)


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    topic_id: uuid.UUID
    partitions: dict[int, int]  # partition -> leader node id


@dataclass(frozen=True, slots=True)
class FetchResult:
    error_code: int
    high_watermark: int
    log_start_offset: int
    records: bytes


def _module(api_key: int) -> tuple[Any, Any]:
    schema = load_request_schema(api_key, _VERSIONS[api_key])
    return schema, __import__(schema.__module__, fromlist=["x"])


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    cluster_id: str | None
    controller_id: int
    brokers: dict[int, tuple[str, int]]
    topics: dict[str, TopicInfo]


class UpstreamClient:
    def __init__(
        self,
        stream: trio.abc.Stream | None,
        client_id: str = "walproxy-repair",
        *,
        address: Address | None = None,
        dial: Dial | None = None,
        sasl: SaslCredentials | None = None,
    ) -> None:
        self._stream = stream
        self._sasl = sasl
        self._address = address
        self._dial = dial
        self._client_id = client_id
        self._ids = itertools.count(1)
        self._buf = bytearray()
        #: node id -> address of every broker in the last Metadata response.
        self.brokers_seen: dict[int, Address] = {}

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 10.0) -> UpstreamClient:
        return cls(await plain_dial((host, port), timeout))

    @classmethod
    def lazy(
        cls, address: Address, dial: Dial, sasl: SaslCredentials | None = None
    ) -> UpstreamClient:
        """A client that connects with ``dial`` (and authenticates) when entered."""
        return cls(None, address=address, dial=dial, sasl=sasl)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()

    async def __aenter__(self) -> UpstreamClient:
        if self._stream is None:
            assert self._address is not None and self._dial is not None
            try:
                self._stream = await self._dial(self._address)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                cause = exc.__cause__ or exc
                raise UpstreamError(
                    "cannot connect to %s:%d: %s" % (*self._address, str(cause) or "timeout")
                ) from exc
            if self._sasl is not None:
                try:
                    await authenticate(self, self._sasl)
                except BaseException:
                    await trio.aclose_forcefully(self._stream)
                    raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, api_key: int, body: Any, timeout: float = 30.0) -> Any:
        assert self._stream is not None, "not connected (use async with)"
        version = _VERSIONS[api_key]
        schema = load_request_schema(api_key, version)
        correlation_id = next(self._ids)
        header = schema.__header_schema__(
            request_api_key=i16(api_key),
            request_api_version=i16(version),
            correlation_id=i32(correlation_id),
            client_id=self._client_id,
        )
        buf = io.BytesIO()
        entity_writer(type(header))(buf, header)
        entity_writer(schema)(buf, body)
        payload = buf.getvalue()
        try:
            with trio.fail_after(timeout):
                await self._stream.send_all(struct.pack(">i", len(payload)) + payload)
                frame = await self._read_frame()
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            raise UpstreamError(f"broker request api_key={api_key} failed: {exc!r}") from exc
        resp_header, body_out = decode_response(api_key, version, frame)
        if resp_header.correlation_id != correlation_id:
            raise UpstreamError("broker answered with the wrong correlation id")
        return body_out

    async def _read_frame(self) -> bytes:
        while True:
            if len(self._buf) >= 4:
                (size,) = struct.unpack_from(">i", self._buf, 0)
                if len(self._buf) >= 4 + size:
                    with memoryview(self._buf) as view:  # one copy of a (large Fetch) frame
                        frame = bytes(view[4 : 4 + size])
                    del self._buf[: 4 + size]
                    return frame
            assert self._stream is not None  # entered
            data = await self._stream.receive_some(1 << 20)
            if not data:
                raise trio.BrokenResourceError("broker closed the connection")
            self._buf += data

    async def metadata(
        self, topics: list[str] | None = None, topic_ids: list[uuid.UUID] | None = None
    ) -> dict[str, TopicInfo]:
        """Topics by name (or id; ``None`` for both: every topic)."""
        schema, m = _module(METADATA)
        wanted: tuple[Any, ...] | None = None
        if topics is not None or topic_ids is not None:
            wanted = tuple(
                [m.MetadataRequestTopic(topic_id=None, name=n) for n in topics or ()]
                + [m.MetadataRequestTopic(topic_id=t, name=None) for t in topic_ids or ()]
            )
        body = await self.request(
            METADATA,
            schema(
                topics=wanted,
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            ),
        )
        self.brokers_seen = {int(b.node_id): (b.host, int(b.port)) for b in body.brokers}
        out = {}
        for t in body.topics:
            if t.error_code != 0 or t.name is None:
                continue
            out[t.name] = TopicInfo(
                t.name, t.topic_id, {int(p.partition_index): int(p.leader_id) for p in t.partitions}
            )
        return out

    async def brokers(self) -> dict[int, Address]:
        """node id -> address of every broker the cluster lists."""
        await self.metadata([])
        return self.brokers_seen

    async def cluster(self) -> ClusterInfo:
        """Cluster id, brokers and every topic (internal ones included) in one Metadata call."""
        schema, _ = _module(METADATA)
        body = await self.request(
            METADATA,
            schema(
                topics=None,
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            ),
        )
        topics = {
            t.name: TopicInfo(
                t.name, t.topic_id, {int(p.partition_index): int(p.leader_id) for p in t.partitions}
            )
            for t in body.topics
            if t.error_code == 0 and t.name is not None
        }
        brokers = {int(b.node_id): (b.host, int(b.port)) for b in body.brokers}
        return ClusterInfo(body.cluster_id, int(body.controller_id), brokers, topics)

    async def coordinator(self, group: str) -> tuple[int, int, UpstreamClient | None]:
        """``group``'s coordinator: (error code, node id, client); the client is this one
        (a sidecar talks to its own broker only; the caller checks the node id)."""
        err, node, _ = await self.find_coordinator(group)
        return err, node, self if err == 0 else None

    async def find_coordinator(self, group: str) -> tuple[int, int, Address]:
        """``group``'s coordinator: (error code, node id, address); a coordinator still
        loading answers COORDINATOR_NOT_AVAILABLE."""
        schema, _ = _module(FIND_COORDINATOR)
        body = await self.request(
            FIND_COORDINATOR, schema(key_type=i8(0), coordinator_keys=(group,))
        )
        [c] = body.coordinators
        return int(c.error_code), int(c.node_id), (c.host, int(c.port))

    async def list_offset(self, topic: str, partition: int, which: int) -> int:
        schema, m = _module(LIST_OFFSETS)
        body = await self.request(
            LIST_OFFSETS,
            schema(
                replica_id=i32(-1),
                isolation_level=i8(0),
                topics=(
                    m.ListOffsetsTopic(
                        name=topic,
                        partitions=(
                            m.ListOffsetsPartition(
                                partition_index=i32(partition),
                                current_leader_epoch=i32(-1),
                                timestamp=i64(which),
                            ),
                        ),
                    ),
                ),
            ),
        )
        [t] = body.topics
        [p] = t.partitions
        if p.error_code != 0:
            raise UpstreamError(f"ListOffsets {topic}-{partition}: error {int(p.error_code)}")
        return int(p.offset)

    async def fetch(
        self, topic: str, partition: int, offset: int, max_bytes: int = 8 << 20
    ) -> FetchResult:
        schema, m = _module(FETCH)
        body = await self.request(
            FETCH,
            schema(
                max_wait=datetime.timedelta(0),
                min_bytes=i32(0),
                max_bytes=i32(max_bytes),
                isolation_level=i8(0),
                topics=(
                    m.FetchTopic(
                        topic=topic,
                        partitions=(
                            m.FetchPartition(
                                partition=i32(partition),
                                fetch_offset=i64(offset),
                                partition_max_bytes=i32(max_bytes),
                            ),
                        ),
                    ),
                ),
                forgotten_topics_data=(),
            ),
        )
        if body.error_code != 0:
            raise UpstreamError(f"Fetch {topic}-{partition}: error {int(body.error_code)}")
        [t] = body.responses
        [p] = t.partitions
        return FetchResult(
            int(p.error_code),
            int(p.high_watermark),
            int(p.log_start_offset),
            bytes(p.records or b""),
        )

    async def fetch_many(
        self,
        positions: dict[tuple[str, int], int],
        *,
        max_wait_s: float = 0.0,
        min_bytes: int = 0,
        max_bytes: int = 32 << 20,
        partition_max_bytes: int = 8 << 20,
    ) -> dict[tuple[str, int], FetchResult]:
        """One Fetch (as a consumer, READ_UNCOMMITTED: up to the high watermark, control
        batches and aborted data included) for many partitions; per-partition errors are in
        each result's ``error_code``."""
        schema, m = _module(FETCH)
        by_topic: dict[str, list[Any]] = {}
        for (topic, partition), offset in positions.items():
            by_topic.setdefault(topic, []).append(
                m.FetchPartition(
                    partition=i32(partition),
                    fetch_offset=i64(offset),
                    partition_max_bytes=i32(partition_max_bytes),
                )
            )
        body = await self.request(
            FETCH,
            schema(
                max_wait=datetime.timedelta(seconds=max_wait_s),
                min_bytes=i32(min_bytes),
                max_bytes=i32(max_bytes),
                isolation_level=i8(0),
                topics=tuple(
                    m.FetchTopic(topic=t, partitions=tuple(ps)) for t, ps in by_topic.items()
                ),
                forgotten_topics_data=(),
            ),
            timeout=max_wait_s + 30.0,
        )
        if body.error_code != 0:
            raise UpstreamError(f"Fetch: error {int(body.error_code)}")
        out = {}
        for t in body.responses:
            for p in t.partitions:
                out[(t.topic, int(p.partition_index))] = FetchResult(
                    int(p.error_code),
                    int(p.high_watermark),
                    int(p.log_start_offset),
                    bytes(p.records or b""),
                )
        return out

    async def produce(
        self,
        topic: str,
        partition: int,
        records: bytes,
        transactional_id: str | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, int]:
        """Produce ``records`` with acks=all; returns (error code, base offset)."""
        schema, m = _module(PRODUCE)
        body = await self.request(
            PRODUCE,
            schema(
                transactional_id=transactional_id,
                acks=i16(-1),
                timeout=datetime.timedelta(seconds=timeout),
                topic_data=(
                    m.TopicProduceData(
                        name=topic,
                        partition_data=(
                            m.PartitionProduceData(index=i32(partition), records=records),
                        ),
                    ),
                ),
            ),
            timeout=timeout + 5,
        )
        [t] = body.responses
        [p] = t.partition_responses
        return int(p.error_code), int(p.base_offset)


class ClusterClient:
    """:class:`UpstreamClient`'s requests over a whole cluster (gateway mode).

    Metadata goes to any reachable bootstrap broker; ListOffsets, Fetch and Produce for a
    partition go to its leader as the last Metadata named it. A request that finds the
    leader moved fails with UpstreamError, and the caller starts over with a fresh client.
    """

    def __init__(
        self,
        bootstrap: list[Address],
        dial: Dial,
        timeout: float = 10.0,
        sasl: SaslCredentials | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._dial = dial
        self._sasl = sasl
        self._timeout = timeout
        self._any: UpstreamClient | None = None
        self._clients: dict[Address, UpstreamClient] = {}
        self._brokers: dict[int, Address] = {}
        self._leaders: dict[tuple[str, int], int] = {}

    async def __aenter__(self) -> ClusterClient:
        errors = []
        for address in self._bootstrap:
            try:
                self._any = await self._client(address)
                return self
            except UpstreamError as exc:
                errors.append(str(exc))
        raise UpstreamError("no bootstrap broker reachable: " + "; ".join(errors))

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def _client(self, address: Address) -> UpstreamClient:
        client = self._clients.get(address)
        if client is None:
            client = await UpstreamClient.lazy(address, self._dial, self._sasl).__aenter__()
            self._clients[address] = client
        return client

    async def metadata(
        self, topics: list[str] | None = None, topic_ids: list[uuid.UUID] | None = None
    ) -> dict[str, TopicInfo]:
        assert self._any is not None, "not connected (use async with)"
        out = await self._any.metadata(topics, topic_ids)
        self._learn(self._any.brokers_seen, out)
        return out

    def _learn(self, brokers: dict[int, Address], topics: dict[str, TopicInfo]) -> None:
        self._brokers.update(brokers)
        for name, info in topics.items():
            for partition, leader in info.partitions.items():
                self._leaders[(name, partition)] = leader

    async def brokers(self) -> dict[int, Address]:
        assert self._any is not None, "not connected (use async with)"
        return await self._any.brokers()

    async def cluster(self) -> ClusterInfo:
        """:meth:`UpstreamClient.cluster` of any bootstrap broker; learns every leader."""
        assert self._any is not None, "not connected (use async with)"
        info = await self._any.cluster()
        self._learn(info.brokers, info.topics)
        return info

    async def _leader(self, topic: str, partition: int) -> UpstreamClient:
        if (topic, partition) not in self._leaders:
            await self.metadata([topic])
        leader = self._leaders.get((topic, partition), -1)
        address = self._brokers.get(leader)
        if address is None:
            raise UpstreamError(f"{topic}-{partition} has no leader now (leader id {leader})")
        return await self._client(address)

    async def list_offset(self, topic: str, partition: int, which: int) -> int:
        return await (await self._leader(topic, partition)).list_offset(topic, partition, which)

    async def coordinator(self, group: str) -> tuple[int, int, UpstreamClient | None]:
        """``group``'s coordinator (FindCoordinator through any broker): (error code, node
        id, a client of it). Its address is the one the cluster's Metadata lists (the
        brokers' own listener the gateway dials), not FindCoordinator's."""
        assert self._any is not None, "not connected (use async with)"
        err, node, _ = await self._any.find_coordinator(group)
        if err != 0:
            return err, node, None
        if node not in self._brokers:
            await self.metadata([])
        address = self._brokers.get(node)
        if address is None:
            raise UpstreamError(f"group coordinator {node} is not in the cluster's metadata")
        return 0, node, await self._client(address)

    async def fetch(
        self, topic: str, partition: int, offset: int, max_bytes: int = 8 << 20
    ) -> FetchResult:
        client = await self._leader(topic, partition)
        return await client.fetch(topic, partition, offset, max_bytes)

    async def produce(
        self,
        topic: str,
        partition: int,
        records: bytes,
        transactional_id: str | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, int]:
        client = await self._leader(topic, partition)
        return await client.produce(topic, partition, records, transactional_id, timeout)
