"""A broker loses its disk and ``walproxy rebuild`` restores it from S3 plus the WAL tail.

One controller, one broker and its walproxy sidecar, S3 from moto's server. Records are
produced with Kafka's VerifiableProducer through walproxy and a consumer group commits
offsets; then the broker is SIGKILLed and its whole state deleted (``log.dirs`` and
``metadata.log.dir``), ``walproxy rebuild`` runs with the sidecar's config, and the
unmodified broker starts again: every acknowledged record must be read back at its
original offset, no duplicates, the group's committed offsets intact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.store import S3Store
from proxy.devcluster import DevCluster

from . import clients as c
from . import rebuild_harness as h
from .durability import compare, consume_all, wait_leaders

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster(artifacts_dir: Path) -> Iterator[DevCluster]:
    cl = DevCluster(
        artifacts_dir / "rebuild",
        brokers=1,
        separate_controller=True,
        heap="512m",
        # keep WAL entries until the rebuild has read them (the offloader trims after upload)
        proxy_env={"WALPROXY_WAL_RETENTION_S": "3600"},
    )
    import shutil

    shutil.rmtree(cl.workdir, ignore_errors=True)
    cl.start()
    try:
        yield cl
    finally:
        cl.stop()


def _create_topic(cluster: DevCluster, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = c.unique_tag("rebuild")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(60)
    wait_leaders(cluster.direct_bootstrap, name, partitions)
    return name


def _report(run: h.RebuildRun) -> dict:
    assert run.returncode == 0, f"rebuild exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    return json.loads(run.stdout[run.stdout.index("\n{") :])


def test_s3_copy_behind_wal_tail_missing_object_then_resume(
    cluster: DevCluster, s3_server, s3_bucket: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The S3 copy ends half-way (offload paused); the rest exists only in the WAL. The first
    rebuild meets a segment object that is gone and refuses; once it is back, a re-run
    keeps the partitions it finished and completes."""
    partitions = 3
    topic = _create_topic(cluster, partitions)
    acked = h.verifiable_produce(cluster, topic, 3000, tmp_path)
    group = c.unique_tag("rebuild-grp")
    committed = {0: 111, 1: 500, 2: 999}
    h.commit_offsets(cluster.bootstrap, group, topic, committed)
    assert c.committed_offsets(cluster.bootstrap, group, topic, partitions) == committed

    store = S3Store(s3_bucket, "kafka/", endpoint_url=s3_server.endpoint_url)
    ends = {p: max(a.offset for a in acked if a.partition == p) + 1 for p in range(partitions)}
    copied = h.copy_broker_log(cluster, store, lambda t, p: ends[p] // 2 if t == topic else None)
    assert all(0 < copied[(topic, p)] < ends[p] for p in range(partitions)), (copied, ends)

    h.lose_disk(cluster)
    target = ["--target", f"s3://{s3_bucket}/kafka", "--s3-endpoint-url", s3_server.endpoint_url]

    # an object the manifest lists is missing: refused, nothing a broker would start on
    victim = next(
        o
        for o in store.list("v1/")
        if "/seg/" in o.key and o.key.count("/") > 4 and topic_id_of(store, topic) in o.key
    )
    saved = store.get(victim.key).data
    store.delete(victim.key)
    refused = h.run_rebuild(cluster, *target)
    assert refused.returncode == 1, refused.stderr
    assert "refused" in refused.stderr and victim.key in refused.stderr, refused.stderr
    data, _ = h.broker_dirs(cluster)
    assert not (data / "meta.properties").exists()

    store.put(victim.key, saved)
    run = h.run_rebuild(cluster, *target)
    report = _report(run)
    assert report["skipped_finished"] > 0, run.stdout  # resumed, not restarted
    assert report["tail_batches"] > 0 and report["wal_in_doubt"] == 0
    assert "MB/s" in run.stdout

    h.start_again(cluster)
    consumed = consume_all(cluster.direct_bootstrap, topic, partitions, timeout=90)
    result = compare(acked, consumed)
    assert result.intact, result.summary()
    assert sum(len(v) for v in consumed.values()) == len(acked)
    assert c.committed_offsets(cluster.bootstrap, group, topic, partitions) == committed
    # and the broker takes new writes at the next offsets
    more = h.verifiable_produce(cluster, topic, 30, tmp_path)
    assert min(a.offset for a in more if a.partition == 0) == ends[0]


def topic_id_of(store: S3Store, topic: str) -> str:
    """The topic id text under which the stand-in offloader stored ``topic``."""
    from offload.node_files import decode_broker_info

    key = next(o.key for o in store.list("v1/") if o.key.endswith("/broker.json"))
    info = decode_broker_info(store.get(key).data)
    from offload.layout import topic_id_text

    return topic_id_text(info.topics[topic].topic_id)
