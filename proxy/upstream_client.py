"""A small async Kafka client over trio, for the proxy's own talks with its broker.

Reconciliation and repair need a handful of requests — Metadata, ListOffsets, Fetch and
Produce — on a connection of the proxy's own. Messages are kio's; fixed versions that every
Kafka 3.x/4.x broker serves, with topic names (not ids) throughout.
"""

from __future__ import annotations

import datetime
import io
import itertools
import struct
import uuid
from dataclasses import dataclass
from typing import Any

import trio
from kio.index import load_request_schema
from kio.serial import entity_writer
from kio.static.primitive import i8, i16, i32, i64

from .codec import decode_response

METADATA, LIST_OFFSETS, FETCH, PRODUCE = 3, 2, 1, 0
_VERSIONS = {METADATA: 12, LIST_OFFSETS: 7, FETCH: 12, PRODUCE: 9}
LATEST, EARLIEST = -1, -2


class UpstreamError(Exception):
    """The broker answered with an error, or the connection failed."""


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
    def __init__(self, stream: trio.abc.Stream, client_id: str = "walproxy-repair") -> None:
        self._stream = stream
        self._client_id = client_id
        self._ids = itertools.count(1)
        self._buf = bytearray()

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 10.0) -> UpstreamClient:
        with trio.fail_after(timeout):
            return cls(await trio.open_tcp_stream(host, port))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, api_key: int, body: Any, timeout: float = 30.0) -> Any:
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
                    frame = bytes(self._buf[4 : 4 + size])
                    del self._buf[: 4 + size]
                    return frame
            data = await self._stream.receive_some(1 << 20)
            if not data:
                raise trio.BrokenResourceError("broker closed the connection")
            self._buf += data

    async def metadata(
        self, topics: list[str] | None = None, topic_ids: list[uuid.UUID] | None = None
    ) -> dict[str, TopicInfo]:
        """Topics by name (or id; ``None`` for both: every topic)."""
        schema, m = _module(METADATA)
        wanted: tuple | None = None
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
        out = {}
        for t in body.topics:
            if t.error_code != 0 or t.name is None:
                continue
            out[t.name] = TopicInfo(
                t.name, t.topic_id, {int(p.partition_index): int(p.leader_id) for p in t.partitions}
            )
        return out

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
