"""Object stores with conditional writes: S3 (boto3) and a local directory (``file://``).

It lives in wal/ (the bottom layer, no Kafka knowledge) because both the S3 WAL backend
(:mod:`wal.s3_wal`) and the offloader (:mod:`offload`) use it; ``offload.store`` re-exports it
and adds ``open_store`` for ``offload.target`` strings.

:class:`ObjectStore` is what the S3 WAL, the offloader and ``walproxy rebuild`` need: get,
head, put with
``If-None-Match: *`` / ``If-Match: <etag>``, list and delete. Both implementations give the
same semantics:

* ``put(key, data, if_none_match=True)`` creates the object only if no object has that key;
* ``put(key, data, if_match=etag)`` replaces the object only if its current ETag is
  ``etag`` (a missing object fails too);
* a failed condition raises :class:`PreconditionFailed`; nothing is written.

S3 enforces the conditions atomically on the server (AWS since Aug/Nov 2024; moto's server,
which the tests use, honours both headers — see docs/offload-format.md for how faithfully).
:class:`FileStore` makes them atomic with ``link(2)`` (fails if the name exists) for
If-None-Match, and a compare-and-rename under an exclusive ``flock`` for If-Match. ETags are
the MD5 of the content in quotes, as S3 gives for single-part uploads.

The methods are synchronous (boto3 is); callers run them in worker threads with deadlines
and retries (:mod:`offload.s3_calls`, :mod:`wal.s3_wal`, both pacing retries with
:func:`backoff_delays`). Transient failures raise
:class:`StoreError` with a ``kind`` for metrics.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .file_backend import fsync_dir


class StoreError(Exception):
    """A request failed in a way worth retrying (5xx, throttling, timeout, connection)."""

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class ObjectNotFound(Exception):
    """No object has that key."""


class PreconditionFailed(Exception):
    """An If-None-Match / If-Match condition did not hold; nothing was written."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class StoredObject:
    data: bytes
    etag: str


class ObjectStore(Protocol):
    def get(self, key: str) -> StoredObject: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str: ...
    def list(self, prefix: str) -> list[ObjectInfo]: ...
    def delete(self, key: str) -> None: ...
    def describe(self) -> str: ...


def backoff_delays(first_s: float = 0.1, cap_s: float = 5.0) -> Iterator[float]:
    """The retry policy shared by every object-store caller: capped exponential backoff with
    jitter (each delay drawn from [d/2, d], d doubling from ``first_s`` up to ``cap_s``)."""
    d = first_s
    while True:
        yield d * random.uniform(0.5, 1.0)
        d = min(d * 2, cap_s)


def md5_etag(data: bytes) -> str:
    return '"%s"' % hashlib.md5(data, usedforsecurity=False).hexdigest()


def same_etag(a: str, b: str) -> bool:
    return a.strip('"') == b.strip('"')


