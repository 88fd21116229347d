"""Shared helpers for the WAL tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from prometheus_client import REGISTRY


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    v = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


def new_dir(prefix: str = "waltest-") -> str:
    """A fresh directory on a real disk (/var/tmp, not tmpfs)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")


def snapshot(src: str) -> str:
    """Copy a WAL directory as a crashed process would leave it (no LOCK held)."""
    dst = new_dir("walsnap-")
    shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def dir_digest(path: str) -> dict[str, str]:
    out = {}
    for n in sorted(os.listdir(path)):
        with open(os.path.join(path, n), "rb") as f:
            out[n] = hashlib.sha256(f.read()).hexdigest()
    return out
