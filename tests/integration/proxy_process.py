"""A walproxy process of a test's own in front of the shared broker, to kill and restart.

It keeps its port and WAL directory across restarts, like a sidecar container restarted by
its pod. ``node_id`` makes it rewrite the broker's own endpoint to itself, so clients that
bootstrap through it stay on it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from proxy import config as config_mod
from proxy.app.server import ProxyServer
from proxy.dev.cluster import DevCluster, ManagedProcess, free_port
from wal.testing import MemoryBackend

from .scrape import admin_get, metric


class OwnProxy:
    def __init__(self, cluster: DevCluster, workdir: Path, **env: str) -> None:
        node = cluster.broker_nodes[0]
        self.cluster = cluster
        self.port = free_port()
        self.admin_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.wal_dir = workdir / "wal"
        self.process = ManagedProcess(
            "walproxy-own",
            [sys.executable, "-m", "proxy", "run"],
            workdir / "walproxy.log",
            env={
                **os.environ,
                "WALPROXY_PROXY_LISTEN": self.bootstrap,
                "WALPROXY_PROXY_UPSTREAM": f"127.0.0.1:{node.client_port}",
                "WALPROXY_PROXY_NODE_ID": str(node.node_id),
                "WALPROXY_PROXY_DRAIN_TIMEOUT_S": "2",
                "WALPROXY_WAL_DIR": str(self.wal_dir),
                "WALPROXY_OFFLOAD_TARGET": f"file://{workdir / 'offload'}",
                "WALPROXY_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}",
                "WALPROXY_LOG_FORMAT": "json",
                **env,
            },
        )

    def start(self) -> OwnProxy:
        self.process.start()
        self.cluster.wait_port(self.port)
        return self

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        self.process.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.signal(signal.SIGCONT)

    def stop(self) -> None:
        self.process.stop(15)

    def get(self, path: str) -> tuple[int, str]:
        return admin_get(self.admin_port, path)

    def metric(self, name: str) -> float:
        return metric(self.admin_port, name)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        status, body = 0, ""
        while time.monotonic() < deadline:
            try:
                status, body = self.get("/readyz")
                if status == 200:
                    return
            except OSError as exc:
                body = str(exc)
            time.sleep(0.1)
        raise TimeoutError(f"walproxy not ready after {timeout}s: {status} {body}")


def in_process_server(cluster: DevCluster) -> tuple[ProxyServer, MemoryBackend]:
    """A walproxy server object in this process in front of ``cluster``'s first broker, its
    WAL on a :class:`MemoryBackend` the test can make fail (``fail_next``); run it with
    ``nursery.start(server.run)``, its port is ``server.port``."""
    node = cluster.broker_nodes[0]
    cfg = config_mod.load(
        None,
        env={
            "WALPROXY_PROXY_LISTEN": "127.0.0.1:0",
            "WALPROXY_PROXY_UPSTREAM": f"127.0.0.1:{node.client_port}",
            "WALPROXY_PROXY_NODE_ID": str(node.node_id),
            "WALPROXY_ADMIN_LISTEN": "",
        },
    )
    backend = MemoryBackend()
    return ProxyServer(cfg, wal_backend=backend), backend
