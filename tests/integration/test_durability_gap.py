"""The durability gap: with replication factor 1, Kafka acknowledges a produce (even with
acks=all) once the batch is in the page cache, so a machine crash loses acknowledged records.

The broker's log dir is on the lossy FUSE file system of tests/faultfs, which keeps only what
was fsynced when it "crashes". Kafka does not fsync on produce (``log.flush.interval.messages``
and ``log.flush.interval.ms`` are unset; segments are 1 GiB, so none rolls and nothing else
flushes within the test), so every record acknowledged before the crash is gone after it.

Direct clients only here; the same scenario through walproxy (whose WAL is written with
Direct IO before the ack) must lose nothing: add it with ``lossy_cluster(...,
with_proxy=True)`` and ``produce_crash_consume(lc, lc.cluster.bootstrap, kill_proxy=True)``.

Committed consumer offsets go the same way: the group coordinator appends a commit to its
``__consumer_offsets`` partition and answers it without an fsync, so the crash takes the
commits (and the groups) with it (the control of
test_durability_walproxy.py::test_committed_offsets_lost_with_the_page_cache_are_restored).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .durability import (
    LossyCluster,
    commits_behind,
    committed_offsets,
    consume_and_commit,
    crash_and_restart,
    create_topic,
    lossy_cluster,
    produce_acked,
    produce_crash_consume,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def direct_kafka(artifacts_dir: Path) -> Iterator[LossyCluster]:
    """One KRaft node, no walproxy, log.dirs on the lossy mount (artifacts: durability-direct)."""
    with lossy_cluster(artifacts_dir / "durability-direct", with_proxy=False) as lc:
        yield lc


def test_kafka_loses_acknowledged_records_on_crash(direct_kafka: LossyCluster) -> None:
    lc = direct_kafka
    run = produce_crash_consume(lc, lc.cluster.direct_bootstrap, count=3000, partitions=3)
    print(run.describe())
    # The crash really dropped un-fsynced segment data (not a test-harness no-op)...
    assert run.crash_stats["unsynced_write_bytes"] > 0, run.describe()
    assert any(f["path"].endswith(".log") for f in run.crash_stats["files"]), run.describe()
    # ...and acknowledged records are gone: the gap walproxy closes.
    assert run.report.lost, f"no acknowledged record was lost:\n{run.describe()}"
    # What survives is consistent: nothing duplicated, nothing at another offset.
    assert not run.report.duplicates and not run.report.moved, run.describe()


def test_fsynced_records_survive_crash(direct_kafka: LossyCluster) -> None:
    """Control: the same crash keeps everything Kafka fsynced. ``flush.messages=1`` makes the
    broker fsync after every append; 1 MiB segments make it roll (fsync, mmap'd index trims,
    producer-state snapshots) during the run. Proves the harness loses only un-synced data
    and that Kafka runs and recovers correctly on the lossy mount."""
    lc = direct_kafka
    run = produce_crash_consume(
        lc,
        lc.cluster.direct_bootstrap,
        count=2400,  # 800 x ~2 KiB per partition: more than one 1 MiB segment
        partitions=3,
        value_size=2000,
        topic_config={"flush.messages": "1", "segment.bytes": str(1 << 20)},
    )
    print(run.describe())
    assert run.report.intact, run.describe()
    assert sum(len(v) for v in run.consumed.values()) == len(run.acked), run.describe()
    segments = {
        p.name for p in (lc.mount.backing / f"{run.topic}-0").iterdir() if p.suffix == ".log"
    }
    assert len(segments) >= 2, f"expected a segment roll, found {sorted(segments)}"


def test_kafka_loses_acknowledged_commits_on_crash(direct_kafka: LossyCluster) -> None:
    """A classic and a KIP-848 group commit directly; after the crash the coordinator serves
    committed offsets behind what it acknowledged (the regression walproxy repairs)."""
    lc = direct_kafka
    bootstrap = lc.cluster.direct_bootstrap
    started = time.monotonic()
    topic = create_topic(bootstrap, 3)
    produce_acked(bootstrap, topic, 120, partitions=3)
    acked = {
        f"g-{protocol}-{topic}": consume_and_commit(
            bootstrap, topic, f"g-{protocol}-{topic}", protocol, records=120, partitions=3
        )["acked"]
        for protocol in ("classic", "consumer")
    }
    stats = crash_and_restart(lc)
    assert any("__consumer_offsets" in f["path"] for f in stats["files"]), stats["files"]
    served = {g: committed_offsets(bootstrap, g, topic, 3) for g in acked}
    behind = commits_behind(acked, served)
    print(
        f"acknowledged {sum(len(v) for v in acked.values())} partition offsets in 2 groups; "
        f"behind after the crash: {len(behind)} {behind}; {time.monotonic() - started:.1f}s"
    )
    assert behind, f"no committed offset regressed: {acked} {served}"
    assert {g for g, _ in behind} == set(acked)  # both kinds of group lost their commits
