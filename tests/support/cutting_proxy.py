"""A loopback TCP proxy in front of a broker that can cut its connections at a chosen moment:
part-way through what the client sends (a half-sent PUBLISH), or on the broker's next reply
(a PUBACK that never arrives)."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._server.getsockname()[:2]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._up_budget: int | None = None  # client -> broker bytes still let through
        self._cut_down = False  # cut on the next broker -> client bytes
        self.cuts = 0
        self.connections = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut_upstream_after(self, n: int) -> None:
        """Forward ``n`` more bytes from the client, then drop the connection."""
        with self._lock:
            self._up_budget = n

    def cut_on_reply(self) -> None:
        """Drop the connection instead of forwarding the broker's next bytes."""
        with self._lock:
            self._cut_down = True

    def close(self) -> None:
        self._closed = True
        # Closing alone does not wake the thread blocked in accept() (Linux); a shutdown does.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._drop(pair)
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                broker = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            broker.settimeout(None)
            pair = (client, broker)
            with self._lock:
                self._pairs.append(pair)
                self.connections += 1
            for upstream in (True, False):
                threading.Thread(target=self._pump, args=(pair, upstream), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket], upstream: bool) -> None:
        src, dst = pair if upstream else pair[::-1]
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._drop(pair)
                return
            with self._lock:
                cut = False
                if upstream and self._up_budget is not None:
                    data, cut = data[: self._up_budget], len(data) >= self._up_budget
                    self._up_budget = None if cut else self._up_budget - len(data)
                elif not upstream and self._cut_down:
                    data, cut, self._cut_down = b"", True, False
                if cut:
                    self.cuts += 1
            try:
                if data:
                    dst.sendall(data)
            except OSError:
                cut = True
            if cut:
                self._drop(pair)
                return

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
