"""The offloader against real Kafka and a real S3 HTTP server (moto), with injected S3 faults.

One broker with its walproxy sidecar offloading to moto through :class:`S3Relay`, shared by
the tests of this module. The S3 copy is compared byte for byte with what a Fetch returns
from the broker's DIRECT listener (which bypasses walproxy).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from offload import commit, layout, segment_codec
from offload import manifest as mf
from offload.offloader import Offloader
from offload.partition import Diverged
from offload.store import S3Store
from proxy.client.upstream_client import UpstreamClient
from proxy.config import OffloadSection
from proxy.dev.cluster import DevCluster
from tests.integration.scrape import metric
from tests.s3server import S3Server, quick_offload_env

from .s3relay import S3Relay

pytestmark = pytest.mark.kafka


class Env:
    def __init__(self, cluster: DevCluster, relay: S3Relay, store: S3Store, server: S3Server):
        self.cluster = cluster
        self.relay = relay
        self.store = store
        self.server = server
        node = cluster.broker_nodes[0]
        self.admin_port = node.admin_port
        self.direct = ("127.0.0.1", node.direct_port)

    def metric(self, name: str) -> float:
        return metric(self.admin_port, name)


@pytest.fixture(scope="module")
def env(s3_server: S3Server, artifacts_dir: Path) -> Iterator[Env]:
    bucket = s3_server.new_bucket()
    relay = S3Relay((s3_server.host, s3_server.port))
    workdir = artifacts_dir / "offload-kafka"
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    cluster = DevCluster(
        workdir,
        brokers=1,
        offload_targets={1: f"s3://{bucket}/pfx"},
        proxy_env=quick_offload_env(relay.endpoint_url),
    )
    cluster.start()
    store = S3Store(bucket, "pfx/", endpoint_url=s3_server.endpoint_url, region="us-east-1")
    try:
        yield Env(cluster, relay, store, s3_server)
    finally:
        cluster.stop()
        relay.close()


# -- helpers ---------------------------------------------------------------------------------
def create_topic(cluster: DevCluster, partitions: int = 1) -> str:
    name = f"off-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(60)
    return name


async def broker_partitions(env: Env) -> dict[tuple[str, int], tuple[uuid.UUID, int, int]]:
    """(topic, partition) -> (topic id, log start, high watermark), from the DIRECT listener."""
    out = {}
    async with await UpstreamClient.connect(*env.direct) as client:
        info = await client.cluster()
        for name, t in info.topics.items():
            for p in t.partitions:
                r = await client.fetch(name, p, 0, max_bytes=1)
                out[(name, p)] = (t.topic_id, r.log_start_offset, r.high_watermark)
    return out


async def broker_log(env: Env, topic: str, partition: int, start: int, end: int) -> bytes:
    """The partition's batches start..end as Fetch returns them from the broker."""
    out = bytearray()
    offset = start
    async with await UpstreamClient.connect(*env.direct) as client:
        while offset < end:
            r = await client.fetch(topic, partition, offset, max_bytes=4 << 20)
            n = segment_codec.whole_batches(r.records)
            assert n, f"no whole batch at {topic}-{partition}@{offset}"
            info = segment_codec.describe(r.records[:n], offset)
            out += r.records[:n]
            offset = info.last_offset + 1
    return bytes(out)


def s3_log(store: S3Store, m: mf.Manifest) -> bytes:
    return b"".join(segment_codec.decode(store.get(s.key).data, s) for s in m.segments)


def manifest_of(env: Env, topic_id: uuid.UUID, partition: int) -> mf.Manifest | None:
    key = layout.manifest_key(env.cluster.cluster_id, topic_id, partition)
    return commit.read_manifest(env.store, key).manifest


async def wait_copied(env: Env, wanted, timeout: float = 60.0) -> dict:
    """Until every wanted partition's manifest reaches the broker's high watermark."""
    deadline = time.monotonic() + timeout
    while True:
        parts = await broker_partitions(env)
        behind = {}
        for tp in wanted:
            tid, _, hw = parts[tp]
            m = manifest_of(env, tid, tp[1])
            if m is None or m.next_offset < hw:
                behind[tp] = (m.next_offset if m else None, hw)
        if not behind:
            return parts
        if time.monotonic() > deadline:
            raise AssertionError(f"S3 copy incomplete after {timeout}s: {behind}")
        await trio.sleep(0.3)


