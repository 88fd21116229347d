"""The nemesis's pure parts: the seeded schedule, the ack-pause measure and the verdict."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.durability import Acked
from tests.integration.nemesis_check import ProducerHistory, check_history
from tests.integration.nemesis_plan import (
    KINDS,
    NODE_KINDS,
    Fault,
    covering_seed,
    describe_schedule,
    make_schedule,
    unavailability,
)

seeds = st.integers(min_value=0, max_value=2**32)
kind_sets = st.sets(st.sampled_from(sorted(KINDS)), min_size=1).map(sorted)


def _active_at(faults: list[Fault], t: float) -> list[Fault]:
    return [f for f in faults if f.start_s <= t < f.end_s]


@given(seeds, st.floats(min_value=0, max_value=3600), kind_sets, st.integers(1, 3))
def test_schedule_keeps_its_rules(
    seed: int, duration: float, kinds: list[str], max_concurrent: int
) -> None:
    faults = make_schedule(seed, duration, kinds, max_concurrent=max_concurrent)
    again = make_schedule(seed, duration, kinds[::-1], max_concurrent=max_concurrent)
    assert faults == again  # the same whatever order the kinds come in
    assert [f.index for f in faults] == list(range(len(faults)))
    assert [f.start_s for f in faults] == sorted(f.start_s for f in faults)
    for f in faults:
        assert f.kind in kinds
        assert 0 < f.start_s and f.end_s <= duration
        lo, hi = KINDS[f.kind]
        assert lo <= f.hold_s <= hi + 0.05
        assert (f.node is not None) == (f.kind in NODE_KINDS)
        # at its start (when the set of active faults grows) the limits hold
        active = _active_at(faults, f.start_s)
        assert len(active) <= max_concurrent
        for other in active:
            if other is not f:
                assert not (other.resources & f.resources), (f, other)


@given(seeds, kind_sets)
def test_every_kind_comes_before_any_repeats(seed: int, kinds: list[str]) -> None:
    faults = make_schedule(seed, 3600, kinds)
    first = [f.kind for f in faults[: len(kinds)]]
    assert sorted(first) == sorted(kinds)


def test_a_disk_wipe_holds_s3_and_its_node() -> None:
    f = Fault(0, "disk_wipe", 1.0, 1.0, 2)
    assert f.resources == {"node-2", "s3"}
    assert Fault(1, "s3_down", 1.0, 1.0, None).resources == {"s3"}
    with pytest.raises(ValueError, match="acts on a node"):
        _ = Fault(2, "proxy_kill", 1.0, 1.0, None).resources
    with pytest.raises(ValueError, match="unknown fault kind"):
        make_schedule(1, 60, ["meteor"])


def test_seeds_differ_and_the_schedule_prints_its_replay() -> None:
    a, b = make_schedule(1, 600), make_schedule(2, 600)
    assert a != b
    text = describe_schedule(7, a)
    assert "WALPROXY_NEMESIS_SEED=7" in text
    assert len(text.splitlines()) == len(a) + 1


def test_a_covering_seed_fits_every_kind() -> None:
    seed = covering_seed(random.Random(5), 150, KINDS)
    assert {f.kind for f in make_schedule(seed, 150, KINDS)} == set(KINDS)
    with pytest.raises(ValueError, match="too short"):
        covering_seed(random.Random(5), 20, KINDS)


def test_unavailability_is_the_longest_pause_across_the_window() -> None:
    times = {0: [1.0, 2.0, 3.0, 9.0, 10.0], 1: [2.0, 5.0, 6.0]}
    # fault 2.5..4: partition 0 paused 3.0 -> 9.0
    assert unavailability(times, 2.5, 4.0, [0], 20.0) == pytest.approx(6.0)
    assert unavailability(times, 2.5, 4.0, [0, 1], 20.0) == pytest.approx(6.0)
    assert unavailability(times, 2.5, 4.0, [1], 20.0) == pytest.approx(3.0)  # 2.0 -> 5.0
    # no ack after the start at all: until the horizon
    assert unavailability(times, 11.0, 12.0, [0], 20.0) == pytest.approx(10.0)
    # nothing before the start: from the start
    assert unavailability({2: [5.0]}, 0.0, 1.0, [2], 20.0) == pytest.approx(5.0)
    # a pause going on for a while when the fault began is not the fault's
    assert unavailability(times, 6.0, 7.0, [0], 20.0) == 0.0  # 3 -> 9 began before
    assert unavailability(times, 3.5, 7.0, [0], 20.0) == pytest.approx(6.0)  # began 0.5 s ago


values = st.lists(st.binary(min_size=1, max_size=6), unique=True, max_size=30)


def _history(name: str, idempotent: bool, sent: list[bytes]) -> tuple[ProducerHistory, dict]:
    """Everything sent to partition 0, acknowledged at consecutive offsets from 0."""
    acked = [Acked(0, i, v) for i, v in enumerate(sent)]
    return ProducerHistory(name, idempotent, {0: sent}, acked), {
        0: [(a.offset, a.value) for a in acked]
    }


@given(values)
def test_an_intact_history_passes(sent: list[bytes]) -> None:
    h, read = _history("p", True, sent)
    v = check_history([h], read)
    assert v.ok and v.lost == 0 and v.unacked_extras == 0, v.summary()


@given(values.filter(lambda v: len(v) >= 2), st.data())
def test_every_kind_of_damage_is_caught(sent: list[bytes], data: st.DataObject) -> None:
    h, read = _history("p", True, sent)
    records = list(read[0])
    i = data.draw(st.integers(0, len(records) - 1))
    damage = data.draw(st.sampled_from(["lose", "move", "duplicate", "swap"]))
    if damage == "lose":
        del records[i]
    elif damage == "move":
        records[i] = (records[i][0] + 1000, records[i][1])
    elif damage == "duplicate":
        records.append((len(records) + 5, records[i][1]))
    else:  # acknowledged out of send order
        j = (i + 1) % len(sent)
        swapped = list(h.acked)
        swapped[i], swapped[j] = (
            Acked(0, swapped[j].offset, swapped[i].value),
            Acked(0, swapped[i].offset, swapped[j].value),
        )
        h = ProducerHistory("p", True, h.sent, swapped)
        records = [(a.offset, a.value) for a in swapped]
    v = check_history([h], {0: records})
    assert not v.ok, (damage, v.summary())
    p = v.producers[0]
    got = {"lose": p.lost, "move": p.moved, "duplicate": p.duplicates, "swap": p.out_of_order}
    assert got[damage], (damage, v.summary())


def test_non_idempotent_duplicates_are_counted_not_failed() -> None:
    idem, read_i = _history("idem", True, [b"i1", b"i2"])
    plain = ProducerHistory("plain", False, {1: [b"n1", b"n2"]}, [Acked(1, 1, b"n1")])
    # n1 was in doubt, written twice (offset 0 and its acknowledged 1); n2 never acked
    read = read_i | {1: [(0, b"n1"), (1, b"n1"), (2, b"n2")]}
    v = check_history([idem, plain], read)
    assert v.ok, v.summary()
    by = {p.name: p for p in v.producers}
    assert by["plain"].duplicates == [b"n1"] and v.unacked_extras == 1
    # the same copy of an idempotent record fails
    v = check_history([idem, plain], read | {0: [*read_i[0], (9, b"i1")]})
    assert not v.ok and by["idem"].name in v.summary()


def test_committed_offsets_going_back_fail() -> None:
    h, read = _history("p", True, [b"a"])
    v = check_history([h], read, commits_acked={0: 5, 1: 3}, commits_final={0: 5, 1: 2})
    assert v.commit_regressions == {1: (3, 2)}
    # judged: an acknowledged commit is in the WAL and restored like a record (issue 17)
    assert not v.ok and "gone backwards: {1: (3, 2)}" in v.summary()
    assert check_history([h], read, commits_acked={0: 5}, commits_final={0: 6}).ok
    with pytest.raises(ValueError, match="unique"):
        check_history([h, h], read)


def test_records_unanswered_after_healing_fail_and_fatal_errors_are_reported() -> None:
    h, read = _history("p", True, [b"a", b"b"])
    late = ProducerHistory("p", True, h.sent, h.acked, unsettled=3)
    v = check_history([late], read)
    assert not v.ok and "UNANSWERED after the faults healed: 3" in v.summary()
    fatal = ProducerHistory("p", True, h.sent, h.acked, failed=4, fatal=["OUT_OF_ORDER"])
    v = check_history([fatal], read)
    assert v.ok and "fatal client errors 1, first: OUT_OF_ORDER" in v.summary()