# -- S3 --------------------------------------------------------------------------------------
class S3Store:
    """An S3 bucket (any S3-compatible endpoint) under ``prefix``; credentials from the
    standard AWS chain. ``max_attempts`` is botocore's own retry budget per call (1: none,
    for callers that retry themselves); every socket operation has ``read_timeout_s``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        max_attempts: int = 5,
        max_pool_connections: int = 16,
    ) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.prefix = prefix
        self._endpoint = endpoint_url
        config = BotoConfig(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max_pool_connections,
            # Custom endpoints (MinIO, moto, Ceph) rarely do virtual-hosted buckets.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
        )

    def describe(self) -> str:
        where = f" at {self._endpoint}" if self._endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _call(self, op: str, **kw: object) -> dict:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )

        try:
            return getattr(self._client, op)(Bucket=self.bucket, **kw)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                412,
                409,
            ):
                raise PreconditionFailed(f"{op} {kw.get('Key')}: {code}") from None
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                raise ObjectNotFound(str(kw.get("Key"))) from None
            if status == 503 or code in ("SlowDown", "Throttling", "RequestLimitExceeded"):
                raise StoreError(f"{op}: {code} ({status})", "throttled") from None
            if status >= 500:
                raise StoreError(f"{op}: {code} ({status})", "http_5xx") from None
            raise StoreError(
                f"{op}: {code} ({status}): {err.get('Message', '')}", "http_4xx"
            ) from None
        except (ReadTimeoutError, ConnectTimeoutError) as exc:
            raise StoreError(f"{op}: {exc}", "timeout") from None
        except (BotoConnectionError, HTTPClientError) as exc:
            raise StoreError(f"{op}: {exc}", "connection") from None
        except (NoCredentialsError, PartialCredentialsError) as exc:
            # A configuration problem, said as one (not a traceback): the standard chain
            # (environment, ~/.aws, IRSA, instance profile) found no usable credentials.
            raise StoreError(
                f"{op}: {exc} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or a role)",
                "credentials",
            ) from None

    def get(self, key: str) -> StoredObject:
        resp = self._call("get_object", Key=self.prefix + key)
        try:
            data = resp["Body"].read()
        except Exception as exc:  # a connection dropped mid-body
            raise StoreError(f"get_object {key}: body: {exc!r}", "connection") from None
        return StoredObject(data, resp["ETag"])

    def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self._call("head_object", Key=self.prefix + key)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, int(resp["ContentLength"]), resp["ETag"])

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        kw: dict[str, object] = {"Key": self.prefix + key, "Body": data}
        if if_none_match:
            kw["IfNoneMatch"] = "*"
        if if_match is not None:
            kw["IfMatch"] = if_match
        try:
            resp = self._call("put_object", **kw)
        except ObjectNotFound:  # If-Match on a key that is gone
            raise PreconditionFailed(f"put_object {key}: no object to match") from None
        return resp["ETag"]

    def list(self, prefix: str) -> list[ObjectInfo]:
        out = []
        token = None
        while True:
            kw: dict[str, object] = {"Prefix": self.prefix + prefix}
            if token:
                kw["ContinuationToken"] = token
            resp = self._call("list_objects_v2", **kw)
            for o in resp.get("Contents", []):
                out.append(ObjectInfo(o["Key"][len(self.prefix) :], int(o["Size"]), o["ETag"]))
            if not resp.get("IsTruncated"):
                return out
            token = resp["NextContinuationToken"]

    def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectNotFound):
            self._call("delete_object", Key=self.prefix + key)


# -- local directory ---------------------------------------------------------------------------
class FileStore:
    """Objects as files under ``root`` (keys are relative paths), durably written."""

    _TMP = ".tmp"
    _LOCK = ".lock"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / self._TMP).mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if (
            not key
            or any(p in ("", ".", "..") for p in parts)
            or parts[0]
            in (
                self._TMP,
                self._LOCK,
            )
        ):
            raise ValueError(f"{key!r} is not a valid object key")
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across threads of this process and across processes (flock)."""
        with self._thread_lock:
            fd = os.open(self.root / self._LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _write_tmp(self, data: bytes) -> Path:
        tmp = self.root / self._TMP / uuid.uuid4().hex
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def get(self, key: str) -> StoredObject:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        return StoredObject(data, md5_etag(data))

    def head(self, key: str) -> ObjectInfo | None:
        try:
            obj = self.get(key)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, len(obj.data), obj.etag)

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(data)
        try:
            if if_none_match:
                try:
                    os.link(tmp, path)  # atomic: fails if the name exists
                except FileExistsError:
                    raise PreconditionFailed(f"{key} exists") from None
            elif if_match is not None:
                with self._locked():
                    try:
                        current = md5_etag(path.read_bytes())
                    except FileNotFoundError:
                        raise PreconditionFailed(f"{key} does not exist") from None
                    if not same_etag(current, if_match):
                        raise PreconditionFailed(f"{key} has ETag {current}, not {if_match}")
                    os.replace(tmp, path)
            else:
                with self._locked():
                    os.replace(tmp, path)
            fsync_dir(str(path.parent))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return md5_etag(data)

    def list(self, prefix: str) -> list[ObjectInfo]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != self._TMP]
                rel_dir = ""
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key == self._LOCK or not key.startswith(prefix):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    continue
                out.append(ObjectInfo(key, size, ""))  # ETag on demand: head()
        out.sort(key=lambda o: o.key)
        return out

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise StoreError(f"delete {key}: {exc}", "io") from None
