"""The lost-disk scenario for ``walproxy rebuild``: one controller, one broker, its sidecar.

:func:`lose_disk` is what a dead disk looks like to the broker: the JVM is SIGKILLed and its
whole state (``log.dirs`` and ``metadata.log.dir``) deleted; the sidecar is stopped too
(in Kubernetes the pod restarts, and rebuild runs as an init container before either
starts), leaving its WAL on its own volume. :func:`run_rebuild` runs the real CLI,
:func:`start_again` brings broker and sidecar back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from offload.store import ObjectStore
from proxy.devcluster import DevCluster
from proxy.record_batch import iter_batches

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
    data, meta = broker_dirs(cluster, node_id)
    cfg = cluster.node(node_id).directory / "walproxy.toml"
    argv = [sys.executable, "-m", "proxy", "rebuild", "--config", str(cfg)]
    argv += ["--log-dir", str(data), "--metadata-log-dir", str(meta), *extra]
    t0 = time.monotonic()
    env = {**os.environ, **cluster.proxy_env}  # the sidecar's settings (offload target)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    return RebuildRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)


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


def copy_broker_log(
    cluster: DevCluster,
    store: ObjectStore,
    cut: Callable[[str, int], int | None],
    node_id: int = 1,
) -> dict[tuple[str, int], int]:
    """A stand-in offloader: commit each partition's log as the broker holds it, up to
    ``cut(topic, partition)`` (None: everything), through the offload package's own commit
    functions, plus broker.json. Returns each partition's committed ``next_offset``."""
    from offload import kafka_logdir as kl
    from offload.segment_codec import whole_batches
    from tests.offload.seed import offload_partition, write_broker_info

    data, _ = broker_dirs(cluster, node_id)
    meta = kl.parse_meta_properties((data / kl.META_PROPERTIES).read_text())
    topics: dict[str, tuple[uuid.UUID, list[int]]] = {}
    out = {}
    for d in sorted(p for p in data.iterdir() if p.is_dir()):
        topic, _, part = d.name.rpartition("-")
        tid = kl.parse_partition_metadata((d / kl.PARTITION_METADATA).read_text())
        log = b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))
        log = log[: whole_batches(log)]  # the active segment may end mid-write
        limit = cut(topic, int(part))
        if limit is not None:
            keep = 0
            for h in iter_batches(log, check_crc=False):
                if h.base_offset + h.last_offset_delta >= limit:
                    break
                keep += h.length
            log = log[:keep]
        m = offload_partition(store, meta.cluster_id, topic, tid, int(part), log,
                              node_id=node_id, object_bytes=64 << 10)
        out[(topic, int(part))] = m.next_offset
        topics.setdefault(topic, (tid, []))[1].append(int(part))
    write_broker_info(store, meta.cluster_id, node_id, topics, meta.directory_id)
    return out
