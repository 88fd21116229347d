"""Gateway mode, sans-IO: node id ranges, port mapping, the broker directory, validation,
and the KIP-951 node endpoints of Produce and Fetch responses."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v17 import response as fetch17
from kio.schema.produce.v12 import response as produce12
from kio.schema.types import BrokerId, TopicName
from kio.static.primitive import i32, i64

from proxy.config import ConfigError, load
from proxy.gateway import BrokerDirectory, NodePorts, parse_node_id_ranges
from proxy.kafka import node_endpoints
from proxy.kafka.codec import decode_response, encode

ZERO = datetime.timedelta(0)


def test_ranges_map_node_ids_to_consecutive_ports() -> None:
    ports = NodePorts(parse_node_id_ranges("0-2, 100-102,7", "x"), 9093)
    assert [ports.port_of(n) for n in (0, 1, 2, 100, 101, 102, 7)] == list(range(9093, 9100))
    assert ports.port_of(3) is None and ports.port_of(99) is None
    assert ports.count == 7 and ports.last_port == 9099
    assert ports.describe() == "0-2,100-102,7"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0-2,2-4", "0-2 and 2-4 overlap"),
        ("3-1", "'3-1' is not a range"),
        ("a-b", "'a-b' is not a node id"),
        ("", "no node id range"),
    ],
)
def test_bad_ranges_name_the_setting(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"gateway.node_id_ranges: {message}"):
        parse_node_id_ranges(text, "gateway.node_id_ranges")


def _gateway_env(**kw: str) -> dict[str, str]:
    env = {
        "WALPROXY_GATEWAY_ENABLED": "true",
        "WALPROXY_OFFLOAD_ENABLED": "false",
        "WALPROXY_GATEWAY_LISTEN": "127.0.0.1:19000",
        "WALPROXY_GATEWAY_BOOTSTRAP_SERVERS": "127.0.0.2:9092,127.0.0.2:9093",
        "WALPROXY_ADMIN_LISTEN": "127.0.0.1:9644",
    }
    for k, v in kw.items():
        env[k if k.startswith("OFFLOAD") else f"GATEWAY_{k.upper()}"] = v
    env = {k if k.startswith("WALPROXY_") else f"WALPROXY_{k}": v for k, v in env.items()}
    return env


def test_gateway_config_defaults() -> None:
    cfg = load(None, env=_gateway_env())
    assert cfg.gateway.enabled and cfg.gateway.node_id_ranges == "0-15"


def test_gateway_with_the_offloader_is_a_valid_config() -> None:
    cfg = load(None, env=_gateway_env(OFFLOAD_ENABLED="true"))
    assert cfg.gateway.enabled and cfg.offload.enabled


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"broker_port_base": "18999"}, "gateway.broker_port_base: broker ports 18999-19014"),
        ({"node_id_ranges": "0-1,1-2"}, "gateway.node_id_ranges: 0-1 and 1-2 overlap"),
        ({"node_id_ranges": "0-70000"}, "gateway.node_id_ranges: 70001 node ids"),
        ({"bootstrap_servers": ""}, "gateway.bootstrap_servers: at least one"),
        ({"bootstrap_servers": "h"}, "gateway.bootstrap_servers: expected host:port"),
        ({"listen": ""}, "gateway.listen: must be set"),
        ({"listen": "0.0.0.0:19000"}, "gateway.advertised_host: must be set"),
        ({"broker_port_base": "9640"}, "admin.listen: port 9644 is one of the gateway's ports"),
        (
            {"OFFLOAD_ENABLED": "true", "OFFLOAD_UPSTREAM": "127.0.0.2:9092"},
            "offload.upstream: not used in gateway mode",
        ),
        (
            {"OFFLOAD_ENABLED": "true", "OFFLOAD_BROKER_META_PROPERTIES": "/m.properties"},
            "offload.broker_meta_properties: not used in gateway mode",
        ),
    ],
)
def test_gateway_config_errors_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, env=_gateway_env(**env))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LISTEN_CERT": "/nonexistent.pem"}, "tls.listen_cert: file /nonexistent.pem does not"),
        ({"LISTEN_CLIENT_AUTH": "maybe"}, "tls.listen_client_auth: expected none"),
        ({"UPSTREAM_CA": "{f}"}, "tls.upstream: upstream certificates are set"),
        ({"LISTEN_CERT": "{f}", "LISTEN_KEY": "{f}"}, "tls.listen_cert: cannot load"),
        ({"LISTEN_CERT": "{f}"}, "tls.listen_key: tls.listen_cert and tls.listen_key go"),
    ],
)
def test_tls_config_errors_name_the_setting(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    f = tmp_path / "not-a-cert.pem"
    f.write_text("nothing\n")
    env = {f"WALPROXY_TLS_{k}": v.format(f=f) for k, v in env.items()}
    with pytest.raises(ConfigError, match=message):
        load(None, env=env)


def test_directory_learns_binds_once_and_follows_moves() -> None:
    bound: list[tuple[int, int]] = []
    d = BrokerDirectory(
        NodePorts(((1, 3),), 9100), "gw.example", lambda n, p: bound.append((n, p)) or True
    )
    assert d(2, "10.0.0.2", 9092) == ("gw.example", 9101)
    assert d(2, "10.0.0.2", 9092) == ("gw.example", 9101)
    assert bound == [(2, 9101)]
    assert d(2, "10.0.0.9", 9092) == ("gw.example", 9101)  # moved: same port, new target
    assert d.addresses[2] == ("10.0.0.9", 9092) and bound == [(2, 9101)]
    assert d(7, "10.0.0.7", 9092) is None  # outside the ranges: withheld
    assert d.outside_ranges({1: ("h", 1), 7: ("h", 2)}) == [7]


def test_directory_withholds_a_node_whose_port_cannot_be_bound_and_retries() -> None:
    attempts = []

    def bind(node: int, port: int) -> bool:
        attempts.append(node)
        return len(attempts) > 1

    d = BrokerDirectory(NodePorts(((0, 0),), 9100), "gw", bind)
    assert d(0, "h", 1) is None
    assert d(0, "h", 1) == ("gw", 9100)
    assert attempts == [0, 0]


def _resolve(node_id: int, host: str, port: int) -> tuple[str, int] | None:
    return None if node_id == 9 else ("gw", 9000 + node_id)


def _produce_response(endpoints: tuple[tuple[int, str, int], ...]) -> bytes:
    m = produce12
    partition = m.PartitionProduceResponse(
        index=i32(0),
        error_code=ErrorCode(6 if endpoints else 0),
        base_offset=i64(-1 if endpoints else 42),
        record_errors=(m.BatchIndexAndErrorMessage(batch_index=i32(0)),),
        error_message="moved" if endpoints else None,
        current_leader=m.LeaderIdAndEpoch(leader_id=BrokerId(2), leader_epoch=i32(5)),
    )
    body = m.ProduceResponse(
        responses=(m.TopicProduceResponse(name=TopicName("t"), partition_responses=(partition,)),),
        throttle_time=ZERO,
        node_endpoints=tuple(
            m.NodeEndpoint(node_id=BrokerId(n), host=h, port=i32(p), rack="r1")
            for n, h, p in endpoints
        ),
    )
    return encode(m.ProduceResponse.__header_schema__(correlation_id=i32(3)), body)


def _fetch_response(endpoints: tuple[tuple[int, str, int], ...]) -> bytes:
    m = fetch17
    partition = m.PartitionData(
        partition_index=i32(1),
        error_code=ErrorCode(6 if endpoints else 0),
        high_watermark=i64(10),
        aborted_transactions=(m.AbortedTransaction(producer_id=i64(1), first_offset=i64(2)),),
        records=b"\x00" * 300,  # opaque to the walker: skipped by length
    )
    body = m.FetchResponse(
        throttle_time=ZERO,
        error_code=ErrorCode(0),
        session_id=i32(0),
        responses=(m.FetchableTopicResponse(topic_id=uuid.uuid4(), partitions=(partition,)),),
        node_endpoints=tuple(
            m.NodeEndpoint(node_id=BrokerId(n), host=h, port=i32(p)) for n, h, p in endpoints
        ),
    )
    return encode(m.FetchResponse.__header_schema__(correlation_id=i32(4)), body)


@pytest.mark.parametrize(
    ("api_key", "version", "build"),
    [(0, 12, _produce_response), (1, 17, _fetch_response)],
)
def test_node_endpoints_are_rewritten_and_unknown_ones_dropped(
    api_key: int, version: int, build
) -> None:  # type: ignore[no-untyped-def]
    plain = build(())
    assert not node_endpoints.has_top_level_tags(api_key, version, plain)
    assert node_endpoints.rewrite_response(api_key, version, plain, _resolve) is plain
    moved = build(((2, "10.0.0.2", 9092), (9, "10.0.0.9", 9092)))
    assert node_endpoints.has_top_level_tags(api_key, version, moved)
    out = node_endpoints.rewrite_response(api_key, version, moved, _resolve)
    _, body = decode_response(api_key, version, out)
    assert [(int(e.node_id), e.host, int(e.port)) for e in body.node_endpoints] == [(2, "gw", 9002)]


def test_old_versions_and_truncated_responses() -> None:
    frame = _produce_response(((2, "h", 1),))
    assert node_endpoints.rewrite_response(0, 9, frame, _resolve) is frame  # v9: no endpoints
    from proxy.kafka.codec import CodecError

    with pytest.raises(CodecError):
        node_endpoints.has_top_level_tags(0, 12, frame[:20])


def test_scram_sha256_rfc7677_vector() -> None:
    from proxy.client.sasl_client import SaslError, ScramClient

    scram = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert scram.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert scram.final(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    scram.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(SaslError, match="signature does not match"):
        scram.verify(b"v=AAAA")
