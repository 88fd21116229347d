"""Every test here needs a Docker engine: none, and they are skipped loudly (failed in CI)."""

from __future__ import annotations

import pytest

from tests.containers.engine import REPORT, configure_testcontainers, require_engine

configure_testcontainers()


@pytest.fixture(autouse=True, scope="session")
def docker_engine() -> None:
    require_engine()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("container images")
        for line in REPORT:
            terminalreporter.write_line(line)
