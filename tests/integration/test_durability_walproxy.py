"""The durability gap closed: the crash of test_durability_gap.py, with clients going through
walproxy. Kafka loses its page cache again, and walproxy restores every acknowledged batch
from its WAL at its original offset before any new produce reaches the broker.

The WAL sits on the normal disk (its own volume in production), written with O_DIRECT and
O_DSYNC, or on S3 (``wal.backend = "s3"``, moto's server): each produce scenario runs with
both (the committed-offsets one with the file WAL only). Only the broker's log dir is on the
lossy mount.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.dev.cluster import DevCluster
from tests.s3server import S3Server, quick_offload_env, s3_wal_env

from . import scrape
from .durability import (
    CommittingMember,
    LossyCluster,
    commits_behind,
    committed_offsets,
    compare,
    consume_all,
    crash_and_restart,
    create_topic,
    lossy_cluster,
    produce_acked,
    wait_leaders,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


@pytest.fixture(scope="module", params=["file", "s3"])
def proxied_kafka(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[LossyCluster]:
    """A lossy one-broker cluster whose sidecar keeps its WAL in files or on S3 (or, param
    ``offload``, in files with the S3 offloader on)."""
    env: dict[str, str] = {}
    target = None
    if request.param in ("s3", "offload"):
        s3: S3Server = request.getfixturevalue("s3_server")
        bucket = s3.new_bucket()
        if request.param == "s3":
            env = s3_wal_env(s3.endpoint_url, bucket, "wal/node-1")
        else:
            target = f"s3://{bucket}/kafka"
            # The WAL keeps what S3 covers for longer than the test (docs/durability.md "WAL
            # retention"): this lossy mount never writes back by itself.
            env = quick_offload_env(s3.endpoint_url) | {"WALPROXY_WAL_RETENTION_S": "600"}
    workdir = artifacts_dir / f"durability-walproxy-{request.param}"
    with lossy_cluster(workdir, with_proxy=True, proxy_env=env, offload_target=target) as lc:
        yield lc


def wait_proxy_ready(cluster: DevCluster, timeout: float = 120.0) -> None:
    """Until every sidecar's /readyz says ready: its reconciliation with the broker is done."""
    for node in cluster.broker_nodes:
        url = f"http://{cluster.host}:{node.admin_port}/readyz"
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError as exc:
                last = exc.read().decode().strip()
            except OSError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(f"walproxy {node.node_id} not ready after {timeout}s: {last}")
            time.sleep(0.2)


def metric(cluster: DevCluster, name: str) -> float:
    return scrape.metric(cluster.broker_nodes[0].admin_port or 0, name, cluster.host)


def _scenario(lc: LossyCluster, *, idempotence: bool, kill_proxy: bool) -> None:
    cluster = lc.cluster
    topic = create_topic(cluster.bootstrap, 3)
    acked = produce_acked(cluster.bootstrap, topic, 3000, partitions=3, idempotence=idempotence)
    repaired_before = 0.0 if kill_proxy else metric(cluster, "walproxy_repaired_batches_total")
    stats = crash_and_restart(lc, kill_proxy=kill_proxy)
    wait_proxy_ready(cluster)
    wait_leaders(cluster.direct_bootstrap, topic, 3)
    consumed = consume_all(cluster.direct_bootstrap, topic, 3)
    report = compare(acked, consumed)
    # The crash really took un-fsynced segment data with it (as in the direct-Kafka half)...
    assert stats["unsynced_write_bytes"] > 0
    assert any(f["path"].endswith(".log") for f in stats["files"])
    # ...and walproxy put back every acknowledged record, at its offset, once.
    assert report.intact, report.summary()
    assert sum(len(v) for v in consumed.values()) == len(acked), report.summary()
    repaired = metric(cluster, "walproxy_repaired_batches_total") - repaired_before
    assert repaired > 0, "nothing was repaired: did the broker really lose its tail?"
    assert metric(cluster, "walproxy_offset_mismatches_total") == 0


