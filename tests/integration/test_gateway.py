"""Gateway mode against a real 3-broker cluster that advertises its own addresses.

One cluster for the module (a controller and three brokers): the brokers' client listeners
(plaintext ``CLIENT``, ``SSL`` with client certificates required, ``SASL`` with PLAIN and
SCRAM users) are on 127.0.0.2 and advertise themselves; the gateways run on 127.0.0.1 and
are the only address clients are given. The brokers' ``DIRECT`` listeners, which the tests
use as their reference reads, are on 127.0.0.3.

While clients run, a :class:`SocketWatch` samples every TCP socket of this process and its
children (the Java tools) every 10 ms; a socket of anything but the gateways and the broker
JVMs with a remote address on 127.0.0.2 fails the test. The tests run in file order; the
last ones stop a broker and move leaders.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient

from offload import commit, layout
from offload.node_files import decode_broker_info, decode_lease
from offload.store import S3Store, open_store
from offload.verify import ScrubResult, scrub
from proxy.dev.cluster import DevCluster
from tests.offload.s3relay import S3Relay
from tests.s3server import S3Server, quick_offload_env

from . import clients as c
from . import rebuild_harness as h
from . import test_clients_aiokafka as aio
from . import test_clients_java as java
from . import test_clients_kafka_python as kp
from .durability import consume_all, wait_leaders
from .gateway_process import Gateway, SocketWatch
from .tls_ca import TestCA

pytestmark = pytest.mark.kafka

BROKER_HOST = "127.0.0.2"
DIRECT_HOST = "127.0.0.3"
PARTITIONS = 6
USERS = {"alice": "alice-secret", "walproxy": "walproxy-secret"}


class Env:
    def __init__(self, cluster: DevCluster, ca: TestCA, workdir: Path) -> None:
        self.cluster = cluster
        self.ca = ca
        self.workdir = workdir
        self.gateways: dict[str, Gateway] = {}

    def gateway(
        self, name: str, listener: str = "CLIENT", ports: int | None = None, **env: str
    ) -> Gateway:
        if name not in self.gateways:
            gw = Gateway(self.cluster, self.workdir / f"gw-{name}", listener=listener, **env)
            self.gateways[name] = gw  # before it starts: the socket watch must know its pid
            gw.start(ports=ports)
        return self.gateways[name]

    @property
    def plain(self) -> Gateway:
        return self.gateway("plain")

    def _allowed(self) -> set[int]:
        """The processes that may talk to brokers: the gateways and the brokers themselves."""
        allowed = {gw.process.pid for gw in self.gateways.values() if gw.process.proc}
        return allowed | {n.process.pid for n in self.cluster.nodes if n.process and n.process.proc}

    def watch(self) -> SocketWatch:
        return SocketWatch(BROKER_HOST, self._allowed)

    def topic(self, replication: int = 3, via: Gateway | None = None) -> str:
        admin = AdminClient({"bootstrap.servers": (via or self.plain).bootstrap})
        name = c.unique_tag("gw")
        config = {"min.insync.replicas": str(min(2, replication))}
        admin.create_topics(
            [NewTopic(name, PARTITIONS, replication, config=config)],
            operation_timeout=30,
        )[name].result(60)
        c.wait_until(
            lambda: _leaders(self.cluster.direct_bootstrap, name) >= set(range(PARTITIONS)),
            30,
            f"leaders for {name}",
        )
        return name


def _leaders(bootstrap: str, topic: str) -> set[int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    return set() if t is None or t.error else {p for p, m in t.partitions.items() if m.leader >= 0}


def _broker_overrides(ca: TestCA) -> dict[str, str]:
    broker = ca.issue("broker", ips=(BROKER_HOST,))
    mechanisms = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    plain_users = " ".join(f'user_{u}="{p}"' for u, p in USERS.items())
    out = {"sasl.enabled.mechanisms": mechanisms}
    for listener in ("sasl", "saslssl"):
        out[f"listener.name.{listener}.sasl.enabled.mechanisms"] = mechanisms
        out[f"listener.name.{listener}.plain.sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        )
        for m in ("scram-sha-256", "scram-sha-512"):
            out[f"listener.name.{listener}.{m}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
    for listener in ("ssl", "saslssl"):
        out |= {
            f"listener.name.{listener}.ssl.keystore.type": "PEM",
            f"listener.name.{listener}.ssl.keystore.location": str(broker.combined),
            f"listener.name.{listener}.ssl.truststore.type": "PEM",
            f"listener.name.{listener}.ssl.truststore.location": str(ca.cert),
        }
    out["listener.name.ssl.ssl.client.auth"] = "required"
    return out


@pytest.fixture(scope="module")
def env(artifacts_dir: Path) -> Iterator[Env]:
    workdir = artifacts_dir / "gateway"
    shutil.rmtree(workdir, ignore_errors=True)
    ca = TestCA(workdir / "ca")
    scram = [
        arg
        for user, pw in USERS.items()
        for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512")
        for arg in ("--add-scram", f"{mech}=[name={user},password={pw}]")
    ]
    cluster = DevCluster(
        workdir / "cluster",
        brokers=3,
        with_proxy=False,
        host=BROKER_HOST,
        direct_host=DIRECT_HOST,
        heap="512m",
        extra_listeners={"SSL": "SSL", "SASL": "SASL_PLAINTEXT", "SASLSSL": "SASL_SSL"},
        format_args=scram,
        broker_overrides=_broker_overrides(ca),
    )
    cluster.start()
    e = Env(cluster, ca, workdir)
    try:
        yield e
    finally:
        for gw in e.gateways.values():
            gw.stop()
        cluster.stop()


# -- endpoints --------------------------------------------------------------------------------
def test_every_endpoint_handed_out_is_the_gateways(env: Env) -> None:
    gw = env.plain
    topic = env.topic()
    want = {(gw.host, p) for p in gw.broker_ports.values()}
    md = AdminClient({"bootstrap.servers": gw.bootstrap}).list_topics(topic, timeout=30)
    assert {(b.host, b.port) for b in md.brokers.values()} == want
    assert {b.id: b.port for b in md.brokers.values()} == gw.broker_ports  # base + position
    assert {p.leader for p in md.topics[topic].partitions.values()} == {1, 2, 3}
    admin = AdminClient({"bootstrap.servers": gw.bootstrap})
    described = admin.describe_cluster(request_timeout=30).result(60)
    assert {(n.host, n.port) for n in described.nodes} == want
    kpa = KafkaAdminClient(bootstrap_servers=gw.bootstrap)
    try:
        assert {(b["host"], b["port"]) for b in kpa.describe_cluster()["brokers"]} == want
        for group in (c.unique_tag("coord") for _ in range(4)):
            node = c.wait_until(lambda g=group: _coordinator(kpa, g), 30, f"coordinator {group}")
            assert node in (1, 2, 3)
    finally:
        kpa.close()
    direct = AdminClient({"bootstrap.servers": env.cluster.direct_bootstrap}).list_topics(
        timeout=30
    )
    assert {b.host for b in direct.brokers.values()} == {DIRECT_HOST}


def _coordinator(admin: KafkaAdminClient, group: str) -> int | None:
    from kafka.errors import CoordinatorNotAvailableError

    try:
        return admin._find_coordinator_ids([group])[group]
    except CoordinatorNotAvailableError:
        return None


def test_kip951_node_endpoints_in_produce_and_fetch_are_rewritten(env: Env) -> None:
    """Produce v12 and Fetch v17 sent to a broker that does not host the partition: the
    NOT_LEADER_OR_FOLLOWER answer names the leader, and its endpoint is the gateway's.
    (Replication factor 1: a follower would serve the fetch.)"""
    import datetime

    from kio.schema.metadata.v12.request import MetadataRequestTopic
    from kio.static.primitive import i8, i32, i64

    from .rawkafka import RawConnection, metadata_frame, produce_frame, request_frame

    gw = env.plain
    topic = env.topic(replication=1)
    deadline = time.monotonic() + 30
    leader = -1
    while leader < 0:  # the bootstrap broker may not know the new topic's leader yet
        assert time.monotonic() < deadline, f"no leader for {topic}-0 in Metadata"
        with RawConnection(gw.bootstrap) as conn:
            conn.send(metadata_frame(1, (MetadataRequestTopic(name=topic, topic_id=None),)))
            _, md = conn.recv_response(3, 12)
        (t,) = md.topics
        leader = next((int(p.leader_id) for p in t.partitions if p.partition_index == 0), -1)
        if leader < 0:
            time.sleep(0.2)
    other = next(n for n in gw.broker_ports if n != leader)
    want = ("127.0.0.1", gw.broker_ports[leader])
    fetch_schema = __import__("kio.schema.fetch.v17.request", fromlist=["x"])
    fetch = request_frame(
        1,
        17,
        3,
        max_wait=datetime.timedelta(0),
        min_bytes=i32(0),
        isolation_level=i8(0),
        topics=(
            fetch_schema.FetchTopic(
                topic_id=t.topic_id,
                partitions=(
                    fetch_schema.FetchPartition(
                        partition=i32(0), fetch_offset=i64(0), partition_max_bytes=i32(1 << 20)
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
        rack_id="",
    )
    with RawConnection(f"127.0.0.1:{gw.broker_ports[other]}") as conn:
        conn.send(produce_frame(topic, 0, [b"kip-951"], acks=-1, correlation_id=2, version=12))
        _, produced = conn.recv_response(0, 12)
        conn.send(fetch)
        _, fetched = conn.recv_response(1, 17)
    (pr,) = produced.responses[0].partition_responses
    assert int(pr.error_code) == 6 and int(pr.current_leader.leader_id) == leader, pr
    assert [(e.host, int(e.port)) for e in produced.node_endpoints] == [want], produced
    (fp,) = fetched.responses[0].partitions
    assert int(fp.error_code) == 6 and int(fp.current_leader.leader_id) == leader, fp
    assert [(e.host, int(e.port)) for e in fetched.node_endpoints] == [want], fetched


# -- clients through the gateway only ---------------------------------------------------------
def _check_against_direct(env: Env, topic: str, seen: Sequence[c.Rec], msgs: Sequence[c.Msg]):
    c.assert_contents(seen, msgs, f"{topic} through the gateway")
    assert {r.partition for r in seen} == set(range(PARTITIONS))
    c.assert_same_records(seen, c.read_all(env.cluster.direct_bootstrap, topic), "vs direct")


def _confluent_round_trip(env: Env, gw: Gateway, per_partition: int, **config: str) -> str:
    """confluent-kafka produces to every partition and reads back through ``gw`` (watched),
    then the records are compared with a direct read. Returns the topic."""
    with env.watch() as watch:
        topic = env.topic()
        msgs = c.messages(per_partition * PARTITIONS, topic, PARTITIONS)
        c.confluent_produce(gw.bootstrap, topic, msgs, acks="all", **config)
        seen = c.confluent_consume(gw.bootstrap, topic, len(msgs), **config)
    watch.assert_clean(gw.ports)
    _check_against_direct(env, topic, seen, msgs)
    return topic


def test_confluent_kafka_python_and_aiokafka_through_the_gateway(env: Env) -> None:
    gw = env.plain
    persisted = gw.metric("walproxy_produce_batches_persisted_total")
    with env.watch() as watch:
        topic = env.topic()
        msgs = c.messages(40 * PARTITIONS, topic, PARTITIONS)
        c.confluent_produce(gw.bootstrap, topic, msgs, acks="all", **{"enable.idempotence": True})
        _check_against_direct(env, topic, c.confluent_consume(gw.bootstrap, topic, len(msgs)), msgs)

        topic = env.topic()
        msgs = c.messages(30 * PARTITIONS, topic, PARTITIONS)
        kp.produce(gw.bootstrap, topic, msgs, acks="all")
        _check_against_direct(env, topic, kp.consume(gw.bootstrap, topic, len(msgs)), msgs)

        topic = env.topic()
        msgs = c.messages(30 * PARTITIONS, topic, PARTITIONS)
        loop = asyncio.new_event_loop()
        try:
            aio.run(loop, aio.produce(gw.bootstrap, topic, msgs, acks="all"))
            seen = aio.run(loop, aio.consume(gw.bootstrap, topic, len(msgs)))
        finally:
            loop.close()
        _check_against_direct(env, topic, seen, msgs)
    watch.assert_clean(gw.ports)
    # the WAL path is the same in gateway mode: every batch went through it
    assert gw.metric("walproxy_produce_batches_persisted_total") > persisted


def test_java_client_and_tools_through_the_gateway(env: Env, tmp_path: Path) -> None:
    """KafkaProducer (Java) transactions to every partition, ConsoleConsumer reading back."""
    gw = env.plain
    topic = env.topic()
    run = java.java_txn_runner(tmp_path, gw.bootstrap, topic)

    def consume(n: int, committed: bool) -> list[c.Rec]:
        return java.console_consume(gw.bootstrap, topic, n, committed=committed)

    with env.watch() as watch:
        c.transaction_scenario(run, consume, env.cluster.direct_bootstrap, topic, PARTITIONS, "gwj")
    watch.assert_clean(gw.ports)


def test_consumer_group_through_the_gateway(env: Env) -> None:
    gw = env.plain
    topic = env.topic()
    with env.watch() as watch:
        c.group_scenario(
            lambda name, group: c.ConfluentMember(name, group, gw.bootstrap, topic, "classic"),
            lambda msgs: c.confluent_produce(gw.bootstrap, topic, msgs, acks="all"),
            env.cluster.direct_bootstrap,
            topic,
            PARTITIONS,
            "gw",
        )
    watch.assert_clean(gw.ports)


def test_transactions_through_the_gateway(env: Env) -> None:
    gw = env.plain
    topic = env.topic()
    with env.watch() as watch:
        c.confluent_transaction_scenario(
            gw.bootstrap, env.cluster.direct_bootstrap, topic, PARTITIONS, "gw"
        )
    watch.assert_clean(gw.ports)


# -- TLS ----------------------------------------------------------------------------------------
def _tls_gateway(env: Env, client_auth: str = "required") -> Gateway:
    name = f"tls-{client_auth}"
    if name in env.gateways:
        return env.gateways[name]
    gw_cert = env.ca.issue(f"gateway-{name}", ips=("127.0.0.1",))
    upstream_client = env.ca.issue(f"walproxy-upstream-{name}", client=True)
    return env.gateway(
        name,
        listener="SSL",
        WALPROXY_TLS_LISTEN_CERT=str(gw_cert.cert),
        WALPROXY_TLS_LISTEN_KEY=str(gw_cert.key),
        WALPROXY_TLS_LISTEN_CLIENT_CA=str(env.ca.cert),
        WALPROXY_TLS_LISTEN_CLIENT_AUTH=client_auth,
        WALPROXY_TLS_UPSTREAM="true",
        WALPROXY_TLS_UPSTREAM_CA=str(env.ca.cert),
        WALPROXY_TLS_UPSTREAM_CERT=str(upstream_client.cert),
        WALPROXY_TLS_UPSTREAM_KEY=str(upstream_client.key),
        WALPROXY_TLS_RELOAD_CHECK_S="0.2",
    )


def _tls_client_config(env: Env, with_cert: bool = True) -> dict[str, str]:
    config = {"security.protocol": "SSL", "ssl.ca.location": str(env.ca.cert)}
    if with_cert:
        client = env.ca.issue("client-app", client=True)
        config |= {
            "ssl.certificate.location": str(client.cert),
            "ssl.key.location": str(client.key),
        }
    return config


def test_tls_both_sides_with_client_certificates(env: Env) -> None:
    gw = _tls_gateway(env)
    tls = _tls_client_config(env)
    _confluent_round_trip(env, gw, 20, **tls)
    topic = env.topic()
    md = AdminClient({"bootstrap.servers": gw.bootstrap, **tls}).list_topics(topic, timeout=30)
    assert {(b.host, b.port) for b in md.brokers.values()} == {
        (gw.host, p) for p in gw.broker_ports.values()
    }


def test_tls_client_without_certificate_is_refused(env: Env) -> None:
    gw = _tls_gateway(env)
    consumer = Consumer(
        {
            "bootstrap.servers": gw.bootstrap,
            "group.id": c.unique_tag("nocert"),
            **_tls_client_config(env, with_cert=False),
        }
    )
    try:
        with pytest.raises(KafkaException):
            consumer.list_topics(timeout=5)
    finally:
        consumer.close()
    # and at the TLS level: the handshake itself fails without a certificate
    ctx = ssl.create_default_context(cafile=str(env.ca.cert))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _tls_round_trip(ctx, gw.port)
    assert gw.metric('walproxy_decode_errors_total{reason="tls_handshake"}') >= 1


def _tls_round_trip(ctx: ssl.SSLContext, port: int) -> ssl.SSLSocket:
    """Connect, handshake, and send an ApiVersions v0 request; return the socket."""
    import socket

    from proxy.kafka.apiversions import api_versions_v0_request

    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    s.sendall(api_versions_v0_request(1))
    if not s.recv(4):  # TLS 1.3: a refused client certificate shows up on the first read
        raise ConnectionError("closed")
    return s


def test_tls_certificates_are_reloaded_without_restart(env: Env) -> None:
    gw = _tls_gateway(env, client_auth="optional")
    ctx = ssl.create_default_context(cafile=str(env.ca.cert))
    before = _tls_round_trip(ctx, gw.port)
    serial_before = before.getpeercert()["serialNumber"]
    # a new certificate for the same name, written over the files the gateway was given
    renewed = env.ca.issue("gateway-renewed", ips=("127.0.0.1",))
    shutil.copy(renewed.key, env.workdir / "ca" / "gateway-tls-optional.key")
    shutil.copy(renewed.cert, env.workdir / "ca" / "gateway-tls-optional.crt")

    def serial_now() -> str | None:
        s = _tls_round_trip(ctx, gw.port)
        try:
            serial = s.getpeercert()["serialNumber"]
        finally:
            s.close()
        return serial if serial != serial_before else None

    c.wait_until(serial_now, 15, "the gateway to serve the renewed certificate", 0.3)
    # the connection opened before the reload is still served
    from proxy.kafka.apiversions import api_versions_v0_request

    before.sendall(api_versions_v0_request(2))
    assert before.recv(4)
    before.close()
    topic = env.topic()
    msgs = c.messages(6 * PARTITIONS, topic, PARTITIONS)
    tls = {"security.protocol": "SSL", "ssl.ca.location": str(env.ca.cert)}
    c.confluent_produce(gw.bootstrap, topic, msgs, acks="all", **tls)
    _check_against_direct(
        env, topic, c.confluent_consume(gw.bootstrap, topic, len(msgs), **tls), msgs
    )


# -- SASL ---------------------------------------------------------------------------------------
def _sasl_gateway(env: Env) -> Gateway:
    return env.gateway(
        "sasl",
        listener="SASL",
        WALPROXY_SASL_MECHANISM="SCRAM-SHA-512",
        WALPROXY_SASL_USERNAME="walproxy",
        WALPROXY_SASL_PASSWORD=USERS["walproxy"],
    )


def _sasl(mechanism: str, user: str, password: str) -> dict[str, str]:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_passes_through(env: Env, mechanism: str) -> None:
    gw = _sasl_gateway(env)
    auth = _sasl(mechanism, "alice", USERS["alice"])
    with env.watch() as watch:
        topic = env.topic()
        msgs = c.messages(10 * PARTITIONS, topic, PARTITIONS)
        c.confluent_produce(gw.bootstrap, topic, msgs, acks="all", **auth)
        seen = c.confluent_consume(gw.bootstrap, topic, len(msgs), **auth)
        # kafka-python speaks SASL too (its own SCRAM implementation)
        kp_topic = env.topic()
        kp_msgs = c.messages(5 * PARTITIONS, kp_topic, PARTITIONS)
        kp_auth = {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": "alice",
            "sasl_plain_password": USERS["alice"],
        }
        kp.produce(gw.bootstrap, kp_topic, kp_msgs, acks="all", **kp_auth)
    watch.assert_clean(gw.ports)
    _check_against_direct(env, topic, seen, msgs)
    c.assert_contents(c.read_all(env.cluster.direct_bootstrap, kp_topic), kp_msgs, "kp SASL")


def test_sasl_over_tls_passes_through(env: Env) -> None:
    """SASL_SSL: SCRAM inside TLS on both sides (clients -> gateway -> broker); the
    gateway's offloaders reach the brokers the same way (here to a ``file://`` target)."""
    gw_cert = env.ca.issue("gateway-sasl-ssl", ips=("127.0.0.1",))
    target = env.workdir / "offload-sasl-ssl"
    gw = env.gateway(
        "sasl-ssl",
        listener="SASLSSL",
        WALPROXY_OFFLOAD_ENABLED="true",
        WALPROXY_OFFLOAD_TARGET=f"file://{target}",
        WALPROXY_OFFLOAD_MAX_LAG_S="0.3",
        WALPROXY_TLS_LISTEN_CERT=str(gw_cert.cert),
        WALPROXY_TLS_LISTEN_KEY=str(gw_cert.key),
        WALPROXY_TLS_UPSTREAM="true",
        WALPROXY_TLS_UPSTREAM_CA=str(env.ca.cert),
        WALPROXY_SASL_MECHANISM="SCRAM-SHA-256",
        WALPROXY_SASL_USERNAME="walproxy",
        WALPROXY_SASL_PASSWORD=USERS["walproxy"],
    )
    auth = {
        **_sasl("SCRAM-SHA-256", "alice", USERS["alice"]),
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(env.ca.cert),
    }
    topic = _confluent_round_trip(env, gw, 10, **auth)
    store = open_store(f"file://{target}")
    admin = AdminClient({"bootstrap.servers": env.cluster.direct_bootstrap})
    cluster_id = admin.describe_cluster(request_timeout=30).result(60).cluster_id
    ends = c.end_offsets(env.cluster.direct_bootstrap, topic, PARTITIONS)

    def copied() -> dict[int, int]:
        res = scrub(store, cluster_id)
        assert not res.anomalies, [f.line() for f in res.anomalies]
        return {p: m.next_offset for (t, p), m in res.manifests.items() if t == topic}

    c.wait_until(lambda: copied() == ends, 60, f"the SASL_SSL offloaders to copy {topic}")


