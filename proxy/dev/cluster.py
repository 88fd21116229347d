"""Local Apache Kafka (KRaft) clusters from Maven Central jars, with walproxy sidecars.

Used by ``walproxy dev up``, ``make demo``, the tests and the benchmarks. A cluster is either
one combined broker+controller node (the default) or one controller plus N brokers, each a
separate JVM. Every broker gets three listeners: ``CLIENT`` (advertised as its walproxy
sidecar, so clients always come back through the proxy), ``INTERNAL`` (inter-broker traffic)
and ``DIRECT`` (advertised as itself, so tests and benchmarks can compare with clients that
talk to the same broker without the proxy). Sidecars run as ``python -m proxy run``
subprocesses so tests can SIGKILL, SIGSTOP and restart them like real deployments.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy.dev.kafka_probe import metadata

#: The Maven project that fetches the pinned Kafka jars, inside a walproxy checkout.
JARS_PROJECT = Path("deploy") / "kafka-jars"

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.ak.name = org.apache.kafka
logger.ak.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""

_LIVE: set[DevCluster] = set()


class ClusterError(RuntimeError):
    """The cluster could not be started; the message says which process and why."""


def find_repo_root(start: Path | None = None) -> Path:
    """The walproxy checkout that holds ``start`` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / JARS_PROJECT / "pom.xml").is_file():
            return d
    raise ClusterError(f"{here} is not inside a walproxy checkout (no {JARS_PROJECT}/pom.xml)")


def libs_dir(repo_root: Path | None = None) -> Path:
    """The Kafka jars: ``WALPROXY_KAFKA_LIBS``, else the checkout's Maven build output."""
    if "WALPROXY_KAFKA_LIBS" in os.environ:
        return Path(os.environ["WALPROXY_KAFKA_LIBS"])
    return (repo_root or find_repo_root()) / JARS_PROJECT / "target" / "libs"


def ensure_jars(repo_root: Path | None = None) -> Path:
    """Fetch the pinned Kafka jars with Maven unless they are already there."""
    libs = libs_dir(repo_root)
    if not any(libs.glob("kafka_2.13-*.jar")):
        if shutil.which("mvn") is None:
            raise ClusterError("Maven (mvn) is needed to fetch the Kafka jars; install it")
        pom = (repo_root or find_repo_root()) / JARS_PROJECT / "pom.xml"
        subprocess.run(["mvn", "-q", "-B", "-f", str(pom), "package"], check=True)
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise ClusterError(f"no kafka_2.13 jar in {libs} after the Maven build")
    return libs


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ClusterError("java (17 or newer) is needed to run Kafka")
    return java


@dataclass
class ManagedProcess:
    """A child process with its log file; stop() is SIGTERM then SIGKILL."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash looks like."""
        if self.proc is not None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class KafkaNode:
    node_id: int
    roles: str  # "broker,controller", "broker" or "controller"
    directory: Path
    controller_port: int | None = None
    client_port: int | None = None  # the broker's CLIENT listener (what the sidecar fronts)
    internal_port: int | None = None
    direct_port: int | None = None  # a listener advertised as itself: clients bypass walproxy
    extra_ports: dict[str, int] = field(default_factory=dict)  # DevCluster.extra_listeners
    proxy_port: int | None = None  # the sidecar's port, advertised for CLIENT
    admin_port: int | None = None  # the sidecar's /metrics port
    process: ManagedProcess | None = None
    proxy: ManagedProcess | None = None

    @property
    def is_broker(self) -> bool:
        return "broker" in self.roles

    @property
    def advertised_port(self) -> int:
        port = self.proxy_port if self.proxy_port is not None else self.client_port
        assert port is not None
        return port


