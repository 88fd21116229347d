"""moto's S3 server on a free loopback port, as a subprocess: a real S3 HTTP API for tests.

``S3Server`` is used by the ``s3_server`` session fixture (tests/conftest.py) and by
bench/ scripts. Credentials are dummies; moto accepts any.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from proxy.dev.cluster import free_port

#: What boto3's default credential chain reads; moto accepts anything.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "walproxy-test",
    "AWS_SECRET_ACCESS_KEY": "walproxy-test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def quick_offload_env(endpoint_url: str) -> dict[str, str]:
    """walproxy settings for an offloader that copies to ``endpoint_url`` within a second
    (tests wait for the copy) and notices new partitions within one; its WAL is trimmed as
    soon as S3 covers an entry (no ``wal.retention_s``: tests wait for the trim)."""
    return {
        "WALPROXY_WAL_RETENTION_S": "0",
        "WALPROXY_OFFLOAD_S3_ENDPOINT_URL": endpoint_url,
        "WALPROXY_OFFLOAD_S3_REGION": S3_ENV["AWS_DEFAULT_REGION"],
        "WALPROXY_OFFLOAD_MAX_LAG_S": "0.3",
        "WALPROXY_OFFLOAD_REQUEST_TIMEOUT_S": "2",
        "WALPROXY_OFFLOAD_METADATA_INTERVAL_S": "1",
    }


def s3_wal_env(endpoint_url: str, bucket: str, prefix: str) -> dict[str, str]:
    """walproxy settings for a WAL on S3 (``wal.backend = "s3"``) under ``bucket/prefix``;
    the WAL takes the endpoint and region of the offloader's store settings."""
    return {
        "WALPROXY_WAL_BACKEND": "s3",
        "WALPROXY_WAL_S3_TARGET": f"s3://{bucket}/{prefix}",
        "WALPROXY_OFFLOAD_S3_ENDPOINT_URL": endpoint_url,
        "WALPROXY_OFFLOAD_S3_REGION": S3_ENV["AWS_DEFAULT_REGION"],
    }


class S3Server:
    def __init__(self, log_path: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> S3Server:
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **S3_ENV},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: see {self.log_path}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.5),
            ):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"moto_server not listening after {timeout}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()

    def client(self, endpoint_url: str | None = None):
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self) -> str:
        name = f"walproxy-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name