def _auth_failure(bootstrap: str, auth: dict[str, str]) -> str:
    """The broker's reason, as librdkafka reports it, for refusing the credentials."""
    errors: list[str] = []
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, **auth, "error_cb": lambda e: errors.append(e.str())}
    )
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        admin.poll(0.2)
    assert errors, f"no authentication error reported via {bootstrap}"
    # "<address>/bootstrap: SASL authentication error: <reason> (after 3ms in state ...)"
    match = re.search(r"SASL authentication error: (.*?)(?: \(after \d+ms|$)", errors[0])
    assert match, errors
    return match.group(1)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_wrong_password_fails_like_it_does_directly(env: Env, mechanism: str) -> None:
    gw = _sasl_gateway(env)
    auth = _sasl(mechanism, "alice", "not-the-password")
    through = _auth_failure(gw.bootstrap, auth)
    direct = _auth_failure(env.cluster.listener_bootstrap("SASL"), auth)
    assert "Authentication failed" in through, through
    assert through == direct  # the broker's own words, untouched by the gateway


# -- the offloader in gateway mode ---------------------------------------------------------------
class OffloadGateway:
    """A gateway that also offloads the whole cluster to S3 (moto), one offloader per broker,
    to a bucket of its own (through ``endpoint_url``, e.g. a fault relay, if given)."""

    def __init__(
        self, env: Env, s3: S3Server, name: str = "offload", endpoint_url: str | None = None
    ) -> None:
        bucket = s3.new_bucket()
        self.gw = env.gateway(
            name,
            WALPROXY_OFFLOAD_ENABLED="true",
            WALPROXY_OFFLOAD_TARGET=f"s3://{bucket}/gw",
            **quick_offload_env(endpoint_url or s3.endpoint_url),
            WALPROXY_GATEWAY_METADATA_REFRESH_S="1",
        )
        self.store = S3Store(bucket, "gw/", endpoint_url=s3.endpoint_url, region="us-east-1")
        admin = AdminClient({"bootstrap.servers": env.cluster.direct_bootstrap})
        self.cluster_id = admin.describe_cluster(request_timeout=30).result(60).cluster_id
        self.direct = env.cluster.direct_bootstrap

    def scrub_until_caught_up(self, topic: str, timeout: float = 60) -> ScrubResult:
        """Wait until every partition's manifest reaches the broker's log end; scrub clean."""
        ends = c.end_offsets(self.direct, topic, PARTITIONS)
        last: list[ScrubResult] = []

        def caught_up() -> bool:
            last[:] = [scrub(self.store, self.cluster_id)]
            got = {p: m.next_offset for (t, p), m in last[0].manifests.items() if t == topic}
            return got == ends

        c.wait_until(caught_up, timeout, f"the S3 copy of {topic} to reach {ends}")
        res = last[0]
        assert not res.anomalies, [f.line() for f in res.anomalies]
        return res

    def hosted(self, node_id: int) -> dict[str, tuple[int, ...]]:
        info = decode_broker_info(self.store.get(layout.broker_key(self.cluster_id, node_id)).data)
        return {name: t.partitions for name, t in info.topics.items()}

    def lease_epoch(self, node_id: int) -> int:
        key = layout.lease_key(self.cluster_id, node_id)
        return decode_lease(self.store.get(key).data).epoch


