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

from fedrt.coordinator.errors import BrokerError

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
    # Retained presence: ``online`` after each connect, ``offline`` as the will.
    status_topic: str | None = None
    keepalive_s: int = 30
    # Messages held while the broker is unreachable; beyond this, publishing fails loudly.
    max_outbox: int = 100_000


class MqttLink:
    """Keeps one aiomqtt client connected and feeds incoming messages to ``on_message``.

    The session is persistent (``clean_session=False``): QoS 1 messages devices publish while
    the coordinator is away are queued by the broker and delivered after it reconnects.
    Outgoing messages are queued in order and resent if the connection drops mid-publish.

    Incoming QoS 1 messages are acknowledged only after ``on_message`` has handled them, so
    the broker, not this process, holds whatever has not been handled yet: it sends at most
    its in-flight window (Mosquitto's ``max_inflight_messages``) of unacknowledged messages,
    which bounds this process's memory however many devices publish at once, and it sends
    again after a reconnect what was received but never handled (the round machine drops
    the duplicate by message id).
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
                    client.publish(self.settings.status_topic, b"offline", qos=1, retain=True), 2
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
            will = aiomqtt.Will(s.status_topic, b"offline", qos=1, retain=True)
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
                    self._client = client
                    for topic in s.subscriptions:
                        await client.subscribe(topic, qos=1)
                    if s.status_topic is not None:
                        await client.publish(s.status_topic, b"online", qos=1, retain=True)
                    self.connects += 1
                    self._connected.set()
                    backoff = _BACKOFF_START_S
                    log.info("MQTT connected to %s:%d", s.host, s.port)
                    sender = asyncio.create_task(self._send(client))
                    try:
                        async for message in client.messages:
                            payload = message.payload
                            if isinstance(payload, bytes | bytearray):
                                await self._deliver(str(message.topic), bytes(payload))
                            # Handled (or refused for good): the broker may forget it now.
                            paho.ack(message.mid, message.qos)
                            self.handled += 1
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


__all__ = ["LinkSettings", "MqttLink", "Outgoing"]
