"""A TCP relay between walproxy and its broker that can cut connections on command."""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Forwards ``listen port -> target``. ``cut_next_response()`` makes the relay drop the
    next chunk the broker sends and close that connection: the request reached the broker,
    its answer never reaches the proxy. ``cut_all()`` closes every open connection at once;
    while ``blocked`` new connections are accepted and closed at once (the broker looks
    unreachable from the proxy, while clients and other brokers still reach it)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._cut = threading.Event()
        self.cuts = 0
        self.blocked = False
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()  # open ones only
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_next_response(self) -> None:
        self._cut.set()

    def cut_all(self) -> int:
        """Close every open connection; returns how many pairs were cut."""
        with self._lock:
            live, self._socks = self._socks, set()
        for s in live:
            _close(s)
        self.cuts += len(live) // 2
        return len(live) // 2

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.blocked:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_broker: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_broker and self._cut.is_set():
                    self._cut.clear()
                    self.cuts += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._socks -= {src, dst}
        for s in (src, dst):
            _close(s)

    def close(self) -> None:
        self._server.close()
        self.cut_all()


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
