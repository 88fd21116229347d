"""The S3 WAL against moto's S3 server (a real HTTP S3 API), directly and through the fault
relay: the public Wal API, zombie fencing with two writers, 5xx / resets / stalls past the
deadline (fence, never ack, never lose), verify/dump, corruption refusing to start."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import trio

from tests.offload.s3relay import S3Relay
from tests.s3server import S3Server
from tests.wal.helpers import metric
from wal import WalCorruptionError, WalFencedError, WalLockedError, read_s3_wal
from wal import cli as wal_cli
from wal.config import S3WalConfig
from wal.object_store import S3Store
from wal.s3_layout import LEASE_NAME, object_name, parse_object_name
from wal.s3_wal import S3Wal, open_s3_wal

FAST = S3WalConfig(request_timeout_s=1.0, put_deadline_s=2.0, max_group_bytes=64 * 1024)


def store_of(endpoint: str, bucket: str, prefix: str = "node-1/wal/") -> S3Store:
    return S3Store(
        bucket,
        prefix,
        endpoint_url=endpoint,
        region="us-east-1",
        max_attempts=1,
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
    )


@pytest.fixture
def store(s3_server: S3Server, s3_bucket: str) -> S3Store:
    return store_of(s3_server.endpoint_url, s3_bucket)


@pytest.fixture
def relay(s3_server: S3Server) -> Iterator[S3Relay]:
    r = S3Relay((s3_server.host, s3_server.port))
    try:
        yield r
    finally:
        r.close()


async def read_all(wal: S3Wal) -> list[tuple[int, int, bytes]]:
    got = await trio.to_thread.run_sync(lambda: list(wal.read_from()))
    return [(e.lsn, e.type, e.payload) for e in got]


def slots(store: S3Store) -> list[int]:
    return sorted(s for o in store.list("") if (s := parse_object_name(o.key)) is not None)


async def test_append_reopen_trim_follow(store: S3Store) -> None:
    async with open_s3_wal(store, FAST) as wal:
        assert wal.epoch == 1 and wal.last_durable_lsn == 0
        lsns = []

        async def one(i: int) -> None:
            lsns.append(await wal.append(b"entry-%d" % i, type=i % 3))

        async with trio.open_nursery() as n:
            for i in range(200):
                n.start_soon(one, i)
        assert sorted(lsns) == list(range(1, 201))
        assert await wal.append_many([(5, b"a"), (6, b"b")]) == [201, 202]
        sub = await wal.submit_many([(7, b"c")])
        assert await sub.wait() == [203]
        # concurrent appends shared objects (group commit), several were in flight
        assert wal.groups_written < 100
    async with open_s3_wal(store, FAST) as wal:
        assert wal.epoch == 2 and wal.last_durable_lsn == 203
        entries = await read_all(wal)
        assert [e[0] for e in entries] == list(range(1, 204))
        assert entries[-1] == (203, 7, b"c")
        objects_before = len(slots(store))
        await wal.trim(150)
        assert wal.first_lsn == 151
        assert len(slots(store)) < objects_before  # whole objects went
        seen: list[int] = []

        async def follow() -> None:
            async for e in wal.follow(200):
                seen.append(e.lsn)
                if e.lsn == 205:
                    return

        async with trio.open_nursery() as n:
            n.start_soon(follow)
            await trio.sleep(0.05)
            await wal.append(b"x")
            await wal.append(b"y")
        assert seen == [200, 201, 202, 203, 204, 205]
    async with open_s3_wal(store, FAST) as wal:
        assert wal.first_lsn == 151 and wal.last_durable_lsn == 205
        assert [e[0] for e in await read_all(wal)] == list(range(151, 206))
    assert (
        wal_cli.verify(
            f"s3://{store.bucket}/{store.prefix}",
            out := io.StringIO(),
            endpoint_url=store._endpoint,
        )
        == 0
    )
    assert "status: OK" in out.getvalue() and "records: 55" in out.getvalue()
    assert metric("walproxy_wal_s3_objects_total") > 0
    # the read-only reader (rebuild's) sees what the writer recovered: trimmed entries gone
    got = [(e.lsn, e.payload) for e in read_s3_wal(store, parallel=4)]
    assert [lsn for lsn, _ in got] == list(range(151, 206)) and got[-1] == (205, b"y")


async def test_zombie_writer_is_fenced_by_the_next_writers_marker(store: S3Store) -> None:
    async with open_s3_wal(store, FAST) as old:
        acked_old = [await old.append(b"old-%d" % i) for i in range(5)]
        async with open_s3_wal(store, FAST) as new:
            assert new.epoch == old.epoch + 1
            assert new.last_durable_lsn == acked_old[-1]  # it saw everything acked
            with pytest.raises(WalFencedError, match="newer writer"):
                await old.append(b"zombie")  # its next PUT finds the slot taken
            assert old.fenced
            with pytest.raises(WalFencedError):
                await old.append(b"never")
            with pytest.raises(WalFencedError):
                await old.trim(3)  # nor can it move the trim point
            assert await new.append(b"new") == acked_old[-1] + 1
    async with open_s3_wal(store, FAST) as wal:
        got = await read_all(wal)
        assert [p for _, _, p in got] == [b"old-%d" % i for i in range(5)] + [b"new"]


async def test_a_writer_that_lost_the_lease_before_claiming_refuses_to_open(
    store: S3Store,
) -> None:
    slow = S3Wal(store, FAST)
    await slow._take_epoch()  # epoch 1 ... and then it stalls
    async with open_s3_wal(store, FAST) as fast:  # epoch 2 claims the log and writes
        await fast.append(b"b")
    with pytest.raises(WalLockedError, match="newer writer"):
        await slow._claim_log()


@pytest.mark.parametrize("mode", ["503", "reset", "stall"])
async def test_store_faults_past_the_deadline_fence_and_lose_nothing(
    s3_server: S3Server, s3_bucket: str, relay: S3Relay, mode: str
) -> None:
    store = store_of(relay.endpoint_url, s3_bucket, f"faults-{mode}/")
    cfg = S3WalConfig(request_timeout_s=0.5, put_deadline_s=1.5, max_inflight_groups=4)
    acked: list[int] = []
    failed = 0
    async with open_s3_wal(store, cfg) as wal:
        for i in range(20):
            acked.append(await wal.append(b"before-%d" % i))
        # a short fault is ridden out by the retries: still acknowledged, nothing lost
        relay.set_mode(mode)
        async with trio.open_nursery() as n:

            async def heal() -> None:
                await trio.sleep(0.3)
                relay.set_mode("pass")

            n.start_soon(heal)
            acked.append(await wal.append(b"through-a-short-fault"))
        # a fault past put_deadline_s fences: no acknowledgement, not now and not later
        relay.set_mode(mode)

        async def doomed(i: int) -> None:
            nonlocal failed
            try:
                acked.append(await wal.append(b"doomed-%d" % i))
            except WalFencedError:
                failed += 1

        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                for i in range(10):
                    n.start_soon(doomed, i)
        assert failed == 10 and wal.fenced
        assert metric("walproxy_wal_fenced") == 1
        relay.set_mode("pass")
        with pytest.raises(WalFencedError):
            await wal.append(b"after the fence")
    async with open_s3_wal(store, cfg) as wal:
        got = {lsn: p for lsn, _, p in await read_all(wal)}
        for lsn in acked:
            assert lsn in got
        assert got[acked[20]] == b"through-a-short-fault"
        # doomed entries may or may not be there (never acknowledged); nothing else is
        assert all(p.startswith((b"before-", b"through", b"doomed-")) for p in got.values())
        assert await wal.append(b"healthy again") == max(got) + 1


async def test_hole_behind_the_window_refuses_to_start_naming_the_key(store: S3Store) -> None:
    cfg = S3WalConfig(max_group_entries=1, max_inflight_groups=1)
    async with open_s3_wal(store, cfg) as wal:
        for i in range(6):
            await wal.append(b"e%d" % i)  # one object each, one at a time
    victim = slots(store)[3]
    store.delete(object_name(victim))
    with pytest.raises(WalCorruptionError, match=object_name(victim)):
        list(read_s3_wal(store))
    with pytest.raises(WalCorruptionError, match=object_name(victim)):
        async with open_s3_wal(store, cfg):
            pass
    out = io.StringIO()
    url = f"s3://{store.bucket}/{store.prefix}"
    assert wal_cli.verify(url, out, endpoint_url=store._endpoint) == 1
    assert "CORRUPT" in out.getvalue() and object_name(victim) in out.getvalue()
    out = io.StringIO()
    assert wal_cli.dump(url, out, endpoint_url=store._endpoint) == 1
    assert "lsn=1 " in out.getvalue() and "epoch=1" in out.getvalue()


async def test_damaged_object_refuses_to_start(store: S3Store) -> None:
    async with open_s3_wal(store, FAST) as wal:
        await wal.append(b"precious")
        await wal.append(b"more")
    victim = slots(store)[1]
    data = bytearray(store.get(object_name(victim)).data)
    data[64 + 32 + 2] ^= 0x40  # a payload byte of its first record
    store.put(object_name(victim), bytes(data))
    with pytest.raises(WalCorruptionError, match=object_name(victim)):
        async with open_s3_wal(store, FAST):
            pass


async def test_torn_tail_in_the_window_is_dropped_and_verify_reports_it(store: S3Store) -> None:
    async with open_s3_wal(store, FAST) as wal:
        await wal.append(b"kept")
        epoch = wal.epoch
    # a crash left slot n+1 in flight (never landed) and n+2 landed: n+2 is torn
    from wal.s3_layout import encode_object

    n = slots(store)[-1]
    store.put(
        object_name(n + 2),
        encode_object(epoch=epoch, slot=n + 2, first_lsn=3, back=2, entries=[(0, b"torn")]),
    )
    out = io.StringIO()
    url = f"s3://{store.bucket}/{store.prefix}"
    assert wal_cli.verify(url, out, endpoint_url=store._endpoint) == 0
    assert "torn tail" in out.getvalue()
    # read-only: the torn object is left out but left in place, and no epoch is taken
    lease_before = store.get(LEASE_NAME).data
    assert [e.payload for e in read_s3_wal(store)] == [b"kept"]
    assert object_name(n + 2) in {o.key for o in store.list("")}
    assert store.get(LEASE_NAME).data == lease_before
    async with open_s3_wal(store, FAST) as wal:
        assert [p for _, _, p in await read_all(wal)] == [b"kept"]
        assert object_name(n + 2) not in {o.key for o in store.list("")}
    assert store.head(LEASE_NAME) is not None
