"""Every test here needs a Docker engine: none, and they are skipped loudly (failed in CI)."""

from __future__ import annotations

import pytest

from tests.containers.engine import require_engine


@pytest.fixture(autouse=True, scope="session")
def docker_engine() -> None:
    require_engine()