async def assert_byte_exact(env: Env, tps) -> int:
    parts = await broker_partitions(env)
    total = 0
    for tp in tps:
        tid, start, hw = parts[tp]
        m = manifest_of(env, tid, tp[1])
        assert m is not None and m.next_offset == hw
        got = s3_log(env.store, m)
        want = await broker_log(env, tp[0], tp[1], m.segments[0].base_offset, hw)
        assert got == want, f"{tp}: S3 copy differs from the broker's log"
        assert m.log_start_offset == start
        total += len(got)
    return total


def produce(bootstrap: str, topic: str, n: int, size: int = 100, **conf) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", **conf})
    errors = []
    for i in range(n):
        p.produce(
            topic, b"x%06d" % i + b"." * size, on_delivery=lambda e, _m: e and errors.append(e)
        )
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0 and not errors, errors


# -- tests -----------------------------------------------------------------------------------
async def test_byte_exact_copy_with_transactions_and_committed_offsets(env: Env) -> None:
    bootstrap = env.cluster.bootstrap
    topic = create_topic(env.cluster)
    produce(bootstrap, topic, 3000, **{"compression.type": "lz4"})
    txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}"})
    txn.init_transactions(30)
    for commit_it in (True, False):
        txn.begin_transaction()
        for i in range(50):
            txn.produce(topic, b"t%d" % i)
        txn.flush(30)  # so the aborted records are in the log too (abort purges unsent ones)
        (txn.commit_transaction if commit_it else txn.abort_transaction)(30)
    group = f"g-{topic}"
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    from confluent_kafka import KafkaException

    for attempt in range(60):  # the group coordinator may still be loading
        try:
            consumer.commit(offsets=[TopicPartition(topic, 0, 1234)], asynchronous=False)
            break
        except KafkaException:
            if attempt == 59:
                raise
            time.sleep(0.5)
    consumer.close()

    # Transaction markers are written after EndTxn returns: wait for both (3000+2x(50+1)).
    deadline = time.monotonic() + 30
    while (await broker_partitions(env))[(topic, 0)][2] < 3102:
        assert time.monotonic() < deadline, "transaction markers not written"
        await trio.sleep(0.2)
    parts = await broker_partitions(env)
    with_data = [
        tp
        for tp, (_, start, hw) in parts.items()
        if hw > start and (tp[0] == topic or tp[0].startswith("__"))
    ]
    assert (topic, 0) in with_data
    assert any(tp[0] == "__consumer_offsets" for tp in with_data)
    assert any(tp[0] == "__transaction_state" for tp in with_data)
    await wait_copied(env, with_data)
    assert await assert_byte_exact(env, with_data) > 0
    # Control batches (commit and abort markers) are in the copy.
    m = manifest_of(env, parts[(topic, 0)][0], 0)
    assert m is not None
    log = s3_log(env.store, m)
    from proxy.kafka.record_batch import iter_batches

    headers = list(iter_batches(log))
    assert len([h for h in headers if h.is_control]) == 2  # commit and abort markers
    # 3000 plain records and 2 x 50 transactional ones (the aborted ones too), as stored.
    assert sum(h.record_count for h in headers if not h.is_control) == 3100
    assert env.metric("walproxy_offload_commits_total") > 0
    assert env.metric("walproxy_offload_fenced") == 0


async def test_s3_faults_are_retried_and_the_copy_completes(env: Env) -> None:
    topic = create_topic(env.cluster)
    before = env.metric("walproxy_offload_s3_errors_total")
    produce(env.cluster.bootstrap, topic, 500)
    # 503s, then resets, then stalls past the 2 s request deadline; produce goes on meanwhile.
    for mode, seconds in (("503", 3), ("reset", 3), ("stall", 5)):
        env.relay.set_mode(mode)
        produce(env.cluster.bootstrap, topic, 500)
        await trio.sleep(seconds)
    env.relay.set_mode("pass")
    await wait_copied(env, [(topic, 0)], timeout=90)
    await assert_byte_exact(env, [(topic, 0)])
    assert env.relay.faults > 0
    assert env.metric("walproxy_offload_s3_errors_total") > before
    assert env.metric("walproxy_offload_fenced") == 0


