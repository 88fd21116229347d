"""A TCP relay in front of the S3 server that injects faults on command.

Modes: ``pass`` (forward), ``503`` (answer every request ``503 Slow Down``), ``reset``
(accept, then reset the connection), ``stall`` (accept and read, never answer). Changing
the mode drops every open connection, so pooled keep-alive connections see it too.
``delay_s`` (any mode) holds every chunk the server sends back for that long: an injected
round-trip time for benchmarks (one delay per response for responses that fit one read).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class S3Relay:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "pass"
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.faults = 0
        self.delay_s = 0.0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "503", "reset", "stall")
        self.mode = mode
        with self._lock:
            live, self._live = self._live, set()
        for s in live:
            _close(s)

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._live.update(socks)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        mode = self.mode
        if mode != "pass":
            self.faults += 1
        if mode == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        if mode == "503":
            with contextlib.suppress(OSError):
                client.recv(65536)
                client.sendall(
                    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
            _close(client)
            return
        self._track(client)
        if mode == "stall":
            with contextlib.suppress(OSError):
                while client.recv(65536):
                    pass
            _close(client)
            return
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            _close(client)
            return
        self._track(upstream)
        threading.Thread(target=_pump, args=(upstream, client, self), daemon=True).start()
        _pump(client, upstream)

    def close(self) -> None:
        self._server.close()
        self.set_mode("pass")


def _pump(src: socket.socket, dst: socket.socket, delayed: S3Relay | None = None) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            if delayed is not None and delayed.delay_s:
                time.sleep(delayed.delay_s)
            dst.sendall(data)
    _close(src)
    _close(dst)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
