"""The walproxy image as only a running container shows it.

One Kafka container (the local stand-in or apache/kafka) on a network of its own; each test
starts walproxy from the image beside it, configured from the environment only:

- it runs as uid 10001 with a read-only root file system (`--read-only`; the WAL and the
  offload copy on volumes, nothing else written), and serves produce through its WAL there
  with O_DIRECT;
- on a volume that refuses O_DIRECT (ramfs: this kernel's overlayfs, tmpfs and FUSE all
  accept it) it falls back to buffered writes + fdatasync and says so (`wal.direct_io =
  auto`), or refuses to start naming the setting (`wal.direct_io = on`);
- SIGTERM (`docker stop`) drains and exits 0 well within the grace period;
- the image's HEALTHCHECK follows /readyz, both ways;
- the image's size is printed at the end of the run (and kept under a bound).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Producer

from tests.containers.engine import REPORT, ROOT, images
from tests.integration.scrape import admin_get

ARTIFACTS = ROOT / "test-artifacts" / "image"
UID = "10001"
#: docker stop's grace period in these tests (compose and the chart give 45 s and more).
GRACE_S = 20
#: The walproxy image at most, and what it may add to its Python base (measured 264 MB on
#: a 188 MB debootstrap stand-in for python:3.11-slim, so 76 MB of walproxy and its wheels).
MAX_IMAGE_MB = 350
MAX_ADDED_MB = 120


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, test: Callable[[], bool], timeout: float, describe: Callable[[], str]):
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f} s: {describe()}")
        time.sleep(0.3)


@dataclass
class Walproxy:
    name: str
    port: int
    admin_port: int

    def admin(self, path: str) -> tuple[int, str]:
        try:
            return admin_get(self.admin_port, path)
        except OSError as exc:
            return 0, str(exc)

    def logs(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def events(self, event: str) -> list[dict]:
        """The JSON log lines (log.format = json, the image's default) of one event."""
        lines = [line for line in self.logs().splitlines() if line.startswith("{")]
        return [e for e in map(json.loads, lines) if e.get("event") == event]

    def state(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]["State"]

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(
            f"{self.name} /readyz 200",
            lambda: self.admin("/readyz")[0] == 200,
            timeout,
            lambda: f"{self.admin('/readyz')} {self.state()['Status']}\n{self.logs()[-3000:]}",
        )

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        return docker("exec", self.name, *cmd, check=False)


@dataclass
class Site:
    """The network and Kafka container the walproxy containers of one module share."""

    network: str
    kafka: str
    started: list[str]
    volumes: list[str]

    def volume(self, *opts: str) -> str:
        """A named volume, removed with the module's containers."""
        name = f"{self.network}-vol{len(self.volumes)}"
        docker("volume", "create", *opts, name)
        self.volumes.append(name)
        return name

    def walproxy(self, *run_args: str, env: dict[str, str] | None = None) -> Walproxy:
        port, admin_port = _free_port(), _free_port()
        name = f"{self.network}-wp{len(self.started)}"
        settings = {
            "WALPROXY_PROXY_LISTEN": "0.0.0.0:9092",
            "WALPROXY_PROXY_ADVERTISED": f"localhost:{port}",
            "WALPROXY_PROXY_UPSTREAM": "kafka:19092",
            "WALPROXY_PROXY_NODE_ID": "1",
            "WALPROXY_ADMIN_LISTEN": "0.0.0.0:9644",
            "WALPROXY_ADMIN_UPSTREAM_CHECK_INTERVAL_S": "1",
            "WALPROXY_OFFLOAD_ENABLED": "false",
            **(env or {}),
        }
        args = ["run", "-d", "--name", name, "--network", self.network]
        args += ["-p", f"127.0.0.1:{port}:9092", "-p", f"127.0.0.1:{admin_port}:9644"]
        for key, value in settings.items():
            args += ["-e", f"{key}={value}"]
        docker(*args, *run_args, images()["WALPROXY_IMAGE"], "run")
        self.started.append(name)
        return Walproxy(name, port, admin_port)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    network = f"wpimg{uuid.uuid4().hex[:6]}"
    docker("network", "create", network)
    kafka = f"{network}-kafka"
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENERS": "CLIENT://:19092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": "CLIENT://kafka:19092",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "CLIENT",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_HEAP_OPTS": "-Xmx384m -Xms384m",
    }
    args = ["run", "-d", "--name", kafka, "--network", network, "--network-alias", "kafka"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    docker(*args, images()["WALPROXY_KAFKA_IMAGE"])
    s = Site(network, kafka, [], [])
    try:
        yield s
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for name in [kafka, *s.started]:
            done = docker("logs", name, check=False)
            (ARTIFACTS / f"{name}.log").write_text(done.stdout + done.stderr)
            docker("rm", "-f", "-v", name, check=False)
        for name in s.volumes:
            docker("volume", "rm", "-f", name, check=False)
        docker("network", "rm", network, check=False)


def _metric(wp: Walproxy, name: str) -> float:
    status, text = wp.admin("/metrics")
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def _produce(wp: Walproxy, n: int) -> None:
    producer = Producer({"bootstrap.servers": f"localhost:{wp.port}", "acks": "all"})
    for i in range(n):
        producer.produce("image-topic", f"r{i}".encode())
    assert producer.flush(60) == 0, "records not acknowledged through walproxy"


def test_runs_as_non_root_with_a_read_only_root_file_system(site: Site) -> None:
    # the WAL on a volume (the image's /var/lib/walproxy/wal, owned by uid 10001); the
    # offloader's file:// copy on a tmpfs of that uid; nothing else writable
    wp = site.walproxy(
        "--read-only",
        "-v",
        f"{site.volume()}:/var/lib/walproxy/wal",
        "--tmpfs",
        f"/var/lib/walproxy/offload:uid={UID},gid={UID}",
        env={
            "WALPROXY_OFFLOAD_ENABLED": "true",
            "WALPROXY_OFFLOAD_TARGET": "file:///var/lib/walproxy/offload",
            "WALPROXY_OFFLOAD_MAX_LAG_S": "0.5",
        },
    )
    wp.wait_ready(timeout=90)  # the first one waits for Kafka too
    config = json.loads(docker("inspect", wp.name).stdout)[0]
    assert config["Config"]["User"] == f"{UID}:{UID}"
    assert config["HostConfig"]["ReadonlyRootfs"] is True
    assert wp.exec("id", "-u").stdout.strip() == UID
    denied = wp.exec("sh", "-c", "echo x > /var/lib/walproxy/probe")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    _produce(wp, 50)
    assert _metric(wp, "walproxy_wal_direct_io") == 1.0, "the WAL volume should take O_DIRECT"
    assert _metric(wp, "walproxy_wal_appends_total") >= 1
    assert _metric(wp, "walproxy_produce_batches_persisted_total") >= 1
    assert wp.exec("ls", "/var/lib/walproxy/wal").stdout.split(), "no WAL files on the volume"
    wait_until(
        "an offloaded segment on the offload volume",
        lambda: "/seg/" in wp.exec("find", "/var/lib/walproxy/offload").stdout,
        30,
        lambda: wp.exec("find", "/var/lib/walproxy/offload").stdout[-2000:],
    )
    assert not wp.events("offloader failed; restarting it"), wp.logs()[-3000:]
    assert "Traceback" not in wp.logs()


def test_a_wal_volume_that_refuses_o_direct_falls_back_loudly_or_refuses(site: Site) -> None:
    # ramfs has no direct I/O at all: open(O_DIRECT) fails with EINVAL. Docker mounts it
    # when the container starts; mode 1777 so uid 10001 can write there.
    ramfs = ("--driver", "local", "--opt", "type=ramfs", "--opt", "device=ramfs")
    wal = site.volume(*ramfs, "--opt", "o=mode=1777")
    wp = site.walproxy("-v", f"{wal}:/var/lib/walproxy/wal")
    wp.wait_ready()
    assert _metric(wp, "walproxy_wal_direct_io") == 0.0
    warnings = wp.events("wal_direct_io_unavailable")
    assert warnings, wp.logs()[-3000:]
    assert warnings[0]["reason"] == "open(O_DIRECT) refused with EINVAL", warnings
    assert warnings[0]["fallback"] == "buffered writes + fdatasync per group", warnings
    _produce(wp, 20)  # durable the buffered way
    status = wp.exec("walproxy", "status", "--json")
    assert json.loads(status.stdout)["wal"]["direct_io"] is False, status
    docker("rm", "-f", wp.name)

    wal = site.volume(*ramfs, "--opt", "o=mode=1777")
    strict = site.walproxy(
        "-v", f"{wal}:/var/lib/walproxy/wal", env={"WALPROXY_WAL_DIRECT_IO": "on"}
    )
    wait_until(
        f"{strict.name} exits",
        lambda: strict.state()["Status"] == "exited",
        30,
        lambda: strict.logs()[-2000:],
    )
    assert strict.state()["ExitCode"] == 1, strict.logs()
    assert (
        "walproxy: cannot start: wal.direct_io = on, but /var/lib/walproxy/wal refuses O_DIRECT "
        "(open(O_DIRECT) refused with EINVAL)" in strict.logs()
    ), strict.logs()[-2000:]
    assert "Traceback" not in strict.logs(), strict.logs()[-3000:]


def test_sigterm_drains_and_exits_within_the_grace_period(site: Site) -> None:
    wp = site.walproxy(f"--stop-timeout={GRACE_S}")
    wp.wait_ready()
    _produce(wp, 20)
    # a client connection open across the stop: draining closes it, it does not hold it up
    idle = socket.create_connection(("127.0.0.1", wp.port))
    try:
        started = time.monotonic()
        docker("stop", "-t", str(GRACE_S), wp.name, timeout=GRACE_S + 30)
        took = time.monotonic() - started
    finally:
        idle.close()
    state = wp.state()
    REPORT.append(f"walproxy container: docker stop (SIGTERM) to exit {took:.1f} s")
    assert state["ExitCode"] == 0, f"exit {state['ExitCode']}: {wp.logs()[-3000:]}"
    assert not state["OOMKilled"]
    assert took < GRACE_S / 2, f"SIGTERM to exit took {took:.1f} s of a {GRACE_S} s grace period"
    assert wp.events("draining"), wp.logs()[-3000:]


def test_the_healthcheck_follows_readyz(site: Site) -> None:
    image = json.loads(docker("image", "inspect", images()["WALPROXY_IMAGE"]).stdout)[0]
    assert image["Config"]["Healthcheck"]["Test"][:3] == ["CMD", "walproxy", "status"]
    # the image's check, run every second here (its own interval is 10 s)
    wp = site.walproxy("--health-interval=1s", "--health-retries=2", "--health-timeout=5s")

    def health() -> str:
        return str(wp.state()["Health"]["Status"])

    def describe() -> str:
        log = wp.state()["Health"]["Log"][-1:] or [{}]
        return f"{health()} {wp.admin('/readyz')} last check: {log[0].get('Output', '')}"

    wait_until("healthy", lambda: health() == "healthy", 60, describe)
    assert wp.admin("/readyz")[0] == 200
    # The broker becomes unreachable: /readyz 503, and the health check says so.
    docker("network", "disconnect", site.network, site.kafka)
    try:
        wait_until("unhealthy", lambda: health() == "unhealthy", 30, describe)
        assert wp.admin("/readyz")[0] == 503
    finally:
        docker("network", "connect", "--alias", "kafka", site.network, site.kafka)
    wait_until("healthy again", lambda: health() == "healthy", 60, describe)


def test_image_size() -> None:
    found = images()
    base_ref = next(
        line.split()[1]
        for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
        if line.startswith("FROM ")
    )
    size = int(docker("image", "inspect", "-f", "{{.Size}}", found["WALPROXY_IMAGE"]).stdout)
    base = int(docker("image", "inspect", "-f", "{{.Size}}", base_ref).stdout)
    mb, added = size / 1e6, (size - base) / 1e6
    base_mb = base / 1e6
    REPORT.append(
        f"{found['WALPROXY_IMAGE']}: {mb:.0f} MB ({base_ref} {base_mb:.0f} + {added:.0f})"
    )
    for key in ("WALPROXY_KAFKA_IMAGE", "WALPROXY_S3_IMAGE"):
        other = docker("image", "inspect", "-f", "{{.Size}}", found[key], check=False)
        if other.returncode == 0:
            REPORT.append(f"{found[key]}: {int(other.stdout) / 1e6:.0f} MB")
    assert mb <= MAX_IMAGE_MB, f"walproxy image {mb:.0f} MB > {MAX_IMAGE_MB} MB"
    assert added <= MAX_ADDED_MB, f"walproxy adds {added:.0f} MB to its base (> {MAX_ADDED_MB})"
