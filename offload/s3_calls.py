"""Object-store calls from trio: worker threads, per-request deadlines, retries, metrics.

:class:`InstrumentedStore` counts every request (``walproxy_offload_s3_requests_total``) and
failure (``..._errors_total{op,kind}``). :class:`Retrying` runs a synchronous function of the
store in a thread under ``request_timeout_s`` and retries transient failures with capped
exponential backoff and jitter, forever by default: during an outage the data stays in
Kafka and the WAL, and offload resumes by itself when the store answers again. A request
past its deadline is abandoned (its thread ends at botocore's read timeout) and retried;
the commit protocol (:mod:`offload.commit`) makes every retry safe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog
import trio

from . import metrics as m
from .store import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StoredObject,
    StoreError,
    backoff_delays,
)

log = structlog.get_logger("walproxy.offload.s3")
T = TypeVar("T")


class InstrumentedStore:
    """An :class:`ObjectStore` that counts requests and errors."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def describe(self) -> str:
        return self.inner.describe()

    def _run(self, op: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        m.S3_REQUESTS.labels(op).inc()
        try:
            return fn(*args, **kw)
        except StoreError as exc:
            m.S3_ERRORS.labels(op, exc.kind).inc()
            raise
        except PreconditionFailed:
            m.S3_ERRORS.labels(op, "precondition_failed").inc()
            raise
        except ObjectNotFound:
            raise
        except OSError as exc:  # FileStore: disk trouble is transient from our side
            m.S3_ERRORS.labels(op, "io").inc()
            raise StoreError(f"{op}: {exc}", "io") from exc

    def get(self, key: str) -> StoredObject:
        return self._run("get", self.inner.get, key)

    def head(self, key: str) -> ObjectInfo | None:
        return self._run("head", self.inner.head, key)

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        return self._run(
            "put", self.inner.put, key, data, if_none_match=if_none_match, if_match=if_match
        )

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self._run("list", self.inner.list, prefix)

    def delete(self, key: str) -> None:
        return self._run("delete", self.inner.delete, key)


class Retrying:
    def __init__(
        self,
        store: ObjectStore,
        request_timeout_s: float,
        *,
        max_backoff_s: float = 5.0,
        attempts: int | None = None,
    ) -> None:
        self.store = store
        self.timeout = request_timeout_s
        self.max_backoff = max_backoff_s
        self.attempts = attempts  # None: until it works (or is cancelled)
        self.failing_since: float | None = None

    async def __call__(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(store, *args)`` in a thread; retries StoreError and deadline overruns."""
        delays = backoff_delays(0.1, self.max_backoff)
        attempt = 0
        while True:
            attempt += 1
            try:
                with trio.fail_after(self.timeout * 2):  # a composite call: up to two requests
                    result = await trio.to_thread.run_sync(
                        fn, self.store, *args, abandon_on_cancel=True
                    )
                if self.failing_since is not None:
                    log.info(
                        "object store reachable again",
                        store=self.store.describe(),
                        outage_s=round(trio.current_time() - self.failing_since, 1),
                    )
                    self.failing_since = None
                return result
            except (StoreError, trio.TooSlowError) as exc:
                if isinstance(exc, trio.TooSlowError):
                    m.S3_ERRORS.labels(what, "deadline").inc()
                if self.failing_since is None:
                    self.failing_since = trio.current_time()
                if self.attempts is not None and attempt >= self.attempts:
                    raise StoreError(f"{what}: gave up after {attempt} attempts: {exc}") from exc
                delay = next(delays)
                log.warning(
                    "object store request failed; retrying",
                    op=what,
                    error=str(exc) or "deadline exceeded",
                    attempt=attempt,
                    retry_in_s=round(delay, 2),
                )
                await trio.sleep(delay)
