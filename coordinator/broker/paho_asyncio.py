"""One paho-mqtt connection run by the asyncio loop through paho's public external-loop API.

Why the asyncio loop and not paho's own network thread (``loop_start`` plus
``call_soon_threadsafe``): the link's flow control must stop reading the socket while too
many received messages wait to be handled, and paho's thread always reads. Here paho's
``loop_read``/``loop_write`` run from ``add_reader``/``add_writer`` and ``loop_misc`` (keep-alive)
from a one-second timer, so every paho callback runs on the loop's thread and no state is
shared between threads. The one blocking step, TCP connect and TLS handshake in
``reconnect``, runs in a worker thread before the socket is handed to the loop.

Theory of operation (one instance per connection, never reused):
    open      ``connect_async`` (arguments checked), ``reconnect`` in a thread (CONNECT queued
              or written), then paho's socket callbacks are installed and the socket is
              registered for reading, and for writing while paho has bytes queued; CONNACK.
    running   each PUBLISH received lands in ``inbox``; the owner ``ack``s it once handled.
              Once ``armed``, reading pauses while one more ``loop_read`` (it reads up to one
              packet per message of ours in flight) could take ``inbox`` past ``max_pending``,
              and resumes when ``handled`` finds ``inbox`` at half of it.
    lost      paho closed the socket (read/write error, keep-alive, DISCONNECT written or
              received) or ``abort`` did: nothing stays registered and ``lost`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from fedrt.coordinator.errors import BrokerError, BrokerRefused

log = logging.getLogger(__name__)

T = TypeVar("T")

# paho's keep-alive bookkeeping counts whole seconds; its own loop also runs it once a second.
_MISC_INTERVAL_S = 1.0
# Our publishes in flight at most: paho's and Mosquitto's default in-flight window (paho
# would only queue more itself).
_MAX_IN_FLIGHT = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    topic: str
    payload: bytes
    mid: int
    qos: int


class PahoConnection:
    """Drives one paho client's connection on the running loop (see the module docstring)."""

    def __init__(self, client: mqtt.Client, *, max_pending: int) -> None:
        self.client = client
        self._loop = asyncio.get_running_loop()
        self.inbox: deque[Received] = deque()
        self.arrived = asyncio.Event()  # set on each message, and when the connection is lost
        self.lost = asyncio.Event()
        self.why = "closed"
        self._limit = max(2, max_pending)
        # The owner keeps at most this many publishes in flight, so that with ``inbox`` at
        # half the limit one ``loop_read`` always fits: reading never stalls for good.
        self.window = max(1, min(_MAX_IN_FLIGHT, self._limit // 2))
        self.armed = False
        self._paused = False
        self._sock: Any = None
        self._fd: int | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._connack: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._published: dict[int, asyncio.Future[ReasonCode]] = {}
        self._subscribed: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe

    @property
    def in_flight(self) -> int:
        return len(self._published)

    # -- the owner's calls -------------------------------------------------------------------

    async def open(self, host: str, port: int, timeout: float, **connect: Any) -> None:
        """Connect (``connect``: paho's ``connect_async`` keywords) and wait for the CONNACK."""
        try:
            self.client.connect_async(host, port, **connect)
        except ValueError as exc:
            raise BrokerError(f"cannot connect to {host}:{port}: {exc}") from exc
        opener = _Opener(self.client)
        attempt = self._loop.run_in_executor(None, opener.run)
        try:
            # Shielded: a thread cannot be cancelled; the opener closes what it opens late.
            await asyncio.wait_for(asyncio.shield(attempt), timeout)
        except BaseException as exc:
            opener.abandon()
            if isinstance(exc, OSError | ValueError):  # TimeoutError and ssl errors included
                raise BrokerError(f"cannot connect to {host}:{port}: {exc!r}") from exc
            raise
        self._attach()
        reason = await self.answer(self._connack, timeout, "CONNACK")
        if reason.is_failure:
            raise BrokerRefused(f"{host}:{port} refused the connection: {reason}")

    async def subscribe(self, filters: Sequence[str], qos: int, timeout: float) -> list[ReasonCode]:
        """One SUBSCRIBE for all ``filters``; the broker's reason code for each."""
        if not filters:
            return []
        rc, mid = self.client.subscribe([(f, qos) for f in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerError(f"cannot subscribe: {mqtt.error_string(rc)}")
        future: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._subscribed[mid] = future
        return await self.answer(future, timeout, "SUBACK")

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool
    ) -> asyncio.Future[ReasonCode]:
        """Queue a PUBLISH; the future holds the broker's answer (QoS 0: once written)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        future: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._published[info.mid] = future
        return future

    async def answer(self, future: asyncio.Future[T], timeout: float, what: str) -> T:
        """``future``'s result; BrokerError if the connection is lost or ``timeout`` passes."""
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait((future, lost), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if future.done():
            return future.result()
        if self.lost.is_set():
            raise BrokerError(f"connection lost before the {what} ({self.why})")
        raise BrokerError(f"no {what} within {timeout:g} s")

    def ack(self, message: Received) -> None:
        if self._fd is not None:
            self.client.ack(message.mid, message.qos)

    def handled(self) -> None:
        """One message less waits: read again once half of ``max_pending`` is left."""
        if self._paused and len(self.inbox) <= self._limit // 2:
            self._resume()

    def disarm(self) -> None:
        """Read regardless of ``inbox`` (a stopping link still waits for its last PUBACK)."""
        self.armed = False
        self._resume()

    async def close(self, timeout: float) -> None:
        """DISCONNECT (the broker then drops the will), or ``abort`` after ``timeout``."""
        if self._fd is not None:
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lost.wait(), timeout)
        self.abort()

    def abort(self) -> None:
        """Close the socket without a DISCONNECT: the broker publishes the will."""
        sock = self._sock
        self._detach()
        if sock is not None:
            sock.close()

    # -- the loop's side ---------------------------------------------------------------------

    def _attach(self) -> None:
        sock = self.client.socket()
        if sock is None:
            raise BrokerError("the MQTT connection has no socket")
        self._sock, self._fd = sock, sock.fileno()
        # Installed only now: before, paho wrote the CONNECT itself from the worker thread.
        self.client.on_socket_close = self._on_socket_close
        self.client.on_socket_register_write = self._on_register_write
        self.client.on_socket_unregister_write = self._on_unregister_write
        self._loop.add_reader(self._fd, self._readable)
        if self.client.want_write():
            self._loop.add_writer(self._fd, self._writable)
        self._misc = self._loop.call_later(_MISC_INTERVAL_S, self._tick)

    def _detach(self) -> None:
        fd, self._fd, self._sock = self._fd, None, None
        if fd is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self.lost.set()
        self.arrived.set()

    def _readable(self) -> None:
        try:
            while self._fd is not None:
                if self.armed and len(self.inbox) + max(1, self.in_flight) > self._limit:
                    self._loop.remove_reader(self._fd)
                    self._paused = True
                    return
                before = len(self.inbox)
                if self.client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return  # paho closed the socket and told _on_socket_close
                if self._tls_pending():
                    continue
                # A message came: more may wait (one readiness event per batch, not per
                # message). Anything else (an ack, a partial packet, nothing): wait for one.
                if len(self.inbox) == before or len(self.inbox) >= self._limit:
                    return
        except Exception as exc:  # a bug or a socket error paho does not map: reconnect
            log.warning("reading from the MQTT broker failed: %r", exc)
            self.abort()

    def _writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception as exc:
            log.warning("writing to the MQTT broker failed: %r", exc)
            self.abort()

    def _tick(self) -> None:
        self._misc = None
        try:
            self.client.loop_misc()
        except Exception as exc:
            log.warning("MQTT keep-alive failed: %r", exc)
            self.abort()
        if self._fd is not None:
            self._misc = self._loop.call_later(_MISC_INTERVAL_S, self._tick)

    def _resume(self) -> None:
        if self._paused and self._fd is not None:
            self._paused = False
            self._loop.add_reader(self._fd, self._readable)
            if self._tls_pending():
                self._loop.call_soon(self._readable)

    def _tls_pending(self) -> bool:
        # Bytes TLS has already decrypted raise no readiness event: read them now.
        pending = getattr(self._sock, "pending", None)
        return bool(pending is not None and pending() > 0)

    # -- paho's callbacks (all on the loop's thread, from the calls above) -------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if not self._connack.done():
            self._connack.set_result(rc)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        self.why = str(rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers must refuse these; never hand one on
            log.warning("dropped a message whose topic is not UTF-8")
            client.ack(message.mid, message.qos)
            return
        self.inbox.append(
            Received(topic=topic, payload=bytes(message.payload), mid=message.mid, qos=message.qos)
        )
        self.arrived.set()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        future = self._published.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(rc)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        future = self._subscribed.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(rcs)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._detach()

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._fd is not None:
            self._loop.add_writer(self._fd, self._writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._fd is not None:
            self._loop.remove_writer(self._fd)


class _Opener:
    """Runs paho's blocking ``reconnect`` in a worker thread; whoever learns second that
    the attempt both succeeded and was abandoned (a timeout, a stop) closes its socket."""

    def __init__(self, client: mqtt.Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._opened = False
        self._abandoned = False

    def run(self) -> None:
        self._client.reconnect()
        with self._lock:
            self._opened = True
            if not self._abandoned:
                return
        self._close()

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            if not self._opened:
                return
        self._close()

    def _close(self) -> None:
        sock = self._client.socket()
        if sock is not None:
            sock.close()


__all__ = ["PahoConnection", "Received"]