@dataclass(eq=False)
class DevCluster:
    """A local KRaft cluster; ``start()`` blocks until every broker is registered."""

    workdir: Path
    brokers: int = 1
    with_proxy: bool = True
    host: str = "127.0.0.1"
    proxy_base_port: int | None = None  # None: free ports; else sidecar i listens on base+i
    admin_base_port: int | None = None
    heap: str = "768m"
    #: Where the DIRECT listener binds and is advertised (None: ``host``). Gateway tests put
    #: it on another loopback address than the brokers' other listeners.
    direct_host: str | None = None
    #: More broker listeners, name -> security protocol (e.g. ``{"SASL": "SASL_PLAINTEXT"}``),
    #: advertised as themselves; their settings go in ``broker_overrides``.
    extra_listeners: dict[str, str] = field(default_factory=dict)
    #: Extra arguments of ``kafka-storage format`` (e.g. ``--add-scram ...``).
    format_args: list[str] = field(default_factory=list)
    broker_overrides: dict[str, str] = field(default_factory=dict)
    proxy_env: dict[str, str] = field(default_factory=dict)
    #: How a sidecar is started (its ``run --config FILE`` is appended): e.g. under a
    #: profiler, ``[sys.executable, "-m", "cProfile", "-o", OUT, "-m", "proxy"]``.
    proxy_command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "proxy"])
    #: One broker gets its own controller JVM (as with several brokers), so the broker can be
    #: killed, wiped and rebuilt while the cluster's metadata survives.
    separate_controller: bool = False
    offload_targets: dict[int, str] = field(default_factory=dict)
    #: The walproxy checkout whose Maven project provides the Kafka jars (None: the one
    #: holding the working directory; ``WALPROXY_KAFKA_LIBS`` names the jars instead).
    repo_root: Path | None = None
    nodes: list[KafkaNode] = field(default_factory=list)
    cluster_id: str = ""

    # -- layout -------------------------------------------------------------------------
    def _plan(self) -> None:
        w = self.workdir
        if self.brokers < 1:
            raise ClusterError("a cluster needs at least one broker")
        if self.brokers == 1 and not self.separate_controller:
            self.nodes = [KafkaNode(1, "broker,controller", w / "node-1")]
        else:
            self.nodes = [KafkaNode(100, "controller", w / "controller-100")]
            self.nodes += [
                KafkaNode(i, "broker", w / f"broker-{i}") for i in range(1, self.brokers + 1)
            ]
        for i, node in enumerate(self.broker_nodes):
            node.client_port = free_port(self.host)
            node.internal_port = free_port(self.host)
            node.direct_port = free_port(self.direct_host or self.host)
            node.extra_ports = {name: free_port(self.host) for name in self.extra_listeners}
            if self.with_proxy:
                node.proxy_port = (
                    self.proxy_base_port + i
                    if self.proxy_base_port is not None
                    else free_port(self.host)
                )
                node.admin_port = (
                    self.admin_base_port + i
                    if self.admin_base_port is not None
                    else free_port(self.host)
                )
        for node in self.nodes:
            if "controller" in node.roles:
                node.controller_port = free_port(self.host)

    @property
    def broker_nodes(self) -> list[KafkaNode]:
        return [n for n in self.nodes if n.is_broker]

    @property
    def controller(self) -> KafkaNode:
        return next(n for n in self.nodes if "controller" in n.roles)

    @property
    def bootstrap(self) -> str:
        """What clients use: the sidecars (or the brokers with ``with_proxy=False``)."""
        return ",".join(f"{self.host}:{n.advertised_port}" for n in self.broker_nodes)

    @property
    def direct_bootstrap(self) -> str:
        """The brokers' DIRECT listeners: clients that never touch walproxy."""
        h = self.direct_host or self.host
        return ",".join(f"{h}:{n.direct_port}" for n in self.broker_nodes)

    def listener_bootstrap(self, name: str) -> str:
        """The brokers' own addresses on listener ``name`` (``CLIENT`` or an extra one)."""
        ports = [
            n.client_port if name == "CLIENT" else n.extra_ports[name] for n in self.broker_nodes
        ]
        return ",".join(f"{self.host}:{p}" for p in ports)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def _server_properties(self, node: KafkaNode) -> str:
        h = self.host
        ctl = self.controller
        rf = min(3, self.brokers)
        props: dict[str, str] = {
            "process.roles": node.roles,
            "node.id": str(node.node_id),
            "controller.quorum.voters": f"{ctl.node_id}@{h}:{ctl.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(node.directory / "data"),
            "metadata.log.dir": str(node.directory / "meta"),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": "1",
            "auto.create.topics.enable": "true",
            "num.partitions": "1",
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT,DIRECT:PLAINTEXT"
                + "".join(f",{k}:{v}" for k, v in self.extra_listeners.items())
            ),
        }
        listeners = []
        if node.controller_port is not None:
            listeners.append(f"CONTROLLER://{h}:{node.controller_port}")
        if node.is_broker:
            dh = self.direct_host or h
            extra = [f"{name}://{h}:{port}" for name, port in node.extra_ports.items()]
            listeners += [
                f"CLIENT://{h}:{node.client_port}",
                f"INTERNAL://{h}:{node.internal_port}",
                f"DIRECT://{dh}:{node.direct_port}",
                *extra,
            ]
            props["advertised.listeners"] = ",".join(
                [
                    f"CLIENT://{h}:{node.advertised_port}",
                    f"INTERNAL://{h}:{node.internal_port}",
                    f"DIRECT://{dh}:{node.direct_port}",
                    *extra,
                ]
            )
            props["inter.broker.listener.name"] = "INTERNAL"
        props["listeners"] = ",".join(listeners)
        if node.is_broker:
            props.update(self.broker_overrides)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _proxy_config(self, node: KafkaNode) -> str:
        peers = "".join(
            f'"{p.node_id}" = "{self.host}:{p.proxy_port}"\n'
            for p in self.broker_nodes
            if p is not node
        )
        return (
            "[proxy]\n"
            f'listen = "{self.host}:{node.proxy_port}"\n'
            f'upstream = "{self.host}:{node.client_port}"\n'
            f"node_id = {node.node_id}\n"
            "drain_timeout_s = 5\n"
            "[proxy.peers]\n" + peers + "[wal]\n"
            f'dir = "{node.directory / "walproxy-wal"}"\n'
            "[offload]\n"
            f'target = "{self.offload_target(node)}"\n'
            f'broker_meta_properties = "{node.directory / "data" / "meta.properties"}"\n'
            "[admin]\n"
            f'listen = "{self.host}:{node.admin_port}"\n'
        )

    def offload_target(self, node: KafkaNode) -> str:
        """Where node's sidecar offloads to: ``offload_targets[node_id]`` or a directory."""
        return self.offload_targets.get(node.node_id, f"file://{node.directory / 'offload'}")

    def _formatted_cluster_id(self) -> str:
        """The cluster id in any node's existing meta.properties ("" if none is formatted)."""
        for node in self.nodes:
            for sub in ("data", "meta"):
                path = node.directory / sub / "meta.properties"
                if path.exists():
                    for line in path.read_text().splitlines():
                        key, sep, value = line.partition("=")
                        if sep and key.strip() == "cluster.id":
                            return value.strip()
        return ""

    # -- life cycle ---------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> DevCluster:
        libs = ensure_jars(self.repo_root)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._plan()
        java = _java()
        cp = f"{libs}/*"
        # A directory formatted by an earlier start (a second `make demo`) keeps its cluster
        # id: Kafka refuses to format it again under a new one, and its data and the WAL
        # beside it belong to that cluster.
        self.cluster_id = (
            self._formatted_cluster_id()
            or (
                subprocess.run(
                    [java, "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
        )
        (self.workdir / "log4j2.properties").write_text(LOG4J2)
        _LIVE.add(self)
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            props = node.directory / "server.properties"
            props.write_text(self._server_properties(node))
            fmt = subprocess.run(
                [
                    java,
                    "-cp",
                    cp,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    self.cluster_id,
                    "-c",
                    str(props),
                    "--ignore-formatted",
                    *self.format_args,
                ],
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise ClusterError(
                    f"formatting node {node.node_id} failed:\n{fmt.stdout}{fmt.stderr}"
                )
            node.process = ManagedProcess(
                f"kafka-{node.node_id}",
                [
                    java,
                    "-server",
                    f"-Xms{self.heap}",
                    f"-Xmx{self.heap}",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                    f"-Dkafka.logs.dir={node.directory / 'logs'}",
                    "-cp",
                    cp,
                    "kafka.Kafka",
                    str(props),
                ],
                node.directory / "kafka.log",
            )
        for node in self.nodes:
            assert node.process is not None
            node.process.start()
        if self.with_proxy:
            for node in self.broker_nodes:
                self.start_proxy(node.node_id)
        self.wait_ready(timeout)
        return self

    def start_proxy(self, node_id: int) -> ManagedProcess:
        node = self.node(node_id)
        cfg = node.directory / "walproxy.toml"
        cfg.write_text(self._proxy_config(node))
        env = {**os.environ, "WALPROXY_LOG_FORMAT": "json", **self.proxy_env}
        node.proxy = ManagedProcess(
            f"walproxy-{node_id}",
            [*self.proxy_command, "run", "--config", str(cfg)],
            node.directory / "walproxy.log",
            env=env,
        )
        node.proxy.start()
        return node.proxy

    def start_broker(self, node_id: int) -> None:
        """Start a stopped (or killed) broker again with the same configuration."""
        proc = self.node(node_id).process
        assert proc is not None
        proc.start()

    def restart_broker(self, node_id: int) -> None:
        node = self.node(node_id)
        assert node.process is not None
        node.process.stop()
        node.process.start()

    def wait_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, port), 0.5):
                return
            time.sleep(0.1)
        raise ClusterError(f"nothing listens on {self.host}:{port} after {timeout}s")

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until every broker is registered, as seen through the bootstrap address."""
        deadline = time.monotonic() + timeout
        first = self.broker_nodes[0]
        want = {n.node_id for n in self.broker_nodes}
        last_error = ""
        while time.monotonic() < deadline:
            for node in self.nodes:
                for proc in (node.process, node.proxy):
                    if proc is not None and not proc.alive:
                        raise ClusterError(f"{proc.name} exited during start-up:\n{proc.tail()}")
            try:
                md = metadata(self.host, first.advertised_port, timeout=2.0)
                if {int(b.node_id) for b in md.brokers} >= want:
                    return
                last_error = f"brokers registered: {sorted(int(b.node_id) for b in md.brokers)}"
            except (OSError, ConnectionError, ValueError) as exc:
                last_error = str(exc)
            time.sleep(0.3)
        raise ClusterError(f"cluster not ready after {timeout}s ({last_error})")

    def stop(self) -> None:
        """Sidecars drain first, then brokers, then the controller."""
        for node in self.broker_nodes:
            if node.proxy is not None:
                node.proxy.stop(10)
        for node in self.broker_nodes:
            if node.process is not None and "controller" not in node.roles:
                node.process.stop(30)
        for node in self.nodes:
            if node.process is not None:
                node.process.stop(30)
        _LIVE.discard(self)

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:
    for cluster in list(_LIVE):
        for node in cluster.nodes:
            for proc in (node.proxy, node.process):
                if proc is not None:
                    proc.kill()
