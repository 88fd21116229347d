"""A 3-broker cluster started by ``walproxy dev up --brokers 3``, used through its sidecars.

One cluster for the whole module: the CLI runs as a subprocess, the bootstrap servers come
from its stdout, and SIGTERM at the end must stop it cleanly (exit 0) within a minute.
Topics have 6 partitions and replication factor 3, so leaders, replicas, group and
transaction coordinators are spread over all three brokers.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient
from kafka.errors import CoordinatorNotAvailableError

from . import clients as c

pytestmark = pytest.mark.kafka

PARTITIONS = 6


@dataclass
class ThreeBrokers:
    proc: subprocess.Popen[str]
    bootstrap: str
    workdir: Path
    output: list[str] = field(default_factory=list)

    @property
    def proxy_ports(self) -> set[int]:
        return c.proxy_ports(self.bootstrap)

    def _listeners(self) -> dict[int, dict[str, int]]:
        """Per broker id: the port of each listener, from its server.properties."""
        out: dict[int, dict[str, int]] = {}
        for props in sorted(self.workdir.glob("broker-*/server.properties")):
            text = props.read_text()
            node_id = int(re.search(r"^node\.id=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
            listeners = re.search(r"^listeners=(.*)$", text, re.M).group(1)  # type: ignore[union-attr]
            out[node_id] = {
                name: int(port) for name, port in re.findall(r"(\w+)://[^:,]+:(\d+)", listeners)
            }
        return out

    @property
    def broker_ports(self) -> set[int]:
        """Every port a broker itself listens on (what clients must never be handed)."""
        return {p for ports in self._listeners().values() for p in ports.values()}

    @property
    def direct_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p['DIRECT']}" for p in self._listeners().values())


def _walproxy() -> str:
    script = Path(sys.executable).parent / "walproxy"
    return str(script) if script.exists() else shutil.which("walproxy") or "walproxy"


@pytest.fixture(scope="module")
def cluster(artifacts_dir: Path) -> Iterator[ThreeBrokers]:
    workdir = artifacts_dir / "three-brokers"
    shutil.rmtree(workdir, ignore_errors=True)
    proc = subprocess.Popen(
        [_walproxy(), "dev", "up", "--brokers", "3", "--data-dir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("  bootstrap servers: "):
                ready.set()
        ready.set()  # EOF: it exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(240)
        line = next((x for x in output if x.startswith("  bootstrap servers: ")), None)
        assert line is not None, "walproxy dev up printed no bootstrap servers:\n" + "".join(output)
        bootstrap = line.split(":", 1)[1].strip()
        assert len(bootstrap.split(",")) == 3, bootstrap
        yield ThreeBrokers(proc, bootstrap, workdir, output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        reader.join(5)
    assert rc == 0, f"walproxy dev up exited {rc} after SIGTERM:\n" + "".join(output[-40:])
    assert any("stopping" in x for x in output), "walproxy dev up did not report stopping"


def _topic(cluster: ThreeBrokers, **config: str) -> str:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    name = c.unique_tag("t3")
    admin.create_topics(
        [NewTopic(name, PARTITIONS, 3, config={"min.insync.replicas": "2", **config})],
        operation_timeout=30,
    )[name].result(60)

    def known_everywhere() -> bool:  # every broker has the new topic's metadata
        for one in cluster.bootstrap.split(","):
            md = AdminClient({"bootstrap.servers": one}).list_topics(name, timeout=10)
            parts = md.topics[name].partitions
            if len(parts) != PARTITIONS or any(p.leader < 0 for p in parts.values()):
                return False
        return True

    c.wait_until(known_everywhere, 30, f"{name} in every broker's metadata")
    return name


def test_clients_only_see_walproxy_endpoints(cluster: ThreeBrokers) -> None:
    topic = _topic(cluster)
    forbidden = cluster.broker_ports
    assert not forbidden & cluster.proxy_ports, "a sidecar shares a port with a broker?"
    # through each sidecar on its own: every sidecar rewrites all three brokers
    for one in cluster.bootstrap.split(","):
        md = AdminClient({"bootstrap.servers": one}).list_topics(topic, timeout=30)
        ports = {b.port for b in md.brokers.values()}
        assert ports == cluster.proxy_ports, f"Metadata via {one} names ports {ports}"
        assert sorted(md.brokers) == [1, 2, 3]
        parts = md.topics[topic].partitions
        assert len(parts) == PARTITIONS
        assert {p.leader for p in parts.values()} == {1, 2, 3}, "leaders not spread"
        assert all(len(p.replicas) == 3 and len(p.isrs) == 3 for p in parts.values())
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})  # outlives its futures
    described = admin.describe_cluster(request_timeout=30).result(60)
    assert {n.port for n in described.nodes} == cluster.proxy_ports
    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        brokers = kp.describe_cluster()["brokers"]
        assert {b["port"] for b in brokers} == cluster.proxy_ports, brokers

        def coordinator(group: str) -> int | None:
            try:
                return kp._find_coordinator_ids([group])[group]
            except CoordinatorNotAvailableError:  # retriable: __consumer_offsets is new
                return None

        for group in (c.unique_tag("coord") for _ in range(6)):
            node = c.wait_until(lambda g=group: coordinator(g), 30, f"coordinator of {group}")
            assert node in (1, 2, 3)
    finally:
        kp.close()
    # and the direct listeners really are elsewhere (the comparison below is meaningful)
    direct = AdminClient({"bootstrap.servers": cluster.direct_bootstrap}).list_topics(timeout=30)
    assert {b.port for b in direct.brokers.values()} <= forbidden


def test_acks_all_produce_and_consume_every_partition(cluster: ThreeBrokers) -> None:
    topic = _topic(cluster)
    msgs = c.messages(60 * PARTITIONS, topic, PARTITIONS)
    c.confluent_produce(
        cluster.bootstrap,
        topic,
        msgs,
        **{"acks": "all", "enable.idempotence": True, "compression.type": "zstd"},
    )
    group = c.unique_tag("t3-read")
    seen = c.confluent_consume(cluster.bootstrap, topic, len(msgs), group=group)
    c.assert_contents(seen, msgs, "3 brokers through walproxy")
    c.assert_dense_offsets(seen, "3 brokers")
    assert {r.partition for r in seen} == set(range(PARTITIONS))
    c.assert_same_records(seen, c.read_all(cluster.direct_bootstrap, topic), "proxy vs direct")
    c.assert_idempotent_batches(cluster.direct_bootstrap, topic)
    assert c.committed_offsets(cluster.direct_bootstrap, group, topic, PARTITIONS) == (
        c.end_offsets(cluster.direct_bootstrap, topic, PARTITIONS)
    )


def test_consumer_group_across_brokers(cluster: ThreeBrokers) -> None:
    topic = _topic(cluster)

    def member(name: str, group: str) -> c.Member:
        return c.ConfluentMember(name, group, cluster.bootstrap, topic, "classic")

    def produce(msgs: Sequence[c.Msg]) -> None:
        c.confluent_produce(cluster.bootstrap, topic, msgs, acks="all")

    c.group_scenario(member, produce, cluster.direct_bootstrap, topic, PARTITIONS, "t3")


def test_transaction_across_brokers(cluster: ThreeBrokers) -> None:
    topic = _topic(cluster)
    c.confluent_transaction_scenario(
        cluster.bootstrap, cluster.direct_bootstrap, topic, PARTITIONS, "t3"
    )
