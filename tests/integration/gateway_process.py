"""A walproxy gateway process in front of a test cluster, and a watch on client sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from proxy.dev.cluster import DevCluster, ManagedProcess, free_port

from .scrape import metric


def _free_run(host: str, n: int) -> int:
    """A port p such that p..p+n-1 are all free now (a few tries: ports are shared)."""
    for _ in range(50):
        base = free_port(host)
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind((host, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {n} free ports on {host}")


class Gateway:
    """``python -m proxy run`` in gateway mode: bootstrap port + one port per broker."""

    def __init__(
        self,
        cluster: DevCluster,
        workdir: Path,
        *,
        listener: str = "CLIENT",
        host: str = "127.0.0.1",
        **env: str,
    ) -> None:
        ids = sorted(n.node_id for n in cluster.broker_nodes)
        self.cluster = cluster
        self.host = host
        base = _free_run(host, len(ids) + 1)
        self.port = base
        self.broker_ports = {node_id: base + 1 + i for i, node_id in enumerate(ids)}
        # An ephemeral port may land inside the run just released: the gateway would refuse it.
        self.admin_port = free_port(host)
        while self.admin_port in range(base, base + len(ids) + 1):
            self.admin_port = free_port(host)
        self.bootstrap = f"{host}:{self.port}"
        self.wal_dir = workdir / "wal"
        self.process = ManagedProcess(
            f"walproxy-gateway-{listener.lower()}",
            [sys.executable, "-m", "proxy", "run"],
            workdir / "walproxy.log",
            env={
                **os.environ,
                "WALPROXY_GATEWAY_ENABLED": "true",
                "WALPROXY_OFFLOAD_ENABLED": "false",
                "WALPROXY_GATEWAY_LISTEN": self.bootstrap,
                "WALPROXY_GATEWAY_BOOTSTRAP_SERVERS": cluster.listener_bootstrap(listener),
                "WALPROXY_GATEWAY_NODE_ID_RANGES": f"{ids[0]}-{ids[-1]}",
                "WALPROXY_PROXY_DRAIN_TIMEOUT_S": "2",
                "WALPROXY_WAL_DIR": str(self.wal_dir),
                "WALPROXY_ADMIN_LISTEN": f"{host}:{self.admin_port}",
                "WALPROXY_LOG_FORMAT": "json",
                **env,
            },
        )

    @property
    def ports(self) -> set[int]:
        return {self.port, *self.broker_ports.values()}

    def start(self, timeout: float = 60.0, ports: int | None = None) -> Gateway:
        """Start, and wait until ``ports`` broker ports (default: all) are bound."""
        want = len(self.broker_ports) if ports is None else ports
        self.process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive:
                raise RuntimeError(f"gateway exited:\n{self.process.tail()}")
            with contextlib.suppress(OSError, ValueError):
                if metric(self.admin_port, "walproxy_gateway_broker_ports") >= want:
                    return self
            time.sleep(0.2)
        raise TimeoutError(f"gateway did not bind its broker ports:\n{self.process.tail()}")

    def metric(self, name: str) -> float:
        return metric(self.admin_port, name)

    def stop(self) -> None:
        self.process.stop(15)


_MIN_SAMPLES = 10


@dataclass
class SocketWatch:
    """Samples every TCP socket of this process and its children (minus ``exclude``).

    Any socket whose remote address is on ``forbidden_host`` is recorded with the process
    that owned it. The brokers' own processes and the gateway are excluded: they are the
    only ones allowed to talk to broker addresses. ``seen`` collects every remote address,
    so a test can check the watch really saw its clients' connections.
    """

    forbidden_host: str
    #: pids allowed to talk to brokers, asked at every sample (brokers restart, gateways start)
    exclude: Callable[[], set[int]] = set
    interval_s: float = 0.01
    violations: list[tuple[int, str, str]] = field(default_factory=list)
    seen: set[tuple[str, int]] = field(default_factory=set)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _processes(self) -> Iterable[psutil.Process]:
        me = psutil.Process()
        yield me
        allowed = self.exclude()
        for child in me.children(recursive=True):
            if child.pid not in allowed:
                yield child

    def _sample(self) -> None:
        for proc in self._processes():
            try:
                conns = proc.net_connections(kind="tcp")
                name = " ".join(proc.cmdline()[:3])[-120:]
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            for conn in conns:
                if not conn.raddr:
                    continue
                self.seen.add((conn.raddr.ip, conn.raddr.port))
                if conn.raddr.ip == self.forbidden_host:
                    self.violations.append(
                        (proc.pid, name, f"{conn.raddr.ip}:{conn.raddr.port} {conn.status}")
                    )
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> SocketWatch:
        self._thread = threading.Thread(target=self._run, daemon=True, name="socket-watch")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None
        # A fast round trip can end within a few samples (each walks every child process's
        # sockets): keep watching a little, so the sample floor of assert_clean measures the
        # watch, not the client's speed. Live traffic must still have been seen (the ports).
        deadline = time.monotonic() + 10
        while self.samples <= _MIN_SAMPLES and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(self.interval_s)
        self._stop.set()
        self._thread.join(10)

    def assert_clean(self, must_have_seen: set[int]) -> None:
        assert not self.violations, (
            f"client processes connected to broker addresses ({self.forbidden_host}): "
            f"{sorted(set(self.violations))[:10]}"
        )
        ports = {port for _, port in self.seen}
        assert self.samples > _MIN_SAMPLES and ports & must_have_seen, (
            f"the watch saw no connection to the gateway ({self.samples} samples, "
            f"ports {sorted(ports)[:20]})"
        )
