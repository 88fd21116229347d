"""The commit protocol (lease, segment, manifest) over a real store, without S3."""

from pathlib import Path

import pytest

from offload import commit, layout
from offload import manifest as mf
from offload.store import FileStore

from .helpers import TOPIC_ID, segment

KEY = layout.manifest_key("c1", TOPIC_ID, 0)


def start(store: FileStore, epoch: int) -> mf.Manifest:
    m = mf.initial_manifest("t", TOPIC_ID, 0, writer_node=1, writer_epoch=epoch, log_start_offset=0)
    commit.commit_manifest(store, KEY, m, None)
    return m


def test_lease_epochs_increase_and_fence_the_older_writer(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    a = commit.acquire_lease(store, "c1", 1, owner="a")
    commit.check_lease(store, "c1", a)
    b = commit.acquire_lease(store, "c1", 1, owner="b")
    assert (a.epoch, b.epoch) == (1, 2)
    with pytest.raises(mf.FencedError, match="epoch 2"):
        commit.check_lease(store, "c1", a)
    commit.check_lease(store, "c1", b)


def test_segment_then_manifest_and_idempotent_retries(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    m0 = start(store, 1)
    v = commit.read_manifest(store, KEY)
    ref, stored, _ = segment(0, [3], epoch=1)
    commit.put_segment(store, ref.key, stored)
    commit.put_segment(store, ref.key, stored)  # a retry after a lost answer
    m1 = mf.append_segment(m0, ref, writer_node=1, writer_epoch=1, log_start_offset=0)
    etag = commit.commit_manifest(store, KEY, m1, v.etag)
    assert commit.commit_manifest(store, KEY, m1, v.etag) == etag  # retry: already applied
    assert commit.read_manifest(store, KEY).manifest == m1
    with pytest.raises(commit.SegmentConflict):
        commit.put_segment(store, ref.key, stored + b"x")


def test_zombie_writer_is_fenced_and_changes_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    old = start(store, 1)
    old_etag = commit.read_manifest(store, KEY).etag
    # The new writer (epoch 2) commits a segment.
    cur = commit.read_manifest(store, KEY)
    ref2, stored2, _ = segment(0, [2], epoch=2)
    commit.put_segment(store, ref2.key, stored2)
    new = mf.append_segment(cur.manifest, ref2, writer_node=1, writer_epoch=2, log_start_offset=0)
    commit.commit_manifest(store, KEY, new, cur.etag)
    before = {o.key: store.get(o.key).data for o in store.list("")}
    # The zombie (epoch 1) still thinks the old manifest is current.
    ref1, _, _ = segment(0, [5], epoch=1)
    stale = mf.append_segment(old, ref1, writer_node=1, writer_epoch=1, log_start_offset=0)
    with pytest.raises(mf.FencedError):
        commit.commit_manifest(store, KEY, stale, old_etag)
    # And with the current manifest in hand, the pure rule refuses it too.
    with pytest.raises(mf.FencedError):
        mf.append_segment(
            new, segment(2, [1], epoch=1)[0], writer_node=1, writer_epoch=1, log_start_offset=0
        )
    assert {o.key: store.get(o.key).data for o in store.list("")} == before


def test_a_concurrent_commit_of_another_node_is_a_conflict(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    m0 = start(store, 1)
    etag0 = commit.read_manifest(store, KEY).etag
    ref, _, _ = segment(0, [1])
    other = mf.append_segment(m0, ref, writer_node=2, writer_epoch=1, log_start_offset=0)
    commit.commit_manifest(store, KEY, other, etag0)
    mine = mf.append_segment(
        m0, segment(0, [4])[0], writer_node=1, writer_epoch=1, log_start_offset=0
    )
    with pytest.raises(commit.CommitConflict) as info:
        commit.commit_manifest(store, KEY, mine, etag0)
    assert info.value.current == other
