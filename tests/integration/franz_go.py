"""franz-go's own kgo integration suite as a black box: run it against an address, read its
results test by test.

The test binary and Go's ``test2json`` are built by ``make franz-go`` (``make setup`` does it)
into ``.cache/franz-go-<version>/``; ``WALPROXY_FRANZ_GO`` names that directory (``make test``
sets it). The suite takes its broker from the environment: ``KGO_SEEDS``; ``KGO_TEST_RF`` is 1
(our topics are RF=1) and ``KGO_TEST_RECORDS`` is kept small so the three runs fit in a
``make test`` (franz-go's default is 500 000 records per ETL test).

The parsing half (:func:`parse_events`) is plain code over test2json's event lines, so its
unit test needs no binary.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Per ETL test (the group and transaction ETL tests dominate a run's time); 10 000 keeps
#: the three runs near 4 minutes on the 2 shared cores (20 000: a direct run alone took 98 s).
RECORDS = 10_000


@dataclass
class TestResult:
    name: str
    status: str = "run"  # run (never finished), pass, fail, skip
    elapsed: float = 0.0
    output: list[str] = field(default_factory=list)

    @property
    def skip_reason(self) -> str:
        """What franz-go's own ``t.Skip`` said: the indented ``file.go:N: reason`` line."""
        for line in self.output:
            text = line.strip()
            if text.startswith(("=== ", "--- ")) or not text:
                continue
            _, sep, reason = text.partition(".go:")
            if sep:
                return reason.partition(": ")[2] or reason
        return ""


@dataclass
class SuiteRun:
    mode: str
    seeds: str
    wall_s: float
    exit_code: int
    tests: dict[str, TestResult]
    log: Path

    def named(self, status: str) -> list[str]:
        return sorted(n for n, t in self.tests.items() if t.status == status)

    def counts(self) -> str:
        return (
            f"{len(self.named('pass'))} passed, {len(self.named('fail'))} failed, "
            f"{len(self.named('skip'))} skipped, {len(self.named('run'))} unfinished"
        )


def parse_events(lines: Iterable[str]) -> dict[str, TestResult]:
    """Top-level tests (subtests fold into their parent's output) from test2json events.

    A line that is not JSON (the binary's own stderr, if mixed in) is ignored."""
    tests: dict[str, TestResult] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        name = event.get("Test") if isinstance(event, dict) else None
        if not isinstance(name, str) or not name:
            continue
        top, _, sub = name.partition("/")
        result = tests.setdefault(top, TestResult(top))
        action = event.get("Action")
        if action == "output":
            result.output.append(event.get("Output", ""))
        elif action in ("pass", "fail", "skip") and not sub:
            result.status = action
            result.elapsed = float(event.get("Elapsed", 0.0))
    return tests


def suite_dir() -> Path:
    env = os.environ.get("WALPROXY_FRANZ_GO")
    path = Path(env) if env else next(iter(sorted((ROOT / ".cache").glob("franz-go-*"))), None)
    if path is None or not (path / "kgo.test").exists() or not (path / "test2json").exists():
        pytest.fail("no franz-go test binary: run `make franz-go` (make setup builds it)")
    return path


def run_suite(
    mode: str,
    seeds: str,
    workdir: Path,
    *,
    timeout: float = 600.0,
    only: str | None = None,
    env: dict[str, str] | None = None,
) -> SuiteRun:
    """Run the kgo suite (``only``: the tests matching that regexp) against ``seeds``, with
    ``env`` on top (the SASL tests' seeds and credentials); events go to
    ``workdir/<mode>.jsonl``.

    The binary runs in its own directory, where ``make franz-go`` put the ``config.go`` that
    one test parses."""
    binary = suite_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{mode}.jsonl"
    environ = {
        **os.environ,
        "KGO_SEEDS": seeds,
        "KGO_TEST_RF": "1",
        "KGO_TEST_RECORDS": str(RECORDS),
        "KGO_LOG_LEVEL": "none",
        **(env or {}),
    }
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [
                str(binary / "test2json"),
                "-t",
                str(binary / "kgo.test"),
                "-test.v=test2json",
                "-test.timeout",
                f"{int(timeout)}s",
                *(["-test.run", only] if only else []),
            ],
            cwd=binary,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout + 60,
            check=False,
        )
    wall = time.monotonic() - started
    with log.open() as f:
        tests = parse_events(f)
    return SuiteRun(mode, seeds, wall, proc.returncode, tests, log)
