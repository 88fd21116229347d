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


def test_what_another_broker_leads_is_covered_though_never_offloaded_here() -> None:
    """After a restart the WAL holds a group's commits in a ``__consumer_offsets`` partition
    whose leadership moved while the sidecar was down: this process never offloads it, the
    new leader's sidecar does (the nemesis run of seed 421037909 had such a commit hold the
    WAL's trim until the WAL was full)."""
    from proxy.kafka.groups import group_partition

    cov = Coverage()
    cov.note_partition_count("__consumer_offsets", 10)
    p = group_partition("g", 10)
    assert not cov.covers("g", None, 1.0)
    cov.led_elsewhere("__consumer_offsets", TID, p)
    assert cov.covers("g", None, 1.0)
    other = uuid.uuid4()
    cov.led_elsewhere("t", other, 3)
    assert cov.covers((None, other, 3), 10, 1.0)  # by topic id too
    # it comes back here: from then on only what this offloader committed counts
    cov.update("__consumer_offsets", TID, p, 3, 5.0)
    assert not cov.covers("g", None, 6.0)
    cov.led_elsewhere("__consumer_offsets", TID, p)  # metadata lagging: ours, not released
    assert not cov.covers("g", None, 6.0)
    gateway = Coverage(led_elsewhere_covered=False)
    gateway.led_elsewhere("t", TID, 3)
    assert not gateway.covers(("t", None, 3), 10, 1.0)  # the leader's offloader decides


def test_a_transactional_batch_is_covered_once_the_copy_holds_its_marker() -> None:
    cov = Coverage()
    batch = ("t", None, 0, 7)  # producer 7's transactional batch, offsets 3..4
    cov.update("t", TID, 0, 5, 1.0, {7: 3})  # S3 has the batch; 7's transaction is open
    assert not cov.covers(batch, 4, 1.0)
    assert cov.covers(("t", None, 0), 4, 1.0)  # a plain batch there is covered
    assert cov.covers(("t", None, 0, 9), 4, 1.0)  # another producer's: nothing open
    cov.update("t", TID, 0, 8, 2.0, {})  # the marker (at 5) is copied
    assert cov.covers(batch, 4, 1.0)
    cov.update("t", TID, 0, 12, 3.0, {7: 9})  # 7's next transaction began after the marker
    assert cov.covers(batch, 4, 1.0)
    assert not cov.covers(("t", None, 0, 7), 10, 1.0)  # but a batch of that one waits
    cov.release("t", TID, 0)  # led elsewhere: its sidecar keeps what it needs
    assert cov.covers(("t", None, 0, 7), 10, 1.0)


def test_a_transactional_commit_is_covered_once_the_groups_copy_holds_its_marker() -> None:
    from proxy.kafka.groups import CONSUMER_OFFSETS, group_partition

    cov = Coverage()
    cov.note_partition_count(CONSUMER_OFFSETS, 50)
    p = group_partition("g", 50)
    cov.update(CONSUMER_OFFSETS, TID, p, 40, 5.0, {7: 39})  # synced after, marker not copied
    assert cov.covers("g", None, 4.0)  # a plain commit settled at 4 is covered
    assert not cov.covers(("g", 7), None, 4.0)
    assert cov.covers(("g", 9), None, 4.0)  # another producer's: nothing of it open
    cov.update(CONSUMER_OFFSETS, TID, p, 41, 6.0, {})
    assert cov.covers(("g", 7), None, 4.0)
    assert not cov.covers(("g", 7), None, 6.5)  # settled after the last sync
