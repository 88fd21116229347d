"""The group planner (wal/group_plan.py), without trio or a disk."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wal.group_plan import GroupPlan, PlannedGroup

BLOCK = 4096


def plan(fresh_room: int = 16 * BLOCK, max_bytes: int = 4 * BLOCK, max_entries: int = 8):
    return GroupPlan(
        PlannedGroup,
        block=BLOCK,
        fresh_room=fresh_room,
        max_group_bytes=max_bytes,
        max_group_entries=max_entries,
    )


def test_appends_share_the_open_group_until_it_is_full() -> None:
    p = plan(max_entries=3)
    g1, l1 = p.add(100, 1)
    g2, l2 = p.add(100, 2)
    g3, l3 = p.add(100, 1)  # a fourth entry: a new group
    assert g1 is g2 and g3 is not g1 and (l1, l2, l3) == (1, 2, 4)
    assert g1.closed and g1.size == BLOCK and not g3.closed
    assert (p.pending_bytes, p.pending_entries) == (300, 4)
    p.issued(p.next_to_issue())
    assert (p.pending_bytes, p.pending_entries) == (100, 1) and p.queue[0] is g3


def test_a_group_that_does_not_fit_the_segment_rolls() -> None:
    p = plan(fresh_room=4 * BLOCK, max_bytes=3 * BLOCK)
    a, _ = p.add(3 * BLOCK, 1)
    p.close(a)
    assert not a.roll and p.plan_room == BLOCK
    b, _ = p.add(2 * BLOCK, 1)  # more than the segment's room: its limit is a fresh one's
    assert b.limit == 3 * BLOCK
    p.close(b)
    assert b.roll and p.plan_room == 2 * BLOCK


@given(st.lists(st.tuples(st.integers(1, 3 * BLOCK), st.integers(1, 3)), min_size=1, max_size=60))
def test_plans_keep_lsn_order_limits_and_segment_room(adds: list[tuple[int, int]]) -> None:
    fresh = 8 * BLOCK
    p = plan(fresh_room=fresh, max_bytes=2 * BLOCK, max_entries=5)
    lsn = 1
    groups: list[PlannedGroup] = []
    for rec, n in adds:
        g, first = p.add(rec, n)
        assert first == lsn
        lsn += n
        if not groups or groups[-1] is not g:
            groups.append(g)
    assert p.assign_lsn == lsn and p.pending_entries == lsn - 1
    room = fresh
    for g in groups:
        assert p.next_to_issue() is g
        assert g.rec <= g.limit or g.count == 1  # only a lone entry may exceed the cap
        assert g.count <= 5
        if g.roll:
            room = fresh
        assert g.size <= room  # it fits where it is written
        room -= g.size
        p.issued(g)
    assert p.pending_bytes == 0 and p.pending_entries == 0 and not p.queue
