"""One thread that runs the MQTT links of many clients: paho's external-loop API on a selector.

A device app has one link and lets paho run it on its own thread (``loop_start``). A process
that hosts hundreds of simulated devices cannot afford a thread per link: this loop waits
on all their sockets at once, reads and writes whichever are ready, runs each client's
keep-alive bookkeeping once a second and reconnects the ones whose back-off has expired.

Thread model: paho calls ``on_socket_register_write`` from whichever thread publishes; the
loop only records the request and wakes its selector, so the selector itself is touched by
the loop thread alone.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from fedrt.sdk.errors import TransportError

__all__ = ["NetworkLoop"]

log = logging.getLogger("fedrt.sdk.network_loop")

# paho's keep-alive, ping-timeout and retry bookkeeping is in seconds: once a second is
# what paho's own loop does between socket events.
_MISC_INTERVAL_S = 1.0


@dataclass(slots=True)
class _Link:
    client: mqtt.Client
    # Called (on the loop thread) when a connection attempt fails before reaching the broker.
    on_connect_error: Callable[[Exception], None]
    # Monotonic time of the next connection attempt; None while connected or connecting.
    reconnect_at: float | None = 0.0


class NetworkLoop:
    """Runs many paho clients on one thread (see the module docstring)."""

    def __init__(self, *, name: str = "fedrt-mqtt-loop") -> None:
        self.name = name
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._calls: deque[Callable[[], None]] = deque()
        self._links: dict[int, _Link] = {}  # id(client) -> link; loop thread only
        # (time, id(client)) of connection attempts due; stale entries skipped.
        self._due: list[tuple[float, int]] = []
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise TransportError("network loop already started")
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close every link still attached and end the thread."""
        with self._lock:
            thread, self._stopping = self._thread, True
        self._wake()
        if thread is not None:
            thread.join(timeout)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    # ------------------------------------------------------------------ links
    def attach(self, client: mqtt.Client, on_connect_error: Callable[[Exception], None]) -> None:
        """Run ``client`` (already ``connect_async``-ed) on this loop; it connects at once."""
        if not self.running:
            raise TransportError("network loop is not running")
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        link = _Link(client=client, on_connect_error=on_connect_error)
        self.call_soon(lambda: self._add(link))

    def detach(self, client: mqtt.Client, timeout: float = 5.0) -> None:
        """Send DISCONNECT (the broker keeps the session) and forget ``client``."""
        done = threading.Event()

        def remove() -> None:
            link = self._links.pop(id(client), None)
            try:
                if link is not None and client.socket() is not None:
                    client.disconnect()
                    client.loop_write()
            finally:
                sock = client.socket()
                if sock is not None:  # DISCONNECT not written yet: close anyway
                    self._unregister(sock)
                    sock.close()
                done.set()

        if not self.running:
            return
        self.call_soon(remove)
        done.wait(timeout)

    def reconnect_later(self, client: mqtt.Client, delay_s: float) -> None:
        """Try to connect ``client`` again in ``delay_s`` seconds (the caller's back-off)."""
        at = time.monotonic() + max(0.0, delay_s)

        def schedule() -> None:
            link = self._links.get(id(client))
            if link is not None:
                link.reconnect_at = at
                heapq.heappush(self._due, (at, id(client)))

        self.call_soon(schedule)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread (from any thread)."""
        with self._lock:
            self._calls.append(fn)
        if threading.get_ident() != self._ident:
            self._wake()

    # ------------------------------------------------------------------ paho socket callbacks
    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(lambda: self._register(client, sock, selectors.EVENT_READ))

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(lambda: self._unregister(sock))

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        events = selectors.EVENT_READ | selectors.EVENT_WRITE
        self._in_loop(lambda: self._modify(sock, events))

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(lambda: self._modify(sock, selectors.EVENT_READ))

    def _in_loop(self, fn: Callable[[], None]) -> None:
        if threading.get_ident() == self._ident:
            fn()
        else:
            self.call_soon(fn)

    # ------------------------------------------------------------------ loop thread
    def _add(self, link: _Link) -> None:
        self._links[id(link.client)] = link
        self._connect(link)

    def _register(self, client: mqtt.Client, sock: Any, events: int) -> None:
        link = self._links.get(id(client))
        if link is None:  # detached meanwhile
            return
        try:
            self._selector.register(sock, events, link)
        except KeyError:
            self._selector.modify(sock, events, link)
        except (ValueError, OSError):  # closed before we got to it
            pass

    def _modify(self, sock: Any, events: int) -> None:
        try:
            key = self._selector.get_key(sock)
            if key.events != events:
                self._selector.modify(sock, events, key.data)
        except (KeyError, ValueError, OSError):
            pass

    def _unregister(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)

    def _wake(self) -> None:
        # A full wake-up socket means the loop is awake already; a closed one, stopping.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        self._ident = threading.get_ident()
        next_misc = time.monotonic()
        try:
            while not self._stopping:
                wake = min(next_misc, self._due[0][0]) if self._due else next_misc
                timeout = max(0.0, wake - time.monotonic())
                for key, mask in self._selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        self._drain_wake()
                        continue
                    self._service(key.data, mask)
                self._run_calls()
                now = time.monotonic()
                self._reconnect_due(now)
                if now >= next_misc:
                    self._housekeeping(now)
                    next_misc = now + _MISC_INTERVAL_S
        except Exception:  # the loop must not die silently: every link would go quiet
            log.exception("network loop %s failed", self.name)
        finally:
            for link in list(self._links.values()):
                try:
                    if link.client.socket() is not None:
                        link.client.disconnect()
                        link.client.loop_write()
                except Exception:  # best effort while shutting down
                    log.debug("disconnect at shutdown failed", exc_info=True)
            self._links.clear()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _run_calls(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    return
                fn = self._calls.popleft()
            try:
                fn()
            except Exception:
                log.exception("network loop call failed")

    def _service(self, link: _Link, mask: int) -> None:
        client = link.client
        if mask & selectors.EVENT_READ:
            client.loop_read()
            sock = client.socket()
            # TLS may hold decrypted bytes the selector cannot see.
            while sock is not None and getattr(sock, "pending", lambda: 0)():
                client.loop_read()
                sock = client.socket()
        if mask & selectors.EVENT_WRITE and client.socket() is not None:
            client.loop_write()

    def _housekeeping(self, now: float) -> None:
        for link in list(self._links.values()):
            if link.client.socket() is not None:
                link.client.loop_misc()

    def _reconnect_due(self, now: float) -> None:
        while self._due and self._due[0][0] <= now:
            at, key = heapq.heappop(self._due)
            link = self._links.get(key)
            if link is not None and link.reconnect_at == at:
                self._connect(link)

    def _connect(self, link: _Link) -> None:
        # Until the transport schedules another try (on_disconnect / the error hook).
        link.reconnect_at = None
        if link.client.socket() is not None:
            return
        try:
            link.client.reconnect()
        except Exception as exc:  # refused, unreachable, TLS failure: back off and retry
            link.on_connect_error(exc)
