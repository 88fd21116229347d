"""The lost-disk scenario for ``walproxy rebuild``: one controller, one broker, its sidecar.

:func:`lose_disk` is what a dead disk looks like to the broker: the JVM is SIGKILLed and its
whole state (``log.dirs`` and ``metadata.log.dir``) deleted; the sidecar is stopped too
(in Kubernetes the pod restarts, and rebuild runs as an init container before either
starts), leaving its WAL on its own volume. :func:`run_rebuild` runs the real CLI,
:func:`start_again` brings broker and sidecar back. :func:`transactions` and
:func:`plain_acked` produce what the transaction tests restore (confluent-kafka).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from offload.store import ObjectStore
from proxy.dev.cluster import DevCluster

from . import clients as c
from .durability import Acked

VERIFIABLE_PRODUCER = "org.apache.kafka.tools.VerifiableProducer"


def broker_dirs(cluster: DevCluster, node_id: int = 1) -> tuple[Path, Path]:
    """``log.dirs`` and ``metadata.log.dir`` of a DevCluster broker."""
    d = cluster.node(node_id).directory
    return d / "data", d / "meta"


def verifiable_produce(
    cluster: DevCluster, topic: str, count: int, tmp: Path, *, throughput: int = -1
) -> list[Acked]:
    """Kafka's VerifiableProducer (idempotent, acks=all) through walproxy: every ack."""
    config = c.write_properties(
        tmp / "producer.properties",
        {"enable.idempotence": "true", "retries": 2147483647, "linger.ms": 2, "batch.size": 1024},
    )
    out = c.run_java(
        VERIFIABLE_PRODUCER,
        *("--bootstrap-server", cluster.bootstrap, "--topic", topic),
        *("--max-messages", str(count), "--acks", "-1", "--throughput", str(throughput)),
        *("--value-prefix", str(int(time.time()) % 1000), "--repeating-keys", "97"),
        *("--producer.config", str(config)),
        timeout=180,
    ).stdout
    events = c.json_lines(out)
    acked = [
        Acked(e["partition"], e["offset"], e["value"].encode())
        for e in events
        if e.get("name") == "producer_send_success"
    ]
    assert len(acked) == count, f"{len(acked)} of {count} sends acknowledged"
    return acked


def commit_offsets(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for ``group`` (through walproxy), as a consumer that read so far."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    coordinator_moving = {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
    deadline = time.monotonic() + 60
    while True:  # the first group of a cluster waits for __consumer_offsets to be created
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        try:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )
            return
        except KafkaException as exc:
            if exc.args[0].code() not in coordinator_moving or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            consumer.close()


def lose_disk(cluster: DevCluster, node_id: int = 1) -> None:
    """SIGKILL the broker, stop its sidecar, delete every byte of the broker's state."""
    node = cluster.node(node_id)
    assert node.process is not None and node.proxy is not None
    node.process.kill()
    node.proxy.stop(15)
    for d in broker_dirs(cluster, node_id):
        shutil.rmtree(d)


@dataclass
class RebuildRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_rebuild(cluster: DevCluster, *extra: str, node_id: int = 1) -> RebuildRun:
    """``walproxy rebuild`` with the sidecar's own config file, as an init container would."""
    cfg = cluster.node(node_id).directory / "walproxy.toml"
    env = {**os.environ, **cluster.proxy_env}  # the sidecar's settings (offload target)
    return rebuild_node(cluster, node_id, env, "--config", str(cfg), *extra)


def rebuild_node(cluster: DevCluster, node_id: int, env: dict[str, str], *args: str) -> RebuildRun:
    """``walproxy rebuild`` of ``node_id``'s broker directories, configured by ``env`` (a
    walproxy's environment) and ``args``."""
    data, meta = broker_dirs(cluster, node_id)
    argv = [sys.executable, "-m", "proxy", "rebuild", *args]
    argv += ["--log-dir", str(data), "--metadata-log-dir", str(meta)]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    return RebuildRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)


def report_of(run: RebuildRun) -> dict:
    """The JSON report of a rebuild that succeeded (and printed its progress)."""
    assert run.returncode == 0, f"rebuild exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    assert "MB/s" in run.stdout  # progress lines
    return json.loads(run.stdout[run.stdout.index("\n{") :])


def wait_proxy_ready(cluster: DevCluster, timeout: float = 120.0) -> None:
    for node in cluster.broker_nodes:
        url = f"http://{cluster.host}:{node.admin_port}/readyz"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.HTTPError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"walproxy {node.node_id} not ready after {timeout}s")
            time.sleep(0.2)


def start_again(cluster: DevCluster, node_id: int = 1) -> None:
    cluster.start_broker(node_id)
    cluster.start_proxy(node_id)
    cluster.wait_ready(180)
    wait_proxy_ready(cluster)


