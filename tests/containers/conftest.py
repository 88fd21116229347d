"""Every test here needs a Docker engine: none, and they are skipped loudly (failed in CI)."""

from __future__ import annotations

import os

import pytest

from tests.containers.engine import REPORT, require_engine

# testcontainers on this project's machines: its reaper image cannot be pulled, and the
# machine looks like a container to it (it would look for the engine's bridge gateway).
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")


@pytest.fixture(autouse=True, scope="session")
def docker_engine() -> None:
    require_engine()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("container images")
        for line in REPORT:
            terminalreporter.write_line(line)
