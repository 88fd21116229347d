"""The client matrix against containers stays in `make test` and CI, and never passes by
skipping there: without a Docker engine its tests are skipped with the reason, and under
``CI=true`` (what .ci/run sets) they fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.containers.engine import require_engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ci", ["true", ""])
def test_no_engine_fails_in_ci_and_skips_loudly_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(expected, match="NO DOCKER ENGINE, container tests not run"):
        require_engine()


def test_make_test_runs_the_client_matrix_against_containers() -> None:
    plan = subprocess.run(
        ["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    run = plan[plan.index("deploy/containers.sh run") :]
    assert "WALPROXY_TEST_KAFKA=testcontainers" in run
    assert "tests/integration/test_clients_*.py" in run
    # both passes must count: make test fails when either did
    assert "[ $suite -eq 0 ] && [ $matrix -eq 0 ]" in run


def test_ci_sets_ci_true() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert 'export CI="${CI:-true}"' in script
