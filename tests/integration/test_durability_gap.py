"""The durability gap: with replication factor 1, Kafka acknowledges a produce (even with
acks=all) once the batch is in the page cache, so a machine crash loses acknowledged records.

The broker's log dir is on the lossy FUSE file system of tests/faultfs, which keeps only what
was fsynced when it "crashes". Kafka does not fsync on produce (``log.flush.interval.messages``
and ``log.flush.interval.ms`` are unset; segments are 1 GiB, so none rolls and nothing else
flushes within the test), so every record acknowledged before the crash is gone after it.

Direct clients only here; the same scenario through walproxy (whose WAL is written with
Direct IO before the ack) must lose nothing: add it with ``lossy_cluster(...,
with_proxy=True)`` and ``produce_crash_consume(lc, lc.cluster.bootstrap, kill_proxy=True)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .durability import LossyCluster, lossy_cluster, produce_crash_consume

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
