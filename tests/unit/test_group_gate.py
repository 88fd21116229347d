"""While committed offsets are restored, the connection holds every group API before it is
forwarded (and what follows it on that connection); other APIs flow, and the held request
goes out unchanged once the gate opens."""

from __future__ import annotations

import trio
import trio.testing
from kio.static.primitive import i32

from proxy.durable.produce_path import _Gate
from proxy.kafka.protocol import API_VERSIONS, GROUP_APIS, OFFSET_FETCH, PRODUCE
from proxy.net.connection import PreparedProduce, ProxyConnection
from tests.integration.rawkafka import metadata_frame, request_frame
from tests.unit.test_lazy_upstream import SETTINGS, Broker


def _heartbeat(correlation_id: int) -> bytes:
    return request_frame(
        12,
        4,
        correlation_id,
        group_id="g",
        generation_id=i32(3),
        member_id="m",
        group_instance_id=None,
    )


async def _receive(stream: trio.abc.Stream, size: int) -> bytes:
    got = b""
    while len(got) < size:
        got += await stream.receive_some(65536)
    return got


async def test_group_apis_wait_at_the_closed_gate_others_flow() -> None:
    gate = _Gate()  # closed, as while a repair runs
    broker = Broker()
    client, proxy_side = trio.testing.memory_stream_pair()
    conn: ProxyConnection[PreparedProduce] = ProxyConnection(
        proxy_side, broker.connect, SETTINGS, group_gate=gate
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            metadata = metadata_frame(1)
            await client.send_all(metadata)
            assert await _receive(broker.broker_side, len(metadata)) == metadata  # flows
            heartbeat, after = _heartbeat(2), metadata_frame(3)
            await client.send_all(heartbeat + after)
            with trio.move_on_after(0.3):
                leaked = await broker.broker_side.receive_some(65536)
                raise AssertionError(f"forwarded while the gate is closed: {leaked!r}")
            gate.open()
            both = heartbeat + after
            assert await _receive(broker.broker_side, len(both)) == both  # in order, unchanged
            nursery.cancel_scope.cancel()


def test_the_held_apis() -> None:
    names = {12, 11, 14, 13, 8, 9, 28, 42, 47, 68}  # Heartbeat ... ConsumerGroupHeartbeat
    assert names <= GROUP_APIS
    assert OFFSET_FETCH in GROUP_APIS
    assert not {PRODUCE, API_VERSIONS, 10, 3} & GROUP_APIS  # FindCoordinator, Metadata flow


async def test_offset_for_leader_epoch_waits_while_lost_batches_are_restored() -> None:
    """Held at the repair gate (the restored ranges must be known before it is answered);
    group APIs are not held there, nor it at the group gate."""
    from proxy.kafka.protocol import OFFSET_FOR_LEADER_EPOCH

    repair, group = _Gate(), _Gate()
    group.open()
    broker = Broker()
    client, proxy_side = trio.testing.memory_stream_pair()
    conn: ProxyConnection[PreparedProduce] = ProxyConnection(
        proxy_side, broker.connect, SETTINGS, group_gate=group, repair_gate=repair
    )
    epochs = request_frame(OFFSET_FOR_LEADER_EPOCH, 4, 5, replica_id=i32(-1), topics=())
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            heartbeat = _heartbeat(4)
            await client.send_all(heartbeat)
            assert await _receive(broker.broker_side, len(heartbeat)) == heartbeat  # flows
            await client.send_all(epochs)
            with trio.move_on_after(0.3):
                leaked = await broker.broker_side.receive_some(65536)
                raise AssertionError(f"forwarded while restoring: {leaked!r}")
            repair.open()
            assert await _receive(broker.broker_side, len(epochs)) == epochs
            nursery.cancel_scope.cancel()