def test_machine_crash_loses_no_acknowledged_record(proxied_kafka: LossyCluster) -> None:
    """Broker and sidecar die together; the sidecar repairs the broker when it restarts."""
    _scenario(proxied_kafka, idempotence=True, kill_proxy=True)


def test_broker_restart_without_page_cache_is_repaired_by_running_proxy(
    proxied_kafka: LossyCluster,
) -> None:
    """Only the broker dies (and loses its page cache); the running sidecar notices the
    broker went away and repairs it when it is back. Non-idempotent producer this time."""
    _scenario(proxied_kafka, idempotence=False, kill_proxy=False)


COMMIT_RECORDS = 120


@pytest.mark.parametrize("proxied_kafka", ["file"], indirect=True)
def test_committed_offsets_lost_with_the_page_cache_are_restored(
    proxied_kafka: LossyCluster,
) -> None:
    """A classic and a KIP-848 consumer group (confluent-kafka) commit through walproxy and
    stay subscribed while the coordinating broker dies and comes back without its page cache
    (its ``__consumer_offsets`` tail is gone: test_durability_gap.py shows the regression
    without walproxy). The running sidecar holds the group APIs, finds each group behind its
    last acknowledged commit and commits it again before the members rejoin: afterwards no
    group's committed offset is behind what its client was told (read through walproxy and
    directly, after the members read on past the records produced after the crash)."""
    lc = proxied_kafka
    cluster = lc.cluster
    started = time.monotonic()
    topic = create_topic(cluster.bootstrap, 3)
    produce_acked(cluster.bootstrap, topic, COMMIT_RECORDS, partitions=3)
    members = [
        CommittingMember(cluster.bootstrap, topic, f"g-{p}-{topic}", p, COMMIT_RECORDS)
        for p in ("classic", "consumer")
    ]
    for m in members:
        m.start()
    for m in members:
        assert m.caught_up.wait(90), f"{m.group}: did not read its records ({m.error})"
    acked = {m.group: dict(m.acked) for m in members}
    restored_before = metric(cluster, "walproxy_committed_offsets_restored_total")
    for m in members:
        m.mark()
    crashed = time.monotonic()
    stats = crash_and_restart(lc, kill_proxy=False)
    assert stats["unsynced_write_bytes"] > 0
    assert any("__consumer_offsets" in f["path"] for f in stats["files"]), stats["files"]
    deadline = time.monotonic() + 150
    while metric(cluster, "walproxy_committed_offsets_restored_total") == restored_before:
        assert time.monotonic() < deadline, "no committed offset restored after the crash"
        time.sleep(0.5)
    wait_proxy_ready(cluster)
    repaired_s = time.monotonic() - crashed
    # The members rejoin and read on from their committed offsets: 10 new records each.
    produce_acked(cluster.bootstrap, topic, 30, partitions=3)
    deadline = time.monotonic() + 90
    while any(len(m.after) < 30 for m in members):
        assert time.monotonic() < deadline, {m.group: len(m.after) for m in members}
        time.sleep(0.5)
    for m in members:
        m.stop()
    # Through walproxy (what the group's consumers see) and from the broker directly.
    for bootstrap in (cluster.bootstrap, cluster.direct_bootstrap):
        served = {g: committed_offsets(bootstrap, g, topic, 3) for g in acked}
        assert not commits_behind(acked, served), (bootstrap, acked, served)
    restored = metric(cluster, "walproxy_committed_offsets_restored_total") - restored_before
    assert metric(cluster, "walproxy_committed_offsets_unrestored_total") == 0
    offsets = sum(len(v) for v in acked.values())
    # The KIP-848 member keeps its position across the crash and validates it against the new
    # leader epoch (KIP-320); the repaired batches are under that epoch, and without the
    # OffsetForLeaderEpoch filter (proxy/kafka/leader_epochs.py) the broker's answer made it
    # seek back to 0 and read 120 records again.
    reread = {m.protocol: sum(1 for p, o in m.after if o < m.acked[p]) for m in members}
    print(
        f"commit requests acknowledged: {sum(m.commits for m in members)} ({offsets} "
        f"partition offsets in 2 groups); restored after the page-cache loss: {restored:.0f} "
        f"({repaired_s:.1f}s after the crash); behind afterwards: 0; records the live members "
        f"re-read below their acknowledged commit: {reread}; {time.monotonic() - started:.1f}s"
    )
    assert restored <= offsets
    assert not any(reread.values()), f"records re-read below the acknowledged commit: {reread}"


