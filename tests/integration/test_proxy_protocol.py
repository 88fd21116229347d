"""Protocol behaviour of the proxy on raw sockets, against the real broker behind it.

Malformed input closes that connection only; acks=0 gets no slot and leaks nothing; deep
pipelining keeps order; KIP-511 ApiVersions fallback; other clients are served throughout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from proxy.dev.cluster import DevCluster
from proxy.kafka.codec import kio_version_range

from .rawkafka import (
    RawConnection,
    api_versions_frame,
    metadata_frame,
    produce_frame,
)
from .scrape import metric


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _assert_served(bootstrap: str, correlation_id: int) -> None:
    with RawConnection(bootstrap) as conn:
        conn.send(metadata_frame(correlation_id))
        header, body = conn.recv_response(3, 12)
        assert header.correlation_id == correlation_id
        assert body.brokers


MALFORMED = [
    pytest.param(struct.pack(">i", -5) + b"xxxx", "malformed_frame", id="negative-size"),
    pytest.param(struct.pack(">i", 2**31 - 1), "frame_too_large", id="huge-size"),
    pytest.param(
        struct.pack(">i", 200) + b"\x00" * 20, "partial_frame_timeout", id="truncated-frame"
    ),
    pytest.param(
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32,
        "malformed_frame",
        id="tls-client-hello",
    ),
    pytest.param(
        struct.pack(">i", 8) + struct.pack(">hhi", 0, -1, 1),
        "malformed_frame",
        id="negative-api-version",
    ),
    pytest.param(
        struct.pack(">i", 4) + b"\x00\x00\x00\x09", "malformed_frame", id="header-too-short"
    ),
    pytest.param(
        struct.pack(">i", 14) + struct.pack(">hhih", 0, 9, 1, 0) + b"\xff\xff\xff\xff",
        "malformed_message",
        id="garbage-produce-body",
    ),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_input_closes_only_that_connection(
    kafka: DevCluster, data: bytes, reason: str
) -> None:
    node = kafka.broker_nodes[0]
    assert node.admin_port is not None and node.proxy is not None
    before = metric(node.admin_port, f'walproxy_decode_errors_total{{reason="{reason}"}}')
    with RawConnection(kafka.bootstrap) as bystander, RawConnection(kafka.bootstrap) as bad:
        bystander.send(metadata_frame(1))
        bystander.recv_response(3, 12)
        bad.send(data)
        assert bad.closed_by_peer(timeout=10), "the proxy kept a malformed connection open"
        bystander.send(metadata_frame(2))  # the other client is still served
        header, _ = bystander.recv_response(3, 12)
        assert header.correlation_id == 2
    assert node.proxy.alive
    after = metric(node.admin_port, f'walproxy_decode_errors_total{{reason="{reason}"}}')
    assert after == before + 1


def test_unknown_api_key_is_forwarded_opaquely(kafka: DevCluster) -> None:
    # An API key no one knows travels to the broker untouched; Kafka closes on it, and so
    # does the proxy for that connection only.
    with RawConnection(kafka.bootstrap) as conn:
        conn.send(struct.pack(">i", 10) + struct.pack(">hhih", 31000, 0, 5, -1))
        assert conn.closed_by_peer(timeout=10)
    _assert_served(kafka.bootstrap, 3)


def test_acks0_flood_does_not_grow_memory_or_leak_slots(
    kafka: DevCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    node = kafka.broker_nodes[0]
    assert node.proxy is not None
    value = b"v" * 1000
    n = 20_000
    frames = b"".join(
        produce_frame(topic, 0, [value], acks=0, correlation_id=i) for i in range(200)
    )
    # This test is about memory and response slots, not speed: one connection's acks=0
    # requests go through the WAL and an ApiVersions barrier every 32 requests (measured
    # ~600 single-record requests/s), so the proxy may hold the socket for longer than 10 s.
    with RawConnection(kafka.bootstrap, timeout=90.0) as conn:
        conn.send(frames)  # warm up allocator and buffers
        rss_before = _rss_kib(node.proxy.pid)
        for _ in range(n // 200 - 1):
            conn.send(frames)
        # acks=0 requests got no slot: the next answered request matches its correlation id.
        conn.send(metadata_frame(424242))
        header, _ = conn.recv_response(3, 12)
        assert header.correlation_id == 424242
        rss_after = _rss_kib(node.proxy.pid)
    assert rss_after - rss_before < 32 * 1024, (rss_before, rss_after)
    consumer = Consumer({"bootstrap.servers": kafka.direct_bootstrap, "group.id": "acks0"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    assert high - low == n


def test_deep_pipelining_keeps_order(kafka: DevCluster, new_topic: Callable[..., str]) -> None:
    topic = new_topic()
    count = 600  # well past max_in_flight (64): the proxy back-pressures, nothing is lost
    frames = []
    for i in range(count):
        if i % 3 == 0:
            frames.append(produce_frame(topic, 0, [b"%d" % i], acks=-1, correlation_id=i))
        elif i % 3 == 1:
            frames.append(metadata_frame(i))
        else:
            frames.append(api_versions_frame(i))
    with RawConnection(kafka.bootstrap, timeout=30) as conn:
        conn.send(b"".join(frames))
        offsets = []
        for i in range(count):
            api, version = [(0, 9), (3, 12), (18, 3)][i % 3]
            header, body = conn.recv_response(api, version)
            assert header.correlation_id == i
            if api == 0:
                [t] = body.responses
                [p] = t.partition_responses
                assert p.error_code == 0
                offsets.append(int(p.base_offset))
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets) == count // 3


def test_kip511_api_versions_fallback(kafka: DevCluster) -> None:
    with RawConnection(kafka.bootstrap) as conn:
        # A client newer than the proxy: answered in v0 form with the range to retry with.
        payload = api_versions_frame(1, version=3)[4:]
        newer = payload[:2] + struct.pack(">h", 99) + payload[4:]
        conn.send(struct.pack(">i", len(newer)) + newer)
        header, body = conn.recv_response(18, 0)
        assert header.correlation_id == 1
        assert body.error_code == 35  # UNSUPPORTED_VERSION
        [entry] = body.api_keys
        assert (entry.api_key, entry.max_version) == (18, kio_version_range(18)[1])
        # The retry at that version reaches the broker; decoded APIs are clamped.
        conn.send(api_versions_frame(2, version=int(entry.max_version)))
        _, body = conn.recv_response(18, int(entry.max_version))
        ranges = {int(a.api_key): int(a.max_version) for a in body.api_keys}
        assert ranges[0] <= 13
        assert ranges[3] <= kio_version_range(3)[1]
        assert 1 in ranges  # fetch passes through