async def test_wal_is_trimmed_only_after_the_s3_commit(env: Env) -> None:
    topic = create_topic(env.cluster)
    produce(env.cluster.bootstrap, topic, 200)
    await wait_copied(env, [(topic, 0)])
    await trio.sleep(1.5)  # a trim round after the commit
    last_before = env.metric("walproxy_offload_wal_last_lsn")
    trimmed_before = env.metric("walproxy_offload_wal_trimmed_lsn")
    assert trimmed_before > 0
    env.relay.set_mode("503")  # nothing new can be committed
    try:
        produce(env.cluster.bootstrap, topic, 200)
        await trio.sleep(3)
        # New batches are durable in the WAL but not in S3: the trim point stays below them.
        assert env.metric("walproxy_offload_wal_last_lsn") > last_before
        assert env.metric("walproxy_offload_wal_trimmed_lsn") <= last_before
    finally:
        env.relay.set_mode("pass")
    await wait_copied(env, [(topic, 0)])
    deadline = time.monotonic() + 20
    while env.metric("walproxy_offload_wal_trimmed_lsn") <= last_before:
        assert time.monotonic() < deadline, "WAL not trimmed after the commit"
        await trio.sleep(0.3)


async def test_an_older_epoch_writer_is_fenced_and_changes_nothing(
    env: Env, s3_server: S3Server
) -> None:
    """Two in-test offloaders on their own prefix, fetching from the DIRECT listener."""
    bucket = s3_server.new_bucket()
    cfg = OffloadSection(
        target=f"s3://{bucket}/fence", max_lag_s=0.2, metadata_interval_s=1.0, poll_interval_s=0.2
    )

    def store() -> S3Store:
        return S3Store(bucket, "fence/", endpoint_url=s3_server.endpoint_url, region="us-east-1")

    topic = create_topic(env.cluster)
    produce(env.cluster.bootstrap, topic, 100)
    old = Offloader(cfg, env.direct, 1, store=store(), owner="old")
    async with trio.open_nursery() as nursery:
        old_result: list[BaseException] = []

        async def run_old() -> None:
            try:
                await old.run()
            except mf.FencedError as exc:
                old_result.append(exc)

        nursery.start_soon(run_old)
        await old.started.wait()
        tid = (await broker_partitions(env))[(topic, 0)][0]
        key = layout.manifest_key(env.cluster.cluster_id, tid, 0)
        s = store()
        for _ in range(100):
            m = commit.read_manifest(s, key).manifest
            if m is not None and m.next_offset >= 100:
                break
            await trio.sleep(0.1)
        assert m is not None and m.writer_epoch == 1
        # A new writer takes the lease: the running one is now the older epoch.
        new = Offloader(cfg, env.direct, 1, store=store(), owner="new")
        nursery.start_soon(new.run)
        await new.started.wait()
        assert new.lease is not None and new.lease.epoch == 2
        produce(env.cluster.bootstrap, topic, 100)
        with trio.fail_after(30):
            while not old_result:
                await trio.sleep(0.1)
        assert old.fenced and "epoch 2" in old.fenced
        with trio.fail_after(30):
            while commit.read_manifest(s, key).manifest.next_offset < 200:
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    prefix = layout.partition_prefix(env.cluster.cluster_id, tid, 0)
    keys = [o.key for o in s.list(prefix)]
    m = commit.read_manifest(s, key).manifest
    assert m.writer_epoch == 2
    # The fenced writer wrote nothing for the records produced after the takeover: its
    # (epoch 1) segments of this partition end below offset 100; the rest is epoch 2's.
    names = [layout.parse_segment_key(k) for k in keys if "/seg/" in k]
    e1 = [n for n in names if n.writer_epoch == 1]
    assert e1 and all(n.last_offset < 100 for n in e1)


