"""``walproxy dev up --data-dir D`` a second time (a second ``make demo``) restarts the same
cluster: same cluster id, the data and the WAL of the first run still there."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.dev.cluster import free_port

from . import clients as c

pytestmark = pytest.mark.kafka


def _up(data_dir: Path, port: int, admin: int) -> tuple[subprocess.Popen[str], str]:
    """Start ``dev up``; returns the process and its cluster id once it is up."""
    argv = [sys.executable, "-m", "proxy", "dev", "up", "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        [*argv, "--port", str(port), "--admin-port", str(admin)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("WALPROXY_")},
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if m := re.search(r"cluster id: (\S+);", line):
            return proc, m.group(1)
    raise AssertionError("dev up exited before it was up:\n" + "".join(lines))


def _down(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)  # Ctrl-C, as `make demo` is stopped
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out


def test_second_dev_up_in_the_same_directory_restarts_the_cluster(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    bootstrap = f"127.0.0.1:{port}"
    topic = c.unique_tag("again")
    msgs = c.messages(20, topic, 1)
    proc, first_id = _up(tmp_path, port, admin)
    try:
        c.confluent_produce(bootstrap, topic, msgs, acks="all")
    finally:
        _down(proc)
    proc, second_id = _up(tmp_path, port, admin)
    try:
        assert second_id == first_id
        c.assert_contents(c.confluent_consume(bootstrap, topic, len(msgs)), msgs, "after restart")
    finally:
        _down(proc)
