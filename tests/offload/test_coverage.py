"""What the S3 copy covers, for WAL trimming: one offloader (sidecar) and many (gateway)."""

from __future__ import annotations

import uuid

from offload.coverage import AnyCoverage, Coverage

TID = uuid.uuid4()


def test_committed_offsets_are_covered_and_later_ones_not() -> None:
    cov = Coverage()
    cov.update("t", TID, 0, next_offset=10, synced_at=5.0)
    assert cov.covers(("t", None, 0), 9, 1.0)
    assert not cov.covers(("t", None, 0), 10, 1.0)
    assert cov.covers((None, TID, 0), 9, 1.0)  # by topic id (Produce v13)
    assert not cov.covers(("t", None, 1), 0, 1.0)  # another partition: unknown, kept
    # acks=0 (offset unknown): covered once a commit happened after the batch settled
    assert cov.covers(("t", None, 0), None, 4.0)
    assert not cov.covers(("t", None, 0), None, 6.0)


def test_sidecar_counts_a_partition_led_elsewhere_as_covered() -> None:
    cov = Coverage()
    cov.update("t", TID, 0, 10, 1.0)
    cov.release("t", TID, 0)
    assert cov.covers(("t", None, 0), 500, 1.0)  # the new leader's sidecar copies it


def test_gateway_offloader_does_not_cover_what_another_broker_leads() -> None:
    cov = Coverage(led_elsewhere_covered=False)
    cov.update("t", TID, 0, 10, 1.0)
    cov.release("t", TID, 0)
    assert not cov.covers(("t", None, 0), 5, 1.0)
    cov.release("t", TID, None)  # deleted: nobody will copy it, nothing to keep
    assert cov.covers(("t", None, 0), 500, 1.0)


def test_any_coverage_asks_every_brokers_offloader() -> None:
    a, b = Coverage(led_elsewhere_covered=False), Coverage(led_elsewhere_covered=False)
    live = [a, b]
    combined = AnyCoverage(lambda: live)
    a.update("t", TID, 0, 10, 1.0)
    a.release("t", TID, 0)  # the leader moved from a to b ...
    assert not combined.covers(("t", None, 0), 12, 1.0)  # ... before b committed 12
    b.update("t", TID, 0, 20, 2.0)
    assert combined.covers(("t", None, 0), 12, 1.0)
    live.remove(b)  # b's broker left the cluster: what only b vouched for is kept again
    assert not combined.covers(("t", None, 0), 12, 1.0)


def test_a_groups_commits_wait_for_its_consumer_offsets_partition() -> None:
    from proxy.kafka.groups import group_partition

    cov = Coverage()
    assert not cov.covers("g", None, 1.0)  # partition count unknown yet: kept
    cov.note_partition_count("__consumer_offsets", 50)
    p = group_partition("g", 50)
    assert not cov.covers("g", None, 1.0)  # its partition was never offloaded: kept
    cov.update("__consumer_offsets", TID, (p + 1) % 50, 3, 9.0)
    assert not cov.covers("g", None, 1.0)  # another group's partition does not count
    cov.update("__consumer_offsets", TID, p, 3, 9.0)
    assert cov.covers("g", None, 1.0)  # a fetch after the commit settled was committed
    assert not cov.covers("g", None, 9.5)
