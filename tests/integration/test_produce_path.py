"""The durable produce path at its edges: corrupt batches, cut connections, failing disks.

Each edge runs with the WAL in files (the shared sidecar, or a walproxy of the test's own)
and on S3 (``wal.backend = "s3"``, moto's server), since the produce path must not care."""

from __future__ import annotations

import errno
import json
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import crc32c
import pytest
import trio
from confluent_kafka import Consumer, TopicPartition

from proxy.dev.cluster import DevCluster
from proxy.kafka.record_batch import build_batch
from tests.offload.s3relay import S3Relay
from tests.s3server import S3Server, s3_wal_env

from .proxy_process import OwnProxy, in_process_server
from .rawkafka import RawConnection, metadata_frame, now_ms, produce_frame, produce_frame_multi
from .relay import Relay
from .scrape import metric

CORRUPT_MESSAGE = 2
INVALID_RECORD = 87
KAFKA_STORAGE_ERROR = 56


def log_end(bootstrap: str, topic: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "leo-probe"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        consumer.close()


def corrupt(batch: bytes) -> bytes:
    return batch[:-1] + bytes([batch[-1] ^ 0xFF])  # the CRC32C no longer matches


def partition_results(body) -> dict[int, tuple[int, int]]:  # type: ignore[no-untyped-def]
    [topic] = body.responses
    return {
        int(p.index): (int(p.error_code), int(p.base_offset)) for p in topic.partition_responses
    }


@dataclass
class Walproxy:
    """The walproxy a test talks to: its address and its admin port."""

    bootstrap: str
    admin_port: int

    def refused(self) -> float:
        return metric(self.admin_port, 'walproxy_produce_batches_refused_total{reason="corrupt"}')


def _wal_env(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for a walproxy of the test's own whose WAL is in files or on S3."""
    if backend == "file":
        return {}
    s3: S3Server = request.getfixturevalue("s3_server")
    return s3_wal_env(s3.endpoint_url, s3.new_bucket(), "wal/node-1")


@pytest.fixture(scope="module", params=["file", "s3"])
def walproxy(
    request: pytest.FixtureRequest, kafka: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Walproxy]:
    """The shared sidecar (a file WAL), or a walproxy with its WAL on S3."""
    node = kafka.broker_nodes[0]
    if request.param == "file":
        yield Walproxy(kafka.bootstrap, node.admin_port or 0)
        return
    workdir = tmp_path_factory.mktemp("s3-wal-proxy")
    proxy = OwnProxy(kafka, workdir, **_wal_env("s3", request)).start()
    try:
        proxy.wait_ready()
        yield Walproxy(proxy.bootstrap, proxy.admin_port)
    finally:
        proxy.kill()


@pytest.fixture(params=["file", "s3"])
def wal_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """For a test's own walproxy: a WAL in files, then on S3."""
    return _wal_env(request.param, request)


def test_corrupt_batch_in_multi_partition_request(
    kafka: DevCluster, walproxy: Walproxy, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=3)
    refused_before = walproxy.refused()
    good, bad = build_batch([b"good-0"]), corrupt(build_batch([b"bad-1"]))
    with RawConnection(walproxy.bootstrap) as conn:
        conn.send(
            produce_frame_multi(
                topic, {0: good, 1: bad, 2: build_batch([b"good-2"])}, acks=-1, correlation_id=7
            )
        )
        header, body = conn.recv_response(0, 9)
    assert header.correlation_id == 7
    results = partition_results(body)
    assert results[1][0] == CORRUPT_MESSAGE  # Kafka's own error code, for that partition only
    assert results[0] == (0, 0) and results[2] == (0, 0)
    # The corrupt batch reached neither the broker nor the WAL.
    assert [log_end(kafka.direct_bootstrap, topic, p) for p in range(3)] == [1, 0, 1]
    assert walproxy.refused() == refused_before + 1


def test_request_with_only_corrupt_batches_is_answered_by_the_proxy(
    kafka: DevCluster, walproxy: Walproxy, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    with RawConnection(walproxy.bootstrap) as conn:
        conn.send(
            produce_frame(
                topic, 0, [], acks=1, correlation_id=3, batch=corrupt(build_batch([b"x"]))
            )
        )
        _, body = conn.recv_response(0, 9)
        assert partition_results(body) == {0: (CORRUPT_MESSAGE, -1)}
        conn.send(metadata_frame(4))  # the connection stays usable
        assert conn.recv_response(3, 12)[0].correlation_id == 4
    assert log_end(kafka.direct_bootstrap, topic, 0) == 0


def _with_count(batch: bytes, count: int) -> bytes:
    """``batch`` claiming ``count`` records (its CRC32C made right again)."""
    raw = bytearray(batch)
    struct.pack_into(">i", raw, 57, count)
    struct.pack_into(">I", raw, 17, crc32c.crc32c(bytes(raw[21:])))
    return bytes(raw)


INVALID_BATCHES = {
    "count_mismatch": lambda: _with_count(build_batch([b"a", b"b"], timestamp_ms=now_ms()), 3),
    "two_batches": lambda: build_batch([b"a"], timestamp_ms=now_ms())
    + build_batch([b"b"], base_offset=1, timestamp_ms=now_ms()),
    "control_batch": lambda: build_batch([b"a"], attributes=0x20, timestamp_ms=now_ms()),
    "pid_without_sequence": lambda: build_batch(
        [b"a"], producer_id=7, producer_epoch=0, timestamp_ms=now_ms()
    ),
}


@pytest.mark.parametrize("kind", sorted(INVALID_BATCHES))
def test_batch_the_broker_refuses_is_refused_with_its_own_code(
    kafka: DevCluster, walproxy: Walproxy, new_topic: Callable[..., str], kind: str
) -> None:
    """Intact batches Kafka's LogValidator refuses from a client: the proxy answers what the
    broker answers (INVALID_RECORD), and the batch reaches neither the WAL nor the broker."""
    topic = new_topic()
    batch = INVALID_BATCHES[kind]()
    answers = {}
    for via, bootstrap in (("broker", kafka.direct_bootstrap), ("proxy", walproxy.bootstrap)):
        with RawConnection(bootstrap) as conn:
            conn.send(produce_frame(topic, 0, [], acks=-1, correlation_id=3, batch=batch))
            _, body = conn.recv_response(0, 9)
            answers[via] = partition_results(body)[0][0]
            conn.send(metadata_frame(4))  # the connection stays usable
            assert conn.recv_response(3, 12)[0].correlation_id == 4
    assert answers == {"broker": INVALID_RECORD, "proxy": INVALID_RECORD}
    assert log_end(kafka.direct_bootstrap, topic, 0) == 0


def _reconciliations(proxy: OwnProxy) -> list[dict]:
    return [
        json.loads(line)
        for line in proxy.process.log_path.read_text().splitlines()
        if '"reconciliation done"' in line
    ]


def test_upstream_cut_mid_request_is_settled_without_duplicates(
    kafka: DevCluster, new_topic: Callable[..., str], tmp_path: Path, wal_env: dict[str, str]
) -> None:
    topic = new_topic()
    relay = Relay(("127.0.0.1", kafka.broker_nodes[0].client_port))
    proxy = OwnProxy(
        kafka,
        tmp_path,
        **wal_env,
        WALPROXY_PROXY_UPSTREAM=f"127.0.0.1:{relay.port}",
        # The offloader fetches beside the relay, so the one cut hits the produce answer.
        WALPROXY_OFFLOAD_UPSTREAM=f"127.0.0.1:{kafka.broker_nodes[0].client_port}",
    ).start()
    try:
        proxy.wait_ready()
        with RawConnection(proxy.bootstrap) as conn:
            conn.send(metadata_frame(1))
            conn.recv_response(3, 12)
            relay.cut_next_response()  # the produce reaches the broker, its answer is lost
            conn.send(produce_frame(topic, 0, [b"in-doubt"], acks=-1, correlation_id=2))
            assert conn.closed_by_peer(timeout=10)
        assert relay.cuts == 1
        deadline = time.monotonic() + 30
        while not any(r["found"] for r in _reconciliations(proxy)):
            assert time.monotonic() < deadline, _reconciliations(proxy)
            time.sleep(0.2)
        proxy.wait_ready()
        # It landed once: reconciliation found it in the log rather than producing it again.
        assert log_end(kafka.direct_bootstrap, topic, 0) == 1
        assert proxy.metric("walproxy_in_doubt_batches") == 0
    finally:
        proxy.kill()
        relay.close()


def test_client_gone_after_sending_produce_still_records_the_outcome(
    kafka: DevCluster, new_topic: Callable[..., str], tmp_path: Path, wal_env: dict[str, str]
) -> None:
    topic = new_topic()
    proxy = OwnProxy(kafka, tmp_path, **wal_env).start()
    try:
        proxy.wait_ready()
        conn = RawConnection(proxy.bootstrap)
        conn.send(produce_frame(topic, 0, [b"fire-and-go"], acks=-1, correlation_id=1))
        conn.close()  # the client leaves before its answer
        deadline = time.monotonic() + 20
        while log_end(kafka.direct_bootstrap, topic, 0) < 1:
            assert time.monotonic() < deadline, "the produce never reached the broker"
            time.sleep(0.2)
        time.sleep(0.5)
        assert proxy.metric("walproxy_in_doubt_batches") == 0
        assert not any(r["replayed"] for r in _reconciliations(proxy))
        assert log_end(kafka.direct_bootstrap, topic, 0) == 1
    finally:
        proxy.kill()


async def test_fsync_failure_stops_acknowledging(
    kafka: DevCluster, new_topic: Callable[..., str]
) -> None:
    """EIO on the WAL's sync fences it: the produce that hit it and every later one get
    KAFKA_STORAGE_ERROR (retriable), nothing reaches the broker, /readyz turns unready."""
    topic = new_topic()
    server, backend = in_process_server(kafka)

    def produce(value: bytes, corr: int) -> tuple[int, int]:
        with RawConnection(f"127.0.0.1:{server.port}") as conn:
            conn.send(produce_frame(topic, 0, [value], acks=-1, correlation_id=corr))
            return partition_results(conn.recv_response(0, 9)[1])[0]

    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        with trio.fail_after(30):
            while not server.ready()[0]:
                await trio.sleep(0.05)
        assert await trio.to_thread.run_sync(produce, b"before", 1) == (0, 0)
        backend.fail_next["sync"] = errno.EIO
        assert (await trio.to_thread.run_sync(produce, b"hit", 2))[0] == KAFKA_STORAGE_ERROR
        assert (await trio.to_thread.run_sync(produce, b"after", 3))[0] == KAFKA_STORAGE_ERROR
        assert server.ready() == (False, "WAL fenced after an I/O error")
        server.shutdown()
    leo = await trio.to_thread.run_sync(log_end, kafka.direct_bootstrap, topic, 0)
    assert leo == 1  # only the record acknowledged before the failure


def test_s3_wal_unreachable_stops_acknowledging(
    kafka: DevCluster, new_topic: Callable[..., str], tmp_path: Path, s3_server: S3Server
) -> None:
    """The S3 WAL's counterpart of the fsync failure: its store answers 503 past
    ``wal.s3_put_deadline_s``, the WAL fences, and the produce waiting on it and every later
    one get KAFKA_STORAGE_ERROR: nothing is acknowledged that S3 did not store, nothing
    reaches the broker, /readyz turns unready."""
    topic = new_topic()
    relay = S3Relay((s3_server.host, s3_server.port))
    env = s3_wal_env(relay.endpoint_url, s3_server.new_bucket(), "wal/node-1")
    proxy = OwnProxy(
        kafka,
        tmp_path,
        **env,
        WALPROXY_WAL_S3_REQUEST_TIMEOUT_S="0.5",
        WALPROXY_WAL_S3_PUT_DEADLINE_S="2",
    ).start()

    def produce(value: bytes, corr: int) -> tuple[int, int]:
        with RawConnection(proxy.bootstrap, timeout=30) as conn:
            conn.send(produce_frame(topic, 0, [value], acks=-1, correlation_id=corr))
            return partition_results(conn.recv_response(0, 9)[1])[0]

    try:
        proxy.wait_ready()
        assert produce(b"before", 1) == (0, 0)
        relay.set_mode("503")
        assert produce(b"hit", 2)[0] == KAFKA_STORAGE_ERROR
        relay.set_mode("pass")  # S3 is back, but a fenced WAL acknowledges nothing more
        assert produce(b"after", 3)[0] == KAFKA_STORAGE_ERROR
        status, body = proxy.get("/readyz")
        assert status == 503 and "fenced" in body, (status, body)
        assert relay.faults > 0
    finally:
        proxy.kill()
        relay.close()
    assert log_end(kafka.direct_bootstrap, topic, 0) == 1  # only what S3 stored first
