"""The broker from testcontainers (``apache/kafka`` image) instead of the jar launcher.

Selected with ``WALPROXY_TEST_KAFKA=testcontainers`` on machines with a Docker engine. The
container's client listener advertises the walproxy sidecar's host port, and the sidecar runs
on the host as in the jar set-up, so the tests see the same ``DevCluster`` shape. The image is
``apache/kafka:4.1.1``, or the local stand-in deploy/containers.sh built where no registry
answers (tests/containers/engine.py: images); either is configured from the same ``KAFKA_*``
variables, like the jar launcher's brokers (proxy/dev/cluster.py). `make test` (and `make
test-clients-containers` alone) runs the client matrix (tests/integration/test_clients_*.py)
this way, one container for the whole session; without an engine it is skipped with the
reason, and fails under ``CI=true`` (.ci/run sets it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from proxy.dev.cluster import DevCluster, KafkaNode, ManagedProcess, free_port

#: The container's KRaft cluster id (what DescribeCluster answers; the tests compare).
CLUSTER_ID = "5L6g3nShT-eMCtK--X86sw"


@contextlib.contextmanager
def container_cluster(workdir: Path) -> Iterator[DevCluster]:
    from testcontainers.core.container import DockerContainer

    from tests.containers.engine import configure_testcontainers, images, require_engine

    require_engine()
    configure_testcontainers()
    proxy_port, admin_port, direct_port = free_port(), free_port(), free_port()
    node = KafkaNode(
        1, "broker,controller", workdir / "node-1", proxy_port=proxy_port, admin_port=admin_port
    )
    container = (
        DockerContainer(images()["WALPROXY_KAFKA_IMAGE"])
        .with_exposed_ports(9092)
        # DIRECT: advertised as itself on a fixed host port, for clients that bypass walproxy
        # (the tests' topic set-up, DevCluster.direct_bootstrap)
        .with_bind_ports(9094, direct_port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env(
            "KAFKA_LISTENERS", "CLIENT://:9092,CONTROLLER://:9093,DIRECT://:9094,INTERNAL://:9095"
        )
        # CLIENT is advertised as the sidecar's port on the host, which the broker cannot
        # reach from inside its container: the broker's own requests to itself go over
        # INTERNAL, as in the jar launcher. With CLIENT as the inter-broker listener, a
        # transactional produce hung (flush timeout): the partition leader verifies the
        # partition with the transaction coordinator (AddPartitionsToTxn, KIP-890) on the
        # inter-broker listener, and so did the coordinator's WriteTxnMarkers.
        .with_env(
            "KAFKA_ADVERTISED_LISTENERS",
            f"CLIENT://127.0.0.1:{proxy_port},DIRECT://127.0.0.1:{direct_port},"
            "INTERNAL://localhost:9095",
        )
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT,DIRECT:PLAINTEXT,INTERNAL:PLAINTEXT",
        )
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "INTERNAL")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("CLUSTER_ID", CLUSTER_ID)
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        # as the jar launcher has them (proxy/dev/cluster.py): 50 partitions each would make
        # the first transaction or group wait for their creation on a small machine
        .with_env("KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS", "10")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS", "10")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
        .with_env("KAFKA_NUM_PARTITIONS", "1")
        .with_env("KAFKA_NUM_NETWORK_THREADS", "2")
        .with_env("KAFKA_NUM_IO_THREADS", "4")
    )
    with container:
        node.client_port = int(container.get_exposed_port(9092))
        node.direct_port = direct_port
        cluster = DevCluster(workdir, brokers=1)
        cluster.nodes = [node]
        cluster.cluster_id = CLUSTER_ID
        node.directory.mkdir(parents=True, exist_ok=True)
        proxy: ManagedProcess = cluster.start_proxy(1)
        try:
            cluster.wait_ready(120)
            yield cluster
        finally:
            proxy.stop()
