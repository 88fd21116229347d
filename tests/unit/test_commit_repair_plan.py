"""The commit repair planner (proxy/durable/commit_repair_plan.py), property-tested: after its
restores no group is behind its last acknowledged commit, and no restore moves an offset
backwards or overwrites a newer commit."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from proxy.durable.commit_repair_plan import (
    AckedCommit,
    CommitKey,
    latest_acked,
    plan_commit_repair,
)
from proxy.durable.wal_entries import CommitEntry, CommitOffset, CommitOutcomeEntry, Source

keys = st.tuples(
    st.sampled_from(["g1", "g2", "g3"]), st.sampled_from(["a", "b"]), st.integers(0, 3)
)
offsets = st.integers(-1, 1000)
acked_maps = st.dictionaries(
    keys,
    st.builds(
        AckedCommit,
        st.integers(1, 10**6),
        st.integers(0, 1000),
        st.integers(-1, 9),
        st.none() | st.text(max_size=3),
    ),
)


@given(acked_maps, st.dictionaries(keys, offsets))
def test_after_the_restores_no_group_is_behind(
    acked: dict[CommitKey, AckedCommit], fetched: dict[CommitKey, int]
) -> None:
    plan = plan_commit_repair(acked, fetched)
    after = dict(fetched)
    for r in plan.restores:
        for o in r.offsets:
            after[(r.group, o.topic, o.partition)] = o.commit.offset
    assert all(after.get(k, -1) >= c.offset for k, c in acked.items())
    assert plan.intact + plan.ahead + plan.restored_offsets == len(acked)


@given(acked_maps, st.dictionaries(keys, offsets))
def test_never_backwards_never_over_a_newer_commit(
    acked: dict[CommitKey, AckedCommit], fetched: dict[CommitKey, int]
) -> None:
    plan = plan_commit_repair(acked, fetched)
    seen: set[CommitKey] = set()
    for r in plan.restores:
        assert r.offsets, "an empty restore"
        for o in r.offsets:
            key = (r.group, o.topic, o.partition)
            assert key not in seen  # one commit per partition
            seen.add(key)
            assert o.broker_offset == fetched.get(key, -1)
            assert o.commit.offset > o.broker_offset  # forward only
            assert o.commit == acked[key]  # exactly the acknowledged commit
    # Only behind partitions are touched; intact and newer ones are not.
    assert seen == {k for k, c in acked.items() if fetched.get(k, -1) < c.offset}
    assert len({r.group for r in plan.restores}) == len(plan.restores)  # one request a group


def test_counts_intact_and_ahead() -> None:
    acked = {
        ("g", "t", 0): AckedCommit(1, 10, -1, None),
        ("g", "t", 1): AckedCommit(2, 20, -1, None),
        ("g", "t", 2): AckedCommit(3, 30, 4, "m"),
    }
    plan = plan_commit_repair(acked, {("g", "t", 0): 10, ("g", "t", 1): 25})
    assert (plan.intact, plan.ahead, plan.restored_offsets) == (1, 1, 1)
    [r] = plan.restores
    [o] = r.offsets
    assert (r.group, o.topic, o.partition, o.broker_offset) == ("g", "t", 2, -1)
    assert (o.commit.offset, o.commit.leader_epoch, o.commit.metadata) == (30, 4, "m")


# -- latest_acked: which WAL commits count -----------------------------------------------------
@st.composite
def wal_commits(
    draw: st.DrawFn,
) -> tuple[list[tuple[int, CommitEntry]], dict[int, CommitOutcomeEntry]]:
    entries = []
    outcomes = {}
    for lsn in draw(st.lists(st.integers(1, 500), unique=True, max_size=12)):
        parts = draw(
            st.lists(
                st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 2), st.integers(0, 99)),
                min_size=1,
                max_size=3,
            )
        )
        txn = draw(st.booleans())
        entry = CommitEntry(
            8 if not txn else 28,
            9,
            0,
            draw(st.sampled_from(["g1", "g2"])),
            "tx" if txn else None,
            7 if txn else -1,
            0 if txn else -1,
            tuple(CommitOffset(t, None, p, o, -1, None) for t, p, o in parts),
        )
        entries.append((lsn, entry))
        if draw(st.booleans()):  # answered (else: in flight, or its connection died)
            codes = tuple(draw(st.sampled_from([0, 0, 25, -1])) for _ in parts)
            outcomes[lsn] = CommitOutcomeEntry(lsn, Source.BROKER, codes)
    return entries, outcomes


@given(wal_commits())
def test_latest_acked_is_the_last_answered_without_error(
    wal: tuple[list[tuple[int, CommitEntry]], dict[int, CommitOutcomeEntry]],
) -> None:
    entries, outcomes = wal
    got = latest_acked(reversed(entries), outcomes)  # WAL order, not iteration order
    expected: dict[CommitKey, AckedCommit] = {}
    for lsn, e in sorted(entries, key=lambda x: x[0]):
        o = outcomes.get(lsn)
        if e.transactional or o is None:
            continue
        for c, code in zip(e.offsets, o.error_codes, strict=True):
            if code == 0:
                assert c.topic is not None
                expected[(e.group_id, c.topic, c.partition)] = AckedCommit(
                    lsn, c.offset, c.leader_epoch, c.metadata
                )
    assert got == expected
    assert all(not dict(entries)[c.lsn].transactional for c in got.values())


def test_topic_ids_resolve_and_deleted_topics_are_skipped() -> None:
    tid, gone = uuid.uuid4(), uuid.uuid4()
    entry = CommitEntry(
        8,
        10,
        0,
        "g",
        None,
        -1,
        -1,
        (CommitOffset(None, tid, 0, 5, -1, None), CommitOffset(None, gone, 0, 6, -1, None)),
    )
    outcome = CommitOutcomeEntry(1, Source.BROKER, (0, 0))
    names = {tid: "t"}
    got = latest_acked([(1, entry)], {1: outcome}, lambda n, i: n or names.get(i))  # type: ignore[arg-type]
    assert got == {("g", "t", 0): AckedCommit(1, 5, -1, None)}
