"""The bounded nemesis run of ``make test``: mixed faults for a few minutes, nothing lost.

tests/integration/nemesis.py does the work (cluster, load, faults, final read, verdict);
this runs it with a fresh seed each time (one whose schedule has every fault kind), printed
with the schedule first, so a failure is replayed with ``WALPROXY_NEMESIS_SEED=<seed>``
(``WALPROXY_NEMESIS_SECONDS`` sets the fault phase, 150 s by default). ``make nemesis
MINUTES=30`` runs a longer one with a report in test-artifacts/.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from .nemesis import Options, run
from .nemesis_plan import KINDS, covering_seed

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]


def test_nemesis_loses_nothing_acknowledged(artifacts_dir: Path) -> None:
    seconds = float(os.environ.get("WALPROXY_NEMESIS_SECONDS", "150"))
    replay = os.environ.get("WALPROXY_NEMESIS_SEED")
    seed = int(replay) if replay else covering_seed(random.SystemRandom(), seconds, KINDS)
    opts = Options(
        seed,
        seconds,
        workdir=artifacts_dir / "nemesis",
        report_dir=artifacts_dir / "nemesis-report",
    )
    result = run(opts)
    v = result.verdict
    replay = f"replay: WALPROXY_NEMESIS_SEED={result.seed}"
    assert v.ok, f"{replay}\n{v.summary()}"
    # it was a real run: every kind of fault went in, under load, and was healed
    kinds = {r.fault.kind for r in result.executed}
    assert kinds == set(KINDS), f"{replay}: only {sorted(kinds)} fitted in {seconds} s"
    for p in v.producers:
        assert p.acked > 1000, f"{replay}: {p.name} had only {p.acked} acks"
        assert p.failed == 0, f"{replay}: {p.name} gave up on {p.failed} records"
    assert result.report["reconciliations"].get("runs", 0) > 0, replay
