"""PartitionState's divergence: stopped when the broker's log falls below the S3 copy, back
on the committed manifest when it holds the copy again, stopped for good when it differs."""

from __future__ import annotations

import pytest

from offload import manifest as mf
from offload.partition import Diverged, PartitionState

from .helpers import TOPIC_ID, segment


def _state() -> PartitionState:
    refs = [segment(0, [5, 5])[0], segment(10, [5, 5])[0]]  # offsets 0-9 and 10-19
    m = mf.Manifest(
        "t", TOPIC_ID, 0, 1, 1, version=2, log_start_offset=0, next_offset=20,
        segments=tuple(refs),
    )  # fmt: skip
    return PartitionState("t", TOPIC_ID, 0, m, "etag", position=25, buffer_from=20)


def test_a_log_below_the_copy_stops_and_says_where_it_fell_to() -> None:
    s = _state()
    s.check_not_behind(20)  # level with S3: fine
    assert not s.stopped and s.diverged_at is None
    with pytest.raises(Diverged, match="ends at 12 but S3 already has offsets up to 19"):
        s.check_not_behind(12)
    assert s.stopped and s.diverged_at == 12
    # only what the log had lost is compared again: the segment holding 12-19
    assert [r.base_offset for r in s.segments_to_compare()] == [10]


def test_rejoin_goes_on_from_the_committed_manifest() -> None:
    s = _state()
    s.buffer += b"stale"
    with pytest.raises(Diverged):
        s.check_not_behind(0)
    assert len(s.segments_to_compare()) == 2
    generation = s.generation
    s.rejoin()
    assert not s.stopped and s.diverged_at is None
    assert (s.position, s.buffer_from, bytes(s.buffer)) == (20, 20, b"")
    assert s.generation == generation + 1  # an upload cut before the crash is stale


def test_a_different_history_stops_for_good() -> None:
    s = _state()
    with pytest.raises(Diverged):
        s.check_not_behind(3)
    s.differs("the broker's batch at offset 5 differs from the S3 copy")
    assert s.diverged_at is None  # not rechecked any more
    assert s.stopped == "t-0: the broker's batch at offset 5 differs from the S3 copy"
