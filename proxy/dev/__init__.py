"""Development helpers: local Kafka (KRaft) clusters from the project's Maven jars.

What this package owns: :class:`DevCluster` (brokers, optional walproxy sidecars, offload
targets) for ``walproxy dev up``, the tests and the benches, and a minimal Metadata probe
(:mod:`.kafka_probe`). The product never imports it: only the CLI's ``dev`` command, tests
and benches do.
"""

from .cluster import ClusterError, DevCluster, KafkaNode, ManagedProcess, free_port, libs_dir

__all__ = ["ClusterError", "DevCluster", "KafkaNode", "ManagedProcess", "free_port", "libs_dir"]
