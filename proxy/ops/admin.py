"""The admin HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``, ``/status``.

A deliberately tiny HTTP/1.0 responder on trio, so the admin port shares the proxy's event
loop and shutdown instead of running a thread. Listens on loopback unless configured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = structlog.get_logger("walproxy.admin")

_MAX_REQUEST = 8192


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class AdminServer:
    def __init__(
        self,
        ready: Callable[[], tuple[bool, str]],
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._ready = ready
        self._status = status

    def route(self, path: str) -> bytes:
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return _response("200 OK", generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return _response("200 OK", b"ok\n")
        if path == "/readyz":
            ok, why = self._ready()
            return _response("200 OK" if ok else "503 Service Unavailable", (why + "\n").encode())
        if path == "/status" and self._status is not None:
            body = json.dumps(self._status(), indent=2).encode() + b"\n"
            return _response("200 OK", body, "application/json")
        return _response("404 Not Found", b"not found\n")

    async def handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < _MAX_REQUEST:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
            parts = data.split(b"\r\n", 1)[0].split()
            if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                reply = _response("400 Bad Request", b"bad request\n")
            else:
                reply = self.route(parts[1].decode("latin-1"))
            try:
                await stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        log.info("admin endpoint listening", url=f"http://{host}:{bound}/metrics")
        task_status.started(bound)
        await trio.serve_listeners(self.handle, listeners)
