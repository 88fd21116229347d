"""No AWS credentials is a clear StoreError, not botocore's traceback (a rebuild or an
offloader started without them says what is missing)."""

from __future__ import annotations

import pytest

from wal.object_store import S3Store, StoreError


def test_missing_credentials_are_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-profile probe
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    store = S3Store("bucket", "p/", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    with pytest.raises(StoreError, match="credentials") as info:
        store.get("k")
    assert info.value.kind == "credentials"
