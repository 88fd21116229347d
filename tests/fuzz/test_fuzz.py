"""Every fuzz target, for a bounded number of executions from the committed seeds.

Each target runs in its own atheris process (an abort or a hang must fail this test, not
end pytest) with a fixed seed, so a run is repeatable; ``make fuzz SECONDS=N`` runs them
longer. A failure prints libFuzzer's report and names the saved input.
"""

from __future__ import annotations

import pytest

from tests.fuzz.run import CORPUS, _report, run_target
from tests.fuzz.seeds import SEEDS, write_corpus
from tests.fuzz.targets import TARGETS

#: Executions per target in `make test` (a few seconds each; the WAL directory one touches
#: files, so it gets fewer).
RUNS = dict.fromkeys(TARGETS, 15000) | {"wal_recovery": 1000}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_holds_its_contract(name: str) -> None:
    r = run_target(name, runs=RUNS[name], timeout_s=120)
    assert r.ok, f"fuzz target {name} found a failing input:\n{_report(r.output)}"
    assert r.runs >= RUNS[name], f"{name}: only {r.runs} executions\n{r.output[-2000:]}"


def test_every_target_has_committed_seeds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The seed corpus is what the generators make today (regenerate with
    ``python -m tests.fuzz.seeds`` after a format change)."""
    assert set(SEEDS) == set(TARGETS)
    fresh = write_corpus(tmp_path)
    for name in TARGETS:
        committed = sorted(p.name for p in (CORPUS / name).iterdir())
        assert committed == sorted(p.name for p in (tmp_path / name).iterdir()), name
        assert fresh[name] > 0


def test_produce_outcomes_target_rounds_kios_log_append_time() -> None:
    """Found in CI: kio turns log_append_time 9400648594432 ms into a datetime through a
    float (…34.431999); the target's comparison truncated it to …431 and called the exact
    reader wrong. A target bug, not the reader's."""
    TARGETS["produce_outcomes"](
        bytes.fromhex(
            "0300000007000000020001740000000200000001000000000000000000010000018cc251f400000000000000000100000001000000000000000000010000018cc251f40000000000000000010001740000000200000001000000000000000000010000018cc251f400000000000000000100000001000000000000000000010000088cc251f400000000000000000100000000"
        )
    )
