"""deploy/prometheus/walproxy-rules.yml: valid, unit-tested with promtool, and documented.

promtool comes with Debian's ``prometheus`` package (deploy/setup-host.sh installs it). Without
it the promtool tests are skipped with that reason, and fail under ``CI=true``. The other
checks need nothing: every metric an alert uses is one the code registers (a renamed metric
breaks them here, not silently in production), every alert has a unit test, and
docs/operations.md explains each one at the section its ``runbook`` annotation names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_dashboard import registered_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "walproxy-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "walproxy-rules-test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
_METRIC = re.compile(r"\bwalproxy_[a-z0-9_]+")


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        message = "NO PROMTOOL, alert rules not unit-tested: install Debian's `prometheus` package"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    # From another directory: the test file must find its rule file by itself.
    return subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=120, check=False, cwd="/"
    )


def test_promtool_checks_the_rules() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout, out.stdout


def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests look at the thresholds: fencing alerts only when fenced."""
    broken = RULES.read_text().replace("walproxy_wal_fenced == 1", "walproxy_wal_fenced >= 0")
    (tmp_path / "walproxy-rules.yml").write_text(broken)
    (tmp_path / "walproxy-rules-test.yml").write_text(RULE_TESTS.read_text())
    out = promtool("test", "rules", str(tmp_path / "walproxy-rules-test.yml"))
    assert out.returncode != 0, out.stdout
    assert "alertname: WalproxyWalFenced" in out.stderr, out.stdout + out.stderr


def test_every_alert_uses_registered_metrics() -> None:
    registered = registered_names()
    missing = [
        f"{a['alert']}: {name}"
        for a in alerts()
        for name in _METRIC.findall(a["expr"])
        if name not in registered
    ]
    assert not missing, missing


def test_every_alert_has_a_unit_test_and_a_runbook_section() -> None:
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    doc = OPERATIONS.read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", doc, re.M)
    }
    for a in alerts():
        name = a["alert"]
        assert name in tested, f"{name}: no unit test in {RULE_TESTS.name} expects it to fire"
        assert a["labels"]["severity"] in {"critical", "warning"}, name
        runbook = a["annotations"]["runbook"]
        page, _, anchor = runbook.partition("#")
        assert page == "docs/operations.md" and anchor in headings, f"{name}: {runbook}"
