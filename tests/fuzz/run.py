"""Run the fuzz targets with atheris (libFuzzer), one process per target.

    python -m tests.fuzz.run TARGET [--runs N] [--seconds S] [--work DIR]   # one target
    python -m tests.fuzz.run --all --seconds S                              # make fuzz

A target runs in its own process because libFuzzer exits on the first finding and a
finding may be an abort or a hang: the parent reports it and goes on. New inputs go to the
work directory (the committed seeds in ``tests/fuzz/corpus`` are only read); a finding is
saved under ``test-artifacts/fuzz/`` and re-run with ``python -m tests.fuzz.run TARGET
--reproduce FILE``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"
ARTIFACTS = ROOT / "test-artifacts" / "fuzz"
#: libFuzzer's per-input limit: an input that takes longer is a hang (a finding).
HANG_S = 10
#: An input may not make a parser hold more than this (a memory blow-up is a finding).
RSS_LIMIT_MB = 2048


@dataclass
class Result:
    target: str
    ok: bool
    runs: int
    seconds: float
    output: str


def _fuzz_in_this_process(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["proxy", "wal", "offload", "tests.fuzz"]):
        from tests.fuzz.targets import TARGETS

    fn = TARGETS[name]
    atheris.Setup([sys.argv[0], *libfuzzer_args], fn)
    atheris.Fuzz()


def run_target(
    name: str,
    *,
    runs: int | None = None,
    seconds: int | None = None,
    work: Path | None = None,
    seed: int = 1,
    timeout_s: float | None = None,
) -> Result:
    """Fuzz one target in a child process; ``ok`` is False on any finding."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-")
        work = Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    args = [
        f"-timeout={HANG_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={ARTIFACTS}/{name}-",
        f"-seed={seed}",
        "-print_final_stats=1",
        "-max_len=8192",
    ]
    if runs is not None:
        args.append(f"-runs={runs}")
    if seconds is not None:
        args.append(f"-max_total_time={seconds}")
    args += [str(work), str(CORPUS / name)]
    cmd = [sys.executable, "-m", "tests.fuzz.run", "--child", name, "--", *args]
    start = time.monotonic()
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="fuzz-scratch-", dir=shm) as scratch:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WALPROXY_FUZZ_SCRATCH": scratch}
        try:
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout_s,
                env=env,
            )  # one stream, in order: the Python traceback and libFuzzer's report together
            output, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output = f"{_text(exc.stdout)}\nTIMEOUT after {timeout_s} s"
            rc = -1
        finally:
            if tmp is not None:
                tmp.cleanup()
    if rc != 0:
        output += f"\n(fuzzing process exit status {rc})"
    elapsed = time.monotonic() - start
    m = re.search(r"stat::number_of_executed_units: (\d+)", output)
    done = int(m[1]) if m else 0
    return Result(name, rc == 0, done, elapsed, output)


def _report(output: str) -> str:
    """A finding's report without libFuzzer's progress lines (NEW, REDUCE, pulse ...)."""
    lines = [ln for ln in output.splitlines() if not re.match(r"#\d+\s", ln)]
    return "\n".join(lines)[-6000:]


def _text(out: bytes | str | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def reproduce(name: str, path: str) -> None:
    from tests.fuzz.targets import TARGETS

    TARGETS[name](Path(path).read_bytes())
    print(f"{name}: {path} passes")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        name, rest = argv[1], argv[argv.index("--") + 1 :]
        _fuzz_in_this_process(name, rest)
        return 0
    from tests.fuzz.targets import TARGETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("target", nargs="?", choices=sorted(TARGETS))
    p.add_argument("--all", action="store_true", help="every target, one after the other")
    p.add_argument("--runs", type=int)
    p.add_argument("--seconds", type=int)
    p.add_argument("--work", type=Path, help="corpus directories (one per target) to keep")
    p.add_argument("--reproduce", metavar="FILE")
    opts = p.parse_args(argv)
    if opts.reproduce:
        reproduce(opts.target, opts.reproduce)
        return 0
    names = sorted(TARGETS) if opts.all else [opts.target]
    if not names or names == [None]:
        p.error("name a target or --all")
    failed = 0
    print(f"{'target':<18} {'executions':>11} {'seconds':>8}  result")
    for name in names:
        work = (opts.work or ROOT / ".cache" / "fuzz") / name
        r = run_target(name, runs=opts.runs, seconds=opts.seconds, work=work)
        print(
            f"{name:<18} {r.runs:>11} {r.seconds:>8.1f}  {'ok' if r.ok else 'FINDING'}", flush=True
        )
        if not r.ok:
            failed += 1
            print(_report(r.output), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
