"""The coordinator's MQTT connection: persistent session, reconnects, an ordered outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiomqtt
import paho.mqtt.client as mqtt

from fedrt.coordinator.errors import BrokerError
from fedrt.protocol.topics import coordinator_presence

log = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes], Awaitable[None]]
# Reconnect quickly after a blip, but never hammer a broker that is down.
_BACKOFF_START_S = 0.25
_BACKOFF_MAX_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSettings:
    host: str
    port: int
    identifier: str = "fedrt-coordinator"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = None
    subscriptions: Sequence[str] = ()
    # Retained presence: ``online <incarnation>`` after each connect, ``offline`` as the will.
    status_topic: str | None = None
    # New at every coordinator start (``topics.coordinator_presence``): devices that see it
    # change leave the rounds this process no longer knows. None: plain ``online``.
    incarnation: str | None = None
    keepalive_s: int = 30
    # Messages held while the broker is unreachable; beyond this, publishing fails loudly.
    max_outbox: int = 100_000
    # Received, not yet handled messages held at most (see ``MqttLink``): enough to keep the
    # handler busy between socket reads; 32 x a 100 KB update is ~3 MB.
    max_pending: int = 32


class MqttLink:
    """Keeps one aiomqtt client connected and feeds incoming messages to ``on_message``.

    The session is persistent (``clean_session=False``): QoS 1 messages devices publish while
    the coordinator is away are queued by the broker and delivered after it reconnects.
    Outgoing messages are queued in order and resent if the connection drops mid-publish.

    Incoming QoS 1 messages are acknowledged only after ``on_message`` has handled them, so
    a message received but never handled (a crash, a restart) is sent again by the broker
    after a reconnect (the round machine drops a duplicate by message id). And the broker,
    not this process, holds whatever has not been handled yet: with ``max_pending``
    messages waiting, the link stops reading its socket until half of them are handled, and
    TCP flow control leaves the rest in the broker. The broker's own in-flight window
    (Mosquitto's ``max_inflight_messages``) cannot be relied on for that: Mosquitto 2.0.11
    overshoots it by hundreds once acknowledgements flow while many devices publish
    (measured; eclipse-mosquitto issue 2301 describes the quota bug).
    """

    def __init__(self, settings: LinkSettings, on_message: OnMessage) -> None:
        self.settings = settings
        self._on_message = on_message
        self._outbox: deque[Outgoing] = deque()
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self.connects = 0
        self.failures = 0
        self.handled = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Messages received from the broker and waiting to be handled."""
        client = self._client
        return len(client.messages) if client is not None else 0

    def enqueue(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if len(self._outbox) >= self.settings.max_outbox:
            raise BrokerError(f"MQTT outbox full ({self.settings.max_outbox} messages)")
        self._outbox.append(Outgoing(topic=topic, payload=payload, qos=qos, retain=retain))
        self._wake.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (True) or ``timeout`` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._outbox and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self._outbox

    async def start(self, timeout: float = 10.0) -> None:
        if self._task is not None:
            raise BrokerError("MQTT link already started")
        self._task = asyncio.create_task(self._run(), name="fedrt-mqtt-link")
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            await self.stop()
            s = self.settings
            raise BrokerError(f"cannot connect to MQTT broker {s.host}:{s.port}") from None

    async def stop(self, *, offline: bool = True) -> None:
        client = self._client
        if offline and client is not None and self.settings.status_topic is not None:
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await asyncio.wait_for(
                    client.publish(
                        self.settings.status_topic,
                        coordinator_presence(None, online=False),
                        qos=1,
                        retain=True,
                    ),
                    2,
                )
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()

    async def _run(self) -> None:
        s = self.settings
        will = None
        if s.status_topic is not None:
            offline = coordinator_presence(None, online=False)
            will = aiomqtt.Will(s.status_topic, offline, qos=1, retain=True)
        backoff = _BACKOFF_START_S
        while True:
            try:
                async with aiomqtt.Client(
                    s.host,
                    s.port,
                    identifier=s.identifier,
                    username=s.username,
                    password=s.password,
                    tls_context=s.tls,
                    will=will,
                    clean_session=False,
                    keepalive=s.keepalive_s,
                ) as client:
                    # aiomqtt has no manual-ack option; its paho client has (paho >= 2.0).
                    paho = client._client
                    paho.manual_ack_set(True)
                    gate = _ReadGate(client, paho, s.max_pending)
                    self._client = client
                    for topic in s.subscriptions:
                        await client.subscribe(topic, qos=1)
                    if s.status_topic is not None:
                        online = coordinator_presence(s.incarnation)
                        await client.publish(s.status_topic, online, qos=1, retain=True)
                    self.connects += 1
                    self._connected.set()
                    backoff = _BACKOFF_START_S
                    log.info("MQTT connected to %s:%d", s.host, s.port)
                    sender = asyncio.create_task(self._send(client))
                    gate.armed = True
                    try:
                        async for message in client.messages:
                            payload = message.payload
                            if isinstance(payload, bytes | bytearray):
                                await self._deliver(str(message.topic), bytes(payload))
                            # Handled (or refused for good): the broker may forget it now.
                            paho.ack(message.mid, message.qos)
                            self.handled += 1
                            gate.handled_one()
                    finally:
                        sender.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await sender
            except aiomqtt.MqttError as exc:
                log.warning("MQTT connection to %s:%d lost: %s", s.host, s.port, exc)
            finally:
                self._client = None
                self._connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _deliver(self, topic: str, payload: bytes) -> None:
        try:
            await self._on_message(topic, payload)
        except Exception:
            # Typed errors are handled by the service; anything else is a bug in one message's
            # path, and it must not stop every other device's messages from being read.
            self.failures += 1
            log.exception("handling a message on %s failed", topic)

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            while self._outbox:
                item = self._outbox[0]
                # Removed only once the client accepted it, so a drop mid-publish resends it.
                await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
                self._outbox.popleft()
            self._wake.clear()
            await self._wake.wait()


class _ReadGate:
    """Reads an aiomqtt client's socket only while fewer than ``limit`` messages wait.

    It takes over aiomqtt's reader for the connection (same reads, TLS-buffered bytes
    included) and removes it at the limit; ``handled_one`` puts it back at half the limit.
    Only once ``armed``: until the link consumes messages, the replies it awaits (SUBACK,
    PUBACK) must not wait behind the messages queued for it.
    """

    def __init__(self, client: aiomqtt.Client, paho: mqtt.Client, limit: int) -> None:
        sock = paho.socket()
        if sock is None:
            raise BrokerError("the MQTT connection has no socket")
        self._loop = asyncio.get_running_loop()
        self._client, self._paho, self._limit = client, paho, max(2, limit)
        self._sock, self._fd = sock, sock.fileno()
        self.paused = False
        self.armed = False
        self._loop.remove_reader(self._fd)
        self._loop.add_reader(self._fd, self._read)

    def _read(self) -> None:
        try:
            while True:
                self._paho.loop_read()
                if self.armed and len(self._client.messages) >= self._limit:
                    self._loop.remove_reader(self._fd)
                    self.paused = True
                    return
                if not self._tls_pending():
                    return
        except Exception as exc:
            # What aiomqtt's reader does on a broken socket, by paho's means: end the
            # connection, so that the link reconnects.
            log.warning("reading from the MQTT broker failed: %r", exc)
            self._loop.remove_reader(self._fd)
            self._paho.disconnect()

    def _tls_pending(self) -> bool:
        # Bytes TLS has already decrypted raise no readiness event: read them now.
        pending = getattr(self._sock, "pending", None)
        return bool(pending is not None and pending() > 0)

    def handled_one(self) -> None:
        if self.paused and len(self._client.messages) <= self._limit // 2:
            self.paused = False
            self._loop.add_reader(self._fd, self._read)
            if self._tls_pending():
                self._read()


__all__ = ["LinkSettings", "MqttLink", "Outgoing"]