@pytest.fixture(scope="module")
def offload_gw(env: Env, s3_server: S3Server) -> OffloadGateway:
    return OffloadGateway(env, s3_server)


def _leader_by_partition(bootstrap: str, topic: str) -> dict[int, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p: m.leader for p, m in md.topics[topic].partitions.items()}


def test_gateway_offloads_every_brokers_partitions(env: Env, offload_gw: OffloadGateway) -> None:
    gw = offload_gw.gw
    topic = env.topic()
    msgs = c.messages(20 * PARTITIONS, topic, PARTITIONS)
    with env.watch() as watch:
        c.confluent_produce(gw.bootstrap, topic, msgs, acks="all", **{"enable.idempotence": True})
        seen = c.confluent_consume(gw.bootstrap, topic, len(msgs))  # the watch sees a while
    watch.assert_clean(gw.ports)
    with urllib.request.urlopen(f"http://{gw.host}:{gw.admin_port}/status", timeout=10) as r:
        status = json.load(r)
    assert (status["mode"], status["listen"]) == ("gateway", gw.bootstrap)
    wal_last = status["wal"]["last_lsn"]  # live, unlike the trimmer's sampled gauge
    res = offload_gw.scrub_until_caught_up(topic)
    assert sum(m.next_offset for (t, _), m in res.manifests.items() if t == topic) == len(msgs)
    # Each partition is offloaded by its leader's offloader, which says so in its broker.json.
    leaders = _leader_by_partition(env.cluster.direct_bootstrap, topic)
    assert len(set(leaders.values())) == 3, leaders  # the test means something: 3 leaders
    for p, leader in leaders.items():
        assert res.manifests[(topic, p)].writer_node == leader
        c.wait_until(
            lambda p=p, leader=leader: p in offload_gw.hosted(leader).get(topic, ()),
            30,
            f"broker.json of node {leader} to list {topic}-{p}",
        )
    # The gateway's WAL is trimmed once S3 covers what it held, across all three brokers.
    c.wait_until(
        lambda: gw.metric("walproxy_offload_wal_trimmed_lsn") >= wal_last > 0,
        30,
        f"the gateway's WAL trimmed up to {wal_last}",
    )
    _check_against_direct(env, topic, seen, msgs)
    # `walproxy offload verify` with the gateway's own configuration checks every broker's
    # partitions against the copy; `walproxy offload` refuses: the gateway runs them.
    argv = [sys.executable, "-m", "proxy", "offload"]
    out = subprocess.run(
        [*argv, "verify"], env=gw.process.env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"cluster {offload_gw.cluster_id} all brokers:" in out.stdout
    assert " 0 anomalies" in out.stdout and "ANOMALY" not in out.stdout
    alone = subprocess.run(argv, env=gw.process.env, capture_output=True, text=True, timeout=60)
    assert alone.returncode == 2 and "gateway.enabled: in gateway mode" in alone.stderr


# -- brokers stopping, leaders moving -----------------------------------------------------------
def _elect_preferred(admin: AdminClient, topic: str) -> None:
    from confluent_kafka import ElectionType

    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    try:
        admin.elect_leaders(ElectionType.PREFERRED, tps).result(30)
    except KafkaException:
        pass  # ELECTION_NOT_NEEDED for partitions already led by their preferred replica


def test_broker_stop_and_leader_moves_without_restart(env: Env, offload_gw: OffloadGateway) -> None:
    """Through the offloading gateway: its offloaders follow the leaders as they move."""
    gw = offload_gw.gw
    topic = env.topic()
    node = env.cluster.node(2)
    assert node.process is not None
    epoch_before = offload_gw.lease_epoch(2)
    lots = [c.messages(10 * PARTITIONS, f"{topic}-{i}", PARTITIONS) for i in range(3)]
    produce_kw = {"acks": "all", "enable.idempotence": True}
    with env.watch() as watch:
        c.confluent_produce(gw.bootstrap, topic, lots[0], **produce_kw)
        node.process.stop()  # controlled shutdown: broker 2's leaders move to 1 and 3
        c.wait_until(
            lambda: 2 not in _leader_ids(gw.bootstrap, topic), 60, "leaders to leave broker 2"
        )
        # a gateway started now learns only brokers 1 and 3 ...
        late = env.gateway("late", ports=2, WALPROXY_GATEWAY_METADATA_REFRESH_S="1")
        assert late.metric("walproxy_gateway_broker_ports") == 2
        c.confluent_produce(gw.bootstrap, topic, lots[1], **produce_kw)
        kp.produce(gw.bootstrap, topic, lots[1][:6], acks="all")
        node.process.start()
        c.wait_until(lambda: _in_sync(env, topic), 90, "broker 2 back in every ISR")
        _elect_preferred(AdminClient({"bootstrap.servers": gw.bootstrap}), topic)
        c.wait_until(lambda: 2 in _leader_ids(gw.bootstrap, topic), 60, "leaders back on 2")
        c.confluent_produce(gw.bootstrap, topic, lots[2], **produce_kw)
        seen = c.confluent_consume(gw.bootstrap, topic, sum(map(len, lots)) + 6)
        # ... and binds broker 2's port once it is back
        c.wait_until(
            lambda: late.metric("walproxy_gateway_broker_ports") == 3, 30, "late gateway port"
        )
        seen_late = c.confluent_consume(late.bootstrap, topic, len(seen))
    watch.assert_clean(gw.ports | late.ports)
    c.assert_contents(seen, lots[0] + lots[1] + lots[1][:6] + lots[2], "across a broker stop")
    c.assert_same_records(seen, c.read_all(env.cluster.direct_bootstrap, topic), "vs direct")
    c.assert_same_records(seen_late, seen, "late gateway")
    assert gw.process.alive and gw.metric("walproxy_gateway_broker_ports") == 3
    # The S3 copy is whole across the moves: broker 2's offloader stopped when it left, the
    # others took its partitions over, and a new one (next epoch) took them back.
    res = offload_gw.scrub_until_caught_up(topic)
    leaders = _leader_by_partition(env.cluster.direct_bootstrap, topic)
    assert 2 in leaders.values()
    for p, leader in leaders.items():
        assert res.manifests[(topic, p)].writer_node == leader, (p, leader)
    assert offload_gw.lease_epoch(2) > epoch_before
    assert gw.metric("walproxy_offload_fenced") == 0


def _leader_ids(bootstrap: str, topic: str) -> set[int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.leader for p in md.topics[topic].partitions.values()}


def _in_sync(env: Env, topic: str) -> bool:
    md = AdminClient({"bootstrap.servers": env.cluster.direct_bootstrap}).list_topics(
        topic, timeout=10
    )
    return all(len(p.isrs) == 3 for p in md.topics[topic].partitions.values())


def test_gateway_refuses_to_start_with_a_broker_outside_its_ranges(env: Env) -> None:
    gw = Gateway(env.cluster, env.workdir / "gw-bad-ranges", WALPROXY_GATEWAY_NODE_ID_RANGES="1-2")
    proc = subprocess.run(
        gw.process.argv, env=gw.process.env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "gateway.node_id_ranges: broker node id(s) [3] are outside 1-2" in proc.stderr


def test_a_second_offloading_gateway_fences_the_first(env: Env, offload_gw: OffloadGateway) -> None:
    """Leases are per broker node: a second gateway offloading the same cluster to the same
    target takes them over, and the first stops offloading and says so (docs/gateway.md)."""
    first = offload_gw.gw
    epochs = {n: offload_gw.lease_epoch(n) for n in (1, 2, 3)}
    second = env.gateway(
        "offload-second",
        **{k: v for k, v in first.process.env.items() if k.startswith("WALPROXY_OFFLOAD_")},
        WALPROXY_GATEWAY_METADATA_REFRESH_S="1",
    )
    c.wait_until(
        lambda: all(offload_gw.lease_epoch(n) > e for n, e in epochs.items()),
        60,
        "the second gateway to take every broker's lease",
    )
    # The first finds out at its next write: the next upload.
    topic = env.topic()
    msgs = c.messages(5 * PARTITIONS, topic, PARTITIONS)
    c.confluent_produce(first.bootstrap, topic, msgs, acks="all")
    c.wait_until(lambda: first.metric("walproxy_offload_fenced") == 1, 60, "the first fenced")
    try:
        urllib.request.urlopen(f"http://{first.host}:{first.admin_port}/readyz", timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 503 and "offload fenced" in exc.read().decode()
    else:
        raise AssertionError("/readyz of a fenced gateway answered 200")
    # The second one carries on: the copy of the topic is whole, and it is not fenced.
    offload_gw.scrub_until_caught_up(topic)
    assert second.metric("walproxy_offload_fenced") == 0
    assert first.process.alive  # produce goes on through the fenced gateway


# -- a broker's disk lost: rebuild from S3 plus the gateway's WAL (runs last) ----------------
def _read(bootstrap: str, topic: str, isolation: str) -> set[tuple[int, int, bytes]]:
    got = consume_all(bootstrap, topic, PARTITIONS, timeout=120, isolation=isolation)
    seen = {(p, o, v) for p, recs in got.items() for o, v in recs}
    assert sum(len(r) for r in got.values()) == len(seen)  # each once
    return seen


def _elect_rebuilt(bootstrap: str, topic: str, partitions: list[int]) -> list[int]:
    """The operator's step after a rebuild: an unclean election of the partitions whose only
    replica was the rebuilt broker. Once the controller fenced the lost broker, Kafka 4.1
    (eligible leader replicas) leaves such a partition without a leader (ISR empty, the
    broker only its last known leader) and elects none by itself when it comes back. Returns
    the partitions that had no leader."""
    from confluent_kafka import ElectionType

    admin = AdminClient({"bootstrap.servers": bootstrap})
    leaders = _leader_by_partition(bootstrap, topic)
    leaderless = [p for p in partitions if leaders[p] < 0]

    def elected() -> bool:
        todo = [p for p, leader in _leader_by_partition(bootstrap, topic).items() if leader < 0]
        if todo:  # refused while the restarted broker is still fenced: try again
            tps = [TopicPartition(topic, p) for p in todo]
            with contextlib.suppress(KafkaException):
                admin.elect_leaders(ElectionType.UNCLEAN, tps).result(30)
        return not todo

    c.wait_until(elected, 120, f"a leader for {topic} {leaderless}")
    return leaderless


def test_gateway_rebuild_restores_transactions_only_in_its_wal(
    env: Env, s3_server: S3Server, tmp_path: Path
) -> None:
    """One gateway in front of the three brokers, offloading to S3 through a fault relay. A
    transactional producer (confluent-kafka) commits and aborts transactions over the six
    partitions of a topic with replication factor 1 (each broker leads two): the first ones
    while S3 copies them (batches and markers), the rest while S3 is unreachable (their
    batches are in the gateway's WAL only; their markers were written broker to broker,
    never through the gateway). The leader of partition 0 loses its disk; with the gateway
    stopped (the rebuild refuses a WAL in use), ``walproxy rebuild`` with the gateway's
    configuration restores that broker alone from S3 plus the WAL, writing each
    transaction's marker from the EndTxn outcome the WAL recorded. Afterwards a
    read_committed consumer reads every committed and plain record once at its acknowledged
    offset and no aborted one, directly and through the restarted gateway. Negative
    controls: the same WAL without gateway mode refuses (the other brokers' batches have no
    manifest of this node), and without its END_TXN entries it refuses the lost node's
    transactional batches. Runs last: it wipes a broker of the module's cluster."""
    import wal
    from offload import rebuild as rb
    from offload.wal_tail import collect
    from proxy.durable.wal_entries import END_TXN, END_TXN_OUTCOME

    relay = S3Relay((s3_server.host, s3_server.port))
    t0 = time.monotonic()
    try:
        og = OffloadGateway(env, s3_server, name="rebuild", endpoint_url=relay.endpoint_url)
        gw, direct = og.gw, env.cluster.direct_bootstrap
        topic = env.topic(replication=1, via=gw)
        leaders = _leader_by_partition(direct, topic)
        lost = leaders[0]
        mine = sorted(p for p, leader in leaders.items() if leader == lost)
        assert set(leaders.values()) == {1, 2, 3} and len(mine) == PARTITIONS // 3, leaders
        tag = c.unique_tag("gwtxn")
        first = h.plain_acked(gw.bootstrap, topic, PARTITIONS, tag, PARTITIONS)
        early = h.transactions(gw.bootstrap, topic, [True, False, True], f"{tag}-s3", PARTITIONS)
        c.wait_stable(direct, topic, PARTITIONS)  # the last commit's markers are in the logs
        og.scrub_until_caught_up(topic)  # ... and in S3, with the batches they decide
        relay.set_mode("stall")
        try:
            outcomes = [True, False, True, True, False, True]
            txns = h.transactions(gw.bootstrap, topic, outcomes, tag, PARTITIONS)
            c.wait_stable(direct, topic, PARTITIONS)  # no marker still on its way to `lost`
            info = decode_broker_info(og.store.get(layout.broker_key(og.cluster_id, lost)).data)
            keys = {
                p: layout.manifest_key(og.cluster_id, info.topics[topic].topic_id, p) for p in mine
            }
            copied = {p: commit.read_manifest(og.store, k).manifest for p, k in keys.items()}
            node = env.cluster.node(lost)
            assert node.process is not None
            node.process.kill()  # the disk dies under the running gateway ...
            for d in h.broker_dirs(env.cluster, lost):
                shutil.rmtree(d)
            c.wait_until(  # a new disk takes longer than the broker's session: fenced
                lambda: all(_leader_by_partition(direct, topic)[p] < 0 for p in mine),
                60,
                f"the controller to fence broker {lost}",
            )
            gw.stop()  # ... which is stopped for the rebuild (it holds the one WAL)
        finally:
            relay.set_mode("pass")
        produced_s = time.monotonic() - t0
        for p in mine:  # the S3 copy ends before the transactions of the stall
            m = copied[p]
            assert m is not None
            assert m.next_offset <= min(a.offset for a in txns.committed if a.partition == p)

        wal_dir = str(gw.wal_dir)
        facts = collect(wal.read_directory(wal_dir))
        ends = [e for e in facts.end_txns if e.entry.transactional_id == f"tx-{tag}"]
        assert len(ends) == len(outcomes) and all(e.outcome is not None for e in ends)
        opts = rb.RebuildOptions(log_dir=tmp_path / "unused", node_id=lost, gateway_wal=True)
        # negative controls: not as a gateway's WAL, then without the EndTxn entries
        with pytest.raises(rb.RebuildError, match="no manifest for this partition") as refused:
            rb.plan(og.store, dataclasses.replace(opts, gateway_wal=False), rb.Report(), facts)
        assert f"{topic}-" in str(refused.value)
        stripped = collect(
            e for e in wal.read_directory(wal_dir) if e.type not in (END_TXN, END_TXN_OUTCOME)
        )
        with pytest.raises(rb.RebuildError, match="transactional WAL batch") as refused:
            rb.plan(og.store, opts, rb.Report(), stripped)
        named = str(refused.value)
        assert any(f"{topic}-{p}:" in named for p in mine) and "producer id" in named, named

        run = h.rebuild_node(env.cluster, lost, gw.process.env or {}, "--node-id", str(lost))
        report = h.report_of(run)
        committed_n, aborted_n = outcomes.count(True), outcomes.count(False)
        assert report["txn_restored_committed"] == committed_n
        assert report["txn_restored_aborted"] == aborted_n
        assert report["txn_markers_written"] == len(outcomes) * len(mine)
        assert report["txn_batches_refused"] == 0
        assert report["wal_tail_elsewhere"] > 0  # the other brokers' batches, left to them
        t1 = time.monotonic()
        env.cluster.start_broker(lost)
        env.cluster.wait_ready(180)
        leaderless = _elect_rebuilt(direct, topic, mine)
        wait_leaders(direct, topic, PARTITIONS, timeout=120)
        restarted_s = time.monotonic() - t1
        # The gateway again on its WAL (new ports: its old ones may be taken by now)
        own = ("WALPROXY_GATEWAY_LISTEN", "WALPROXY_ADMIN_LISTEN")
        settings = {k: v for k, v in (gw.process.env or {}).items() if k.startswith("WALPROXY_")}
        again = Gateway(
            env.cluster, gw.wal_dir.parent, **{k: v for k, v in settings.items() if k not in own}
        )
        env.gateways["rebuild-again"] = again.start()
        seen = _read(direct, topic, "read_committed")
        kept = first + early.committed + early.plain + txns.committed + txns.plain
        for a in kept:
            assert (a.partition, a.offset, a.value) in seen, a
        aborted = early.aborted + txns.aborted
        assert not {a.value for a in aborted} & {v for _, _, v in seen}
        assert len(seen) == len(kept)  # nothing else: no marker read as a record
        everything = _read(direct, topic, "read_uncommitted")
        for a in kept + aborted:
            assert (a.partition, a.offset, a.value) in everything, a
        assert _read(again.bootstrap, topic, "read_committed") == seen  # through the gateway
        lost_records = sum(1 for a in kept if a.partition in mine)
        print(
            f"gateway rebuild of broker {lost} (partitions {mine} of {PARTITIONS}): "
            f"{len(early.committed) + len(early.aborted)} records in 3 transactions copied "
            f"to S3 first; then, S3 stalled, {committed_n} committed + {aborted_n} aborted "
            f"({len(txns.committed)} + {len(txns.aborted)} records) and {len(txns.plain)} "
            f"plain; rebuild: {report['tail_batches']} tail batches, "
            f"{report['txn_markers_written']} markers written, {report['wal_tail_elsewhere']} "
            f"batches of other brokers left out, {run.seconds:.1f} s; broker ready and "
            f"partitions {leaderless} elected (unclean) {restarted_s:.1f} s later; "
            f"read_committed {len(seen)} records ({lost_records} on "
            f"the rebuilt broker), aborted seen 0 (read_uncommitted {len(everything)}); "
            f"produce {produced_s:.1f} s"
        )
    finally:
        relay.close()
