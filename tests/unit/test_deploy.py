"""deploy/Dockerfile and deploy/docker-compose.yml, checked offline (no Docker engine here).

What can be checked without an engine is: the compose file's structure and that its ports
agree (Kafka advertises the sidecar's port; the sidecar fronts Kafka's loopback listener),
the configuration it mounts loads, the Dockerfile's user, base and entry point, and that the
wheel the Dockerfile installs builds and carries the `walproxy` entry point.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from proxy import config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_is_small_non_root_with_the_walproxy_entry_point() -> None:
    ins = _instructions()
    assert [arg for op, arg in ins if op == "FROM"] == [
        "python:3.11-slim AS build",
        "python:3.11-slim",
    ]
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert [arg for op, arg in ins if op == "ENTRYPOINT"] == ['["walproxy"]']
    allowed = (ROOT / ".dockerignore").read_text().split()
    for op, arg in ins:
        if op == "COPY" and not arg.startswith("--from"):
            for src in arg.split()[:-1]:
                assert (ROOT / src).exists(), src
                assert f"!{src}" in allowed or f"!{src}/" in allowed, f"{src} not in the context"


def test_the_wheel_the_image_installs_builds_with_the_entry_point(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("walproxy-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "walproxy = proxy.app.cli:main" in zf.read(entry_points).decode()
    for module in (
        "proxy/app/cli.py",
        "proxy/app/server.py",
        "wal/writer.py",
        "offload/__init__.py",
    ):
        assert module in names


def _compose() -> dict:
    """The compose file with every ``${VAR:-default}`` at its default (what users get)."""
    text = (DEPLOY / "docker-compose.yml").read_text()
    return yaml.safe_load(re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text))


def _listener_port(listeners: str, name: str) -> int:
    [port] = re.findall(rf"\b{name}://[^,]*:(\d+)", listeners)
    return int(port)


def test_compose_runs_walproxy_as_the_brokers_sidecar() -> None:
    services = _compose()["services"]
    kafka, proxy = services["kafka"], services["walproxy"]
    pom = (DEPLOY / "kafka-jars" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)  # type: ignore[union-attr]
    assert kafka["image"] == f"apache/kafka:{version}"  # the version the tests run
    assert proxy["network_mode"] == "service:kafka"
    assert proxy["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}

    mounts = dict(v.split(":", 1) for v in proxy["volumes"])
    assert mounts["./walproxy-compose.toml"] == "/etc/walproxy/walproxy.toml:ro"
    env = {k: str(v) for k, v in proxy["environment"].items()}
    cfg = config.load(DEPLOY / "walproxy-compose.toml", env=env)
    assert mounts["walproxy-wal"] == cfg.wal.dir  # the WAL on its own named volume
    assert proxy["command"][-1] == "/etc/walproxy/walproxy.toml"

    kenv = kafka["environment"]
    listen_port = config.parse_address(cfg.proxy.listen, "proxy.listen")[1]
    upstream = config.parse_address(cfg.proxy.upstream, "proxy.upstream")
    # Kafka hands clients the sidecar's port; the sidecar fronts Kafka's CLIENT listener,
    # which is on loopback (only the sidecar, in the same network namespace, reaches it).
    assert _listener_port(kenv["KAFKA_ADVERTISED_LISTENERS"], "CLIENT") == listen_port
    assert _listener_port(kenv["KAFKA_LISTENERS"], "CLIENT") == upstream[1]
    assert "CLIENT://127.0.0.1:" in kenv["KAFKA_LISTENERS"] and upstream[0] == "127.0.0.1"
    assert int(kenv["KAFKA_NODE_ID"]) == cfg.proxy.node_id
    published = {int(p.split(":")[-2]) for p in kafka["ports"]}
    assert all(p.startswith("127.0.0.1:") for p in kafka["ports"])  # loopback only
    admin_port = config.parse_address(cfg.admin.listen, "admin.listen")[1]
    assert published == {listen_port, admin_port}
    assert proxy["depends_on"]["s3-bucket"]["condition"] == "service_completed_successfully"
    assert env["WALPROXY_OFFLOAD_S3_ENDPOINT_URL"] == "http://s3:9000"
    assert "s3" in services
