"""Manifest encoding, invariants and commit rules, as properties over random histories."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import manifest as mf

from .helpers import TOPIC_ID, segment


def empty(log_start: int = 0, epoch: int = 1) -> mf.Manifest:
    return mf.initial_manifest(
        "t", TOPIC_ID, 0, writer_node=1, writer_epoch=epoch, log_start_offset=log_start
    )


def commit(m: mf.Manifest, counts: list[int], *, log_start: int | None = None, epoch: int = 1):
    ref, _, info = segment(m.next_offset, counts, epoch=epoch)
    return mf.append_segment(
        m,
        ref,
        writer_node=1,
        writer_epoch=epoch,
        log_start_offset=m.log_start_offset if log_start is None else log_start,
        leader_epochs=info.leader_epochs,
    )


# A history: each step appends a segment (list of batch sizes) or moves the log start.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.integers(1, 5), min_size=1, max_size=4)),
        st.tuples(st.just("log_start"), st.integers(0, 40)),
    ),
    max_size=25,
)


@settings(max_examples=200)
@given(steps)
def test_any_history_keeps_the_invariants_and_round_trips(history) -> None:
    m = empty()
    for kind, arg in history:
        before = m
        if kind == "append":
            m = commit(m, arg)
            assert m.next_offset == before.next_offset + sum(arg)
        else:
            new = mf.advance_log_start(m, m.log_start_offset + arg, writer_node=1, writer_epoch=1)
            if arg == 0:
                assert new is None
                continue
            assert new is not None
            m = new
            assert m.log_start_offset <= m.next_offset
            assert all(s.last_offset >= m.log_start_offset for s in m.segments)
            gone = mf.dropped_segments(before, m)
            assert all(s.last_offset < m.log_start_offset for s in gone)
        assert m.version == before.version + 1
        mf.validate(m)
        assert mf.decode(mf.encode(m)) == m


def test_a_segment_must_continue_the_manifest() -> None:
    m = commit(empty(), [3, 2])  # 0..4
    ref, _, _ = segment(6, [1])  # a gap: 5 missing
    with pytest.raises(mf.ManifestError, match="does not continue"):
        mf.append_segment(m, ref, writer_node=1, writer_epoch=1, log_start_offset=0)
    ref, _, _ = segment(3, [4])  # overlaps 3..4
    with pytest.raises(mf.ManifestError):
        mf.append_segment(m, ref, writer_node=1, writer_epoch=1, log_start_offset=0)


def test_log_start_beyond_the_copy_restarts_the_manifest_there() -> None:
    m = commit(empty(), [5])  # 0..4 copied; the broker then deletes up to 20
    ref, _, _ = segment(18, [4], covers_from=20)  # fetch at 20 returned the batch 18..21
    new = mf.append_segment(m, ref, writer_node=1, writer_epoch=1, log_start_offset=20)
    assert [s.base_offset for s in new.segments] == [18]
    assert (new.log_start_offset, new.next_offset) == (20, 22)


def test_first_segment_may_start_below_the_log_start() -> None:
    m = empty(log_start=7)  # DeleteRecords to 7 inside the batch 5..9
    ref, _, _ = segment(5, [5], covers_from=7)
    new = mf.append_segment(m, ref, writer_node=1, writer_epoch=1, log_start_offset=7)
    assert (new.segments[0].base_offset, new.log_start_offset, new.next_offset) == (5, 7, 10)


def test_older_epoch_of_the_same_node_is_fenced_other_nodes_take_over() -> None:
    m = commit(empty(epoch=3), [2], epoch=3)
    ref, _, _ = segment(2, [1], epoch=2)
    with pytest.raises(mf.FencedError, match="epoch 3"):
        mf.append_segment(m, ref, writer_node=1, writer_epoch=2, log_start_offset=0)
    with pytest.raises(mf.FencedError):
        mf.advance_log_start(m, 1, writer_node=1, writer_epoch=2)
    taken = mf.append_segment(m, ref, writer_node=2, writer_epoch=1, log_start_offset=0)
    assert (taken.writer_node, taken.writer_epoch) == (2, 1)


def test_leader_epochs_merge_and_truncate_like_kafka() -> None:
    e = mf.merge_leader_epochs((), [(0, 0), (2, 10)])
    e = mf.merge_leader_epochs(e, [(2, 15), (3, 20), (-1, 25)])
    assert e == ((0, 0), (2, 10), (3, 20))
    assert mf.truncate_leader_epochs(e, 12) == ((2, 12), (3, 20))
    assert mf.truncate_leader_epochs(e, 20) == ((3, 20),)
    assert mf.truncate_leader_epochs(e, 0) == e


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format", 2, "format"),
        ("topic_id", "xyz", "topic_id"),
        ("version", 0, "version"),
        ("next_offset", "5", "next_offset"),
        ("leader_epochs", [[1]], "leader_epochs"),
        ("segments", {}, "segments"),
    ],
)
def test_decode_names_the_bad_field(field, value, message) -> None:
    import json

    doc = json.loads(mf.encode(commit(empty(), [2])))
    doc[field] = value
    with pytest.raises(mf.ManifestError, match=message):
        mf.decode(json.dumps(doc).encode())


def test_decode_refuses_broken_invariants() -> None:
    m = commit(commit(empty(), [2]), [3])
    bad = replace(m, segments=(m.segments[1], m.segments[0]))
    with pytest.raises(mf.ManifestError, match="overlap"):
        mf.validate(bad)
    with pytest.raises(mf.ManifestError, match="next_offset"):
        mf.validate(replace(m, next_offset=99))
    s = m.segments[0]
    with pytest.raises(mf.ManifestError, match="key"):
        mf.validate(
            replace(m, segments=(replace(s, key=s.key.replace("e1", "e1x")), m.segments[1]))
        )
    with pytest.raises(mf.ManifestError, match="not JSON"):
        mf.decode(b"{")


# -- open transactions -----------------------------------------------------------------------
def test_open_after_tracks_each_producers_transaction_until_its_marker():
    from offload.manifest import OpenTxn, open_after

    before = (OpenTxn(7, 0, 3),)
    # producer 7's marker at 5 closes it; 9 opens at 6 and stays open (a second batch of the
    # same transaction does not move its first offset); 7 opens again at 8 under epoch 1
    batches = [(9, 2, 4, False), (7, 0, 5, True), (9, 2, 6, False), (7, 1, 8, False)]
    assert open_after(before, batches) == (OpenTxn(7, 1, 8), OpenTxn(9, 2, 4))
    assert open_after(open_after(before, batches), [(9, 2, 10, True), (7, 1, 11, True)]) == ()


def test_open_transactions_round_trip_and_are_checked():
    import dataclasses

    from offload.manifest import ManifestError, OpenTxn, decode, encode

    m = commit(commit(empty(), [100]), [100])  # offsets 0..199
    m2 = dataclasses.replace(m, open_transactions=(OpenTxn(4, 0, 150), OpenTxn(11, 3, 190)))
    assert decode(encode(m2)) == m2
    assert b"open_transactions" not in encode(m)  # absent when none are open
    for bad in (
        (OpenTxn(4, 0, 200),),  # not inside the copy
        (OpenTxn(11, 0, 1), OpenTxn(4, 0, 2)),  # not sorted
        (OpenTxn(4, 0, 1), OpenTxn(4, 1, 2)),  # one producer twice
    ):
        with pytest.raises(ManifestError, match="open_transactions"):
            encode(dataclasses.replace(m, open_transactions=bad))