@pytest.mark.parametrize("proxied_kafka", ["offload"], indirect=True)
def test_the_s3_copy_completes_after_the_broker_lost_what_s3_had(
    proxied_kafka: LossyCluster,
) -> None:
    """The offloader copied batches the broker then lost with its page cache: the broker's log
    may end below the S3 copy when the offloader looks, and then it stops (it must not copy
    a different history over S3's). The sidecar restores the lost tail from its WAL at the
    original offsets; the offloader compares the batches S3 has past the point the log fell
    back to with the broker's, finds them the same and goes on: the copy catches up, and the
    WAL can be trimmed again. (Found by the nemesis run, seed 421037909: the stopped partitions held
    the WAL's trim point until the WAL was full and produce to them waited for good.)"""
    lc = proxied_kafka
    cluster = lc.cluster
    topic = create_topic(cluster.bootstrap, 3)
    produce_acked(cluster.bootstrap, topic, 3000, partitions=3)
    # S3 has the whole log (every byte of it still only in the page cache)
    deadline = time.monotonic() + 60
    while sum(_offloaded(cluster, topic, 3).values()) < 3000:
        assert time.monotonic() < deadline, "the offloader did not copy the topic"
        time.sleep(0.3)
    assert metric(cluster, "walproxy_offload_diverged_partitions") == 0
    stats = crash_and_restart(lc, kill_proxy=False)
    assert stats["unsynced_write_bytes"] > 0
    wait_proxy_ready(cluster)
    produce_acked(cluster.bootstrap, topic, 300, partitions=3)  # and it goes on from there
    consumed = consume_all(cluster.direct_bootstrap, topic, 3)
    assert sum(len(v) for v in consumed.values()) == 3300
    ends = {p: len(v) for p, v in consumed.items()}  # no transactions: offsets 0..n-1
    deadline = time.monotonic() + 60
    while (copied := _offloaded(cluster, topic, 3)) != ends or metric(
        cluster, "walproxy_offload_diverged_partitions"
    ):
        assert time.monotonic() < deadline, (
            f"offload did not resume: S3 has {copied}, the broker {ends}, diverged "
            f"{metric(cluster, 'walproxy_offload_diverged_partitions')}"
        )
        time.sleep(0.5)
    log = (cluster.broker_nodes[0].directory / "walproxy.log").read_text()
    assert "stopped for good" not in log
    # Whether the tailer saw the fallen log before the repair restored it is a race (seen
    # here both ways); when it did, offload resumed on the comparison
    # (tests/offload/test_offload_kafka.py forces that case against this broker).
    diverged = log.count("the broker's log ends at")
    assert log.count("offload of a partition resumed") == diverged
    print(f"partitions that diverged and resumed: {diverged}; S3 copy complete: {ends}")


def _offloaded(cluster: DevCluster, topic: str, partitions: int) -> dict[int, int]:
    """Per partition, the next offset the S3 copy needs (the sidecar's gauge)."""
    port = cluster.broker_nodes[0].admin_port or 0
    return {
        p: int(
            scrape.metric(
                port,
                f'walproxy_offload_offloaded_offset{{partition="{p}",topic="{topic}"}}',
                cluster.host,
            )
        )
        for p in range(partitions)
    }
