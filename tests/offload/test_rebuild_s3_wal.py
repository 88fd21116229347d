"""``walproxy rebuild`` of a node whose WAL is on S3 (``wal.backend = "s3"``), against moto.

Such a node keeps no WAL on local disk: the acknowledged records the offloader has not
copied yet are only in the S3 WAL's objects, so the rebuild must read them there (the
read-only :func:`wal.read_s3_wal`, the writer's own recovery rules). The broker-level proof
is tests/integration/test_whole_node_loss.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offload.rebuild import RebuildError, RebuildTransient, rebuild
from offload.store import FileStore
from proxy.dev.cluster import free_port
from tests.offload.test_rebuild import (
    TAIL_ITEMS,
    check_tail,
    fill_wal,
    opts,
    quiet,
    read_partition,
    rebuild_cli,
    seed,
)
from tests.s3server import S3Server
from wal.config import S3WalConfig
from wal.object_store import S3Store
from wal.s3_layout import object_name, parse_object_name
from wal.s3_wal import open_s3_wal

PREFIX = "cluster-a/node-1/wal/"
#: One object per entry, one upload at a time: every object's predecessor was acknowledged
#: when it was issued, so a missing object is a hole behind the window (corruption).
ONE_BY_ONE = S3WalConfig(max_group_entries=1, max_inflight_groups=1)


def s3_wal(server: S3Server, bucket: str) -> S3Store:
    return S3Store(bucket, PREFIX, endpoint_url=server.endpoint_url, region="us-east-1")


def s3_wal_node(
    tmp_path: Path, server: S3Server, bucket: str
) -> tuple[dict[tuple[str, int], bytes], Path]:
    """A lost node's remains: its offload target (file://), its S3 WAL holding TAIL_ITEMS,
    and its walproxy.toml (``wal.backend = "s3"``). Returns the offloaded logs and the
    config's path."""
    logs = seed(FileStore(tmp_path / "target"))
    fill_wal(open_s3_wal(s3_wal(server, bucket), ONE_BY_ONE), TAIL_ITEMS)
    cfg = tmp_path / "walproxy.toml"
    cfg.write_text(
        f'[proxy]\nnode_id = 1\n[wal]\nbackend = "s3"\ns3_target = "s3://{bucket}/{PREFIX}"\n'
        f'[offload]\ns3_endpoint_url = "{server.endpoint_url}"\ns3_region = "us-east-1"\n'
    )
    return logs, cfg


def test_the_s3_wal_tail_lands_after_the_s3_copy(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    store = FileStore(tmp_path / "target")
    logs = seed(store)
    wal_store = s3_wal(s3_server, s3_bucket)
    fill_wal(open_s3_wal(wal_store, ONE_BY_ONE), TAIL_ITEMS)
    before = sorted(o.key for o in wal_store.list(""))
    report = rebuild(store, opts(tmp_path, wal_store=wal_store), out=quiet())  # type: ignore[arg-type]
    check_tail(tmp_path / "data", logs)
    assert (report.tail_batches, report.wal_in_doubt) == (3, 1)
    assert sorted(o.key for o in wal_store.list("")) == before  # read-only: nothing claimed


def test_the_cli_reads_the_configured_s3_wal(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    logs, cfg = s3_wal_node(tmp_path, s3_server, s3_bucket)
    proc = rebuild_cli(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"+ WAL s3://{s3_bucket}/{PREFIX}" in proc.stdout
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert (report["tail_batches"], report["wal_in_doubt"]) == (3, 1)
    check_tail(tmp_path / "data", logs)


def test_the_cli_without_the_wal_leaves_the_tail_out(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    # the negative control of the test above: the same target, --no-wal
    logs, cfg = s3_wal_node(tmp_path, s3_server, s3_bucket)
    proc = rebuild_cli(cfg, tmp_path, "--no-wal")
    assert proc.returncode == 0, proc.stderr
    assert read_partition(tmp_path / "data", "orders", 0) == logs[("orders", 0)]
    with pytest.raises(AssertionError):
        check_tail(tmp_path / "data", logs)


def test_a_hole_in_the_s3_wal_is_refused_naming_the_key(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    store = FileStore(tmp_path / "target")
    seed(store)
    wal_store = s3_wal(s3_server, s3_bucket)
    fill_wal(open_s3_wal(wal_store, ONE_BY_ONE), TAIL_ITEMS)
    slots = sorted(s for o in wal_store.list("") if (s := parse_object_name(o.key)) is not None)
    victim = object_name(slots[2])
    wal_store.delete(victim)
    with pytest.raises(RebuildError, match=victim) as info:
        rebuild(store, opts(tmp_path, wal_store=wal_store), out=quiet())  # type: ignore[arg-type]
    assert not isinstance(info.value, RebuildTransient)
    assert not (tmp_path / "data" / "meta.properties").exists()


def test_no_wal_at_the_prefix_is_refused_not_read_as_empty(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    store = FileStore(tmp_path / "target")
    seed(store)
    for bucket in (s3_bucket, "no-such-bucket"):
        with pytest.raises(RebuildError, match="no S3 WAL at") as info:
            rebuild(store, opts(tmp_path, wal_store=s3_wal(s3_server, bucket)), out=quiet())  # type: ignore[arg-type]
        assert not isinstance(info.value, RebuildTransient)


def test_an_unreachable_s3_wal_is_transient(tmp_path: Path, s3_server: S3Server) -> None:
    # (s3_server: its dummy credentials; the endpoint is a closed port)
    store = FileStore(tmp_path / "target")
    seed(store)
    nobody = S3Store(
        "wal",
        PREFIX,
        endpoint_url=f"http://127.0.0.1:{free_port('127.0.0.1')}",
        region="us-east-1",
        connect_timeout_s=0.5,
        max_attempts=1,
    )
    with pytest.raises(RebuildTransient, match=r"s3://wal/"):
        rebuild(store, opts(tmp_path, wal_store=nobody), out=quiet())  # type: ignore[arg-type]