async def test_verify_passes_on_the_copy_and_names_a_corrupt_object(
    env: Env, tmp_path: Path
) -> None:
    import subprocess
    import sys

    topic = create_topic(env.cluster)
    produce(env.cluster.bootstrap, topic, 300)
    parts = await wait_copied(env, [(topic, 0)])
    cfg = tmp_path / "verify.toml"
    cfg.write_text(
        "[proxy]\n"
        f'upstream = "127.0.0.1:{env.direct[1]}"\n'
        "node_id = 1\n"
        "[offload]\n"
        f'target = "s3://{env.store.bucket}/pfx"\n'
        f's3_endpoint_url = "{env.server.endpoint_url}"\n'
        's3_region = "us-east-1"\n'
    )

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "proxy", "offload", "verify", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    ok = verify()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert " 0 anomalies" in ok.stdout
    m = manifest_of(env, parts[(topic, 0)][0], 0)
    assert m is not None
    key = m.segments[-1].key
    original = env.store.get(key).data
    env.store.put(key, original[:-1] + bytes([original[-1] ^ 0xFF]))  # one flipped byte
    try:
        bad = verify()
    finally:
        env.store.put(key, original)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"ANOMALY {topic}-0" in bad.stdout and key in bad.stdout


async def test_a_diverged_partition_resumes_only_on_the_same_batches(
    env: Env, s3_server: S3Server
) -> None:
    """An in-test offloader (its own prefix, the DIRECT listener) copies two partitions; then
    each is told its broker log had fallen below the S3 copy (as the tailer finds after a lost
    page cache, before the sidecar's repair). Partition 0's log holds S3's batches again (what
    the repair does): the next discovery compares them and offload goes on. Partition 1 is
    given partition 0's segments as its S3 copy, other records at the same offsets (a
    different history): it stops for good."""
    import dataclasses

    bucket = s3_server.new_bucket()
    cfg = OffloadSection(
        target=f"s3://{bucket}/diverge", max_lag_s=0.2, metadata_interval_s=0.5, poll_interval_s=0.2
    )
    store = S3Store(bucket, "diverge/", endpoint_url=s3_server.endpoint_url, region="us-east-1")
    topic = create_topic(env.cluster, partitions=2)

    def produce_each(n: int) -> None:
        p = Producer({"bootstrap.servers": env.cluster.bootstrap, "linger.ms": 5, "acks": "all"})
        for i in range(n):
            for part in (0, 1):
                p.produce(topic, b"p%d-%06d" % (part, i), partition=part)
        assert p.flush(60) == 0

    produce_each(200)
    off = Offloader(cfg, env.direct, 1, store=store, owner="diverge")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(off.run)
        await off.started.wait()
        s0, s1 = off.partitions[(topic, 0)], off.partitions[(topic, 1)]
        with trio.fail_after(30):
            while s0.committed_next < 200 or s1.committed_next < 200:
                await trio.sleep(0.1)
        s1.manifest = dataclasses.replace(s1.manifest, segments=s0.manifest.segments)
        for s in (s0, s1):
            with pytest.raises(Diverged):
                s.check_not_behind(150)  # what the tailer saw: the log ends at 150
        with trio.fail_after(30):
            while s0.stopped or s1.diverged_at is not None:
                await trio.sleep(0.1)
        assert "differs from the S3 copy" in s1.stopped
        produce_each(100)  # partition 0 goes on from its manifest; partition 1 stays stopped
        with trio.fail_after(30):
            while s0.committed_next < 300:
                await trio.sleep(0.1)
        assert s1.stopped and s1.committed_next == 200
        nursery.cancel_scope.cancel()
    tid = (await broker_partitions(env))[(topic, 0)][0]
    m0 = manifest_of_in(store, env.cluster.cluster_id, tid, 0)
    assert m0 is not None and m0.next_offset == 300
    want = await broker_log(env, topic, 0, 0, 300)
    assert s3_log(store, m0) == want  # byte for byte, across the pause


def manifest_of_in(store: S3Store, cluster_id: str, topic_id: uuid.UUID, p: int):
    return commit.read_manifest(store, layout.manifest_key(cluster_id, topic_id, p)).manifest
