"""The Docker engine the container tests run on, or why there is none.

`make containers` (deploy/containers.sh) starts an engine and builds the images; when it
could not, it wrote the reason to .cache/containers/unavailable. Without an engine the tests
are skipped with that reason, which `pytest -ra` prints in its summary; under ``CI=true`` they
fail instead, since CI on this project's machines must run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Figures the container tests measured (image sizes, stop times), printed after the run.
REPORT: list[str] = []
STATE = ROOT / ".cache" / "containers"
# What deploy/containers.sh builds where no registry is reachable (images.env says so).
DEFAULT_IMAGES = {
    "WALPROXY_IMAGE": "walproxy:0.1.0",
    "WALPROXY_KAFKA_IMAGE": "apache/kafka:4.1.1",
    "WALPROXY_S3_IMAGE": "walproxy-local/moto:5.2.5",
}


def _why_not() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode == 0:
        return None
    note = STATE / "unavailable"
    reason = note.read_text().strip() if note.exists() else probe.stderr.strip()[-300:]
    return f"{reason} (run `make containers` as root on Debian)"


def require_engine() -> None:
    """Skip (fail under CI=true) unless ``docker info`` answers."""
    reason = _why_not()
    if reason is None:
        return
    message = f"NO DOCKER ENGINE, container tests not run: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def configure_testcontainers() -> None:
    """testcontainers on this project's machines: its reaper image cannot be pulled, and the
    machine looks like a container to it (it would look for the engine's bridge gateway)."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")


def images() -> dict[str, str]:
    """Image names: the environment, else deploy/containers.sh's images.env, else defaults."""
    found = dict(DEFAULT_IMAGES)
    env_file = STATE / "images.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                found[key.strip()] = value.strip()
    found.update({k: os.environ[k] for k in DEFAULT_IMAGES if k in os.environ})
    return found


def compose_command() -> list[str]:
    """Debian 12's docker-compose (v1), else the compose plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]
