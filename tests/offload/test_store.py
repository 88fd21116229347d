"""Conditional-write semantics, identical for the file store and S3 (moto's real HTTP server)."""

from pathlib import Path

import pytest

from offload.store import FileStore, ObjectNotFound, ObjectStore, PreconditionFailed, S3Store


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return FileStore(tmp_path / "objects")
    server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()
    return S3Store(bucket, "pre/fix/", endpoint_url=server.endpoint_url, region="us-east-1")


def test_if_none_match_creates_once(store: ObjectStore) -> None:
    etag = store.put("a/b.log", b"one", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("a/b.log", b"two", if_none_match=True)
    got = store.get("a/b.log")
    assert (got.data, got.etag.strip('"')) == (b"one", etag.strip('"'))


def test_if_match_replaces_only_the_version_read(store: ObjectStore) -> None:
    first = store.put("m.json", b"v1", if_none_match=True)
    second = store.put("m.json", b"v2", if_match=first)
    with pytest.raises(PreconditionFailed):
        store.put("m.json", b"v3", if_match=first)  # stale ETag: a zombie writer
    assert store.get("m.json").data == b"v2"
    with pytest.raises(PreconditionFailed):
        store.put("missing.json", b"x", if_match=second)
    assert store.head("missing.json") is None


def test_get_head_list_delete(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("nope")
    for key in ("x/2", "x/1", "y/1"):
        store.put(key, key.encode())
    assert [o.key for o in store.list("x/")] == ["x/1", "x/2"]
    info = store.head("x/1")
    assert info is not None and info.size == 3
    store.delete("x/1")
    store.delete("x/1")  # deleting what is gone is fine
    assert [o.key for o in store.list("")] == ["x/2", "y/1"]


def test_file_store_conditions_hold_across_instances(tmp_path: Path) -> None:
    a, b = FileStore(tmp_path), FileStore(tmp_path)  # two processes' view of one directory
    etag = a.put("m", b"1", if_none_match=True)
    b.put("m", b"2", if_match=etag)
    with pytest.raises(PreconditionFailed):
        a.put("m", b"3", if_match=etag)
    assert not list((tmp_path / ".tmp").iterdir())  # no temp files left behind
    with pytest.raises(ValueError):
        a.put("../escape", b"x")
