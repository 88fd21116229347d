"""walproxy.testing from the outside: the wheel in a fresh virtualenv, a user's project.

tests/outside_in/ is a user's project (README there). Here walproxy's wheel is built, installed
with its `testing` extra into a virtualenv that has nothing else of this repository (cached in
.cache/outside-in/ and rebuilt when pyproject.toml changes; the wheel itself is reinstalled on
every run), and the project is run by that virtualenv's pytest from a temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.containers.engine import ROOT, images

CACHE = ROOT / ".cache" / "outside-in"
PROJECT = ROOT / "tests" / "outside_in"
#: What the user's project needs besides walproxy[testing], pinned like pyproject's test extra.
USER_DEPS = ["pytest==8.4.2", "confluent-kafka==2.12.2"]


def _run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}: exit {done.returncode}\n" + (
        done.stdout[-4000:] + done.stderr[-4000:]
    )
    return done.stdout


def _venv() -> Path:
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + repr(USER_DEPS).encode())
    venv = CACHE / f"venv-{key.hexdigest()[:12]}"
    if not (venv / ".ready").exists():
        shutil.rmtree(CACHE, ignore_errors=True)
        _run(sys.executable, "-m", "venv", venv)
        _run(venv / "bin" / "pip", "install", "-q", *USER_DEPS)
        (venv / ".ready").touch()
    return venv


def test_a_users_project_runs_on_the_installed_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        wheels,
        ROOT,
    )
    [wheel] = wheels.glob("walproxy-*.whl")
    venv = _venv()
    pip = venv / "bin" / "pip"
    # the wheel anew every run (the sources change), its dependencies from the cache
    _run(pip, "install", "-q", "--force-reinstall", "--no-deps", wheel)
    _run(pip, "install", "-q", f"walproxy[testing] @ {wheel.as_uri()}")
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    found = images()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WALPROXY_", "VIRTUAL"))
    }
    env |= {"KAFKA_IMAGE": found["WALPROXY_KAFKA_IMAGE"], "WALPROXY_IMAGE": found["WALPROXY_IMAGE"]}
    python = venv / "bin" / "python"
    # nothing of the repository on the path: walproxy is the installed one
    where = _run(
        python, "-c", "import walproxy.testing as t; print(t.__file__)", cwd=project, env=env
    )
    assert where.startswith(str(venv)), where
    out = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", ".", cwd=project, env=env)
    assert "1 passed" in out, out