def wait_offloaded(
    cluster: DevCluster, store: ObjectStore, topics: list[str], timeout: float = 90.0
) -> dict[tuple[str, int], int]:
    """Until every partition of ``topics`` (and every ``__consumer_offsets`` partition) has a
    committed manifest reaching the broker's high watermark: the S3 copy is complete."""
    from confluent_kafka import Consumer, TopicPartition

    from offload import commit, layout
    from offload.node_files import decode_broker_info

    consumer = Consumer({"bootstrap.servers": cluster.direct_bootstrap, "group.id": "wm-probe"})
    deadline = time.monotonic() + timeout
    behind: dict[tuple[str, int], tuple[int, int]] = {}
    try:
        while time.monotonic() < deadline:
            behind.clear()
            done: dict[tuple[str, int], int] = {}
            try:
                raw = store.get(layout.broker_key(cluster.cluster_id, 1)).data
            except Exception:  # not written yet
                time.sleep(0.5)
                continue
            info = decode_broker_info(raw)
            for name, entry in info.topics.items():
                if name not in topics and name != "__consumer_offsets":
                    continue
                for p in entry.partitions:
                    key = layout.manifest_key(cluster.cluster_id, entry.topic_id, p)
                    m = commit.read_manifest(store, key).manifest
                    hw = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                    have = m.next_offset if m is not None else 0  # empty: none written
                    if have < hw:
                        behind[(name, p)] = (have, hw)
                    done[(name, p)] = have
            # the group commits live in __consumer_offsets: it must be listed too
            wanted = [*topics, "__consumer_offsets"]
            if not behind and all(t in info.topics for t in wanted):
                return done
            time.sleep(0.5)
    finally:
        consumer.close()
    raise TimeoutError(f"S3 copy still behind after {timeout}s: {behind}")


class BackgroundProducer:
    """A VerifiableProducer running while the test breaks things; ``stop()`` returns what
    was acknowledged (each ``producer_send_success`` line is an ack the client saw)."""

    def __init__(self, cluster: DevCluster, topic: str, tmp: Path, throughput: int) -> None:
        config = c.write_properties(
            tmp / "bg-producer.properties",
            {
                "enable.idempotence": "true",
                "retries": 2147483647,
                "linger.ms": 2,
                "batch.size": 1024,
                "delivery.timeout.ms": 600000,
            },
        )
        self.out = open(tmp / "bg-producer.out", "w+")
        self.proc = subprocess.Popen(
            c.java_argv(
                VERIFIABLE_PRODUCER,
                *("--bootstrap-server", cluster.bootstrap, "--topic", topic),
                *("--max-messages", "-1", "--acks", "-1", "--throughput", str(throughput)),
                *("--value-prefix", "9", "--repeating-keys", "97"),
                *("--producer.config", str(config)),
            ),
            stdout=self.out,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "KAFKA_HEAP_OPTS": ""},
        )

    def acked(self) -> list[Acked]:
        self.out.flush()
        self.out.seek(0)
        return [
            Acked(e["partition"], e["offset"], e["value"].encode())
            for e in c.json_lines(self.out.read())
            if e.get("name") == "producer_send_success"
        ]

    def stop(self) -> list[Acked]:
        self.proc.kill()  # whatever it printed was acknowledged; nothing more is
        self.proc.wait()
        acked = self.acked()
        self.out.close()
        return acked


@dataclass
class Txns:
    committed: list[Acked]
    aborted: list[Acked]
    plain: list[Acked]
    ends: int


def transactions(
    bootstrap: str, topic: str, outcomes: list[bool], tag: str, partitions: int
) -> Txns:
    """A transactional producer (confluent-kafka) runs one transaction per entry of
    ``outcomes`` (True: commit, False: abort), three records in each partition; after each
    end a plain producer writes one record per partition (so records of other producers
    land between a transaction's end and its markers). Closed cleanly at the end."""
    from confluent_kafka import Producer

    delivered: list[Acked] = []
    out = Txns([], [], [], 0)

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        delivered.append(Acked(msg.partition(), msg.offset(), msg.value()))  # type: ignore[attr-defined]

    def on_plain(err: object, msg: object) -> None:
        assert err is None, err
        out.plain.append(Acked(msg.partition(), msg.offset(), msg.value()))  # type: ignore[attr-defined]

    txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{tag}"})
    plain = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    txn.init_transactions(60)
    for i, commit in enumerate(outcomes):
        txn.begin_transaction()
        for j in range(3 * partitions):
            value = f"{tag}-{i}-{j}".encode()
            txn.produce(topic, value=value, partition=j % partitions, on_delivery=on_delivery)
        assert txn.flush(60) == 0  # every batch acknowledged before the end (so in the WAL)
        batch, delivered[:] = list(delivered), []
        if commit:
            txn.commit_transaction(60)
            out.committed += batch
        else:
            txn.abort_transaction(60)
            out.aborted += batch
        out.ends += 1
        for p in range(partitions):
            value = f"{tag}-plain-{i}-{p}".encode()
            plain.produce(topic, value=value, partition=p, on_delivery=on_plain)
        assert plain.flush(60) == 0
    txn.flush(10)
    del txn  # rd_kafka_destroy: a clean close, nothing in flight
    return out


def plain_acked(bootstrap: str, topic: str, count: int, tag: str, partitions: int) -> list[Acked]:
    """``count`` records from an idempotent producer, round-robin over the partitions."""
    from confluent_kafka import Producer

    acked: list[Acked] = []

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        acked.append(Acked(msg.partition(), msg.offset(), msg.value()))  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(count):
        value = f"{tag}-first-{i}".encode()
        producer.produce(topic, value=value, partition=i % partitions, on_delivery=on_delivery)
    assert producer.flush(60) == 0
    return acked
