"""The coordinator's MQTT connection: persistent session, reconnects, a two-lane outbox."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fedrt.coordinator.broker.followed import FollowedFile
from fedrt.coordinator.broker.paho_asyncio import PahoConnection
from fedrt.coordinator.errors import BrokerError, BrokerRefused, ConfigError
from fedrt.protocol.round_codec import MAGIC, TAGS
from fedrt.protocol.round_messages import ReconnectWindow
from fedrt.protocol.topics import coordinator_presence

log = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes], Awaitable[None]]
# Reconnect quickly after a blip, but never hammer a broker that is down.
_BACKOFF_START_S = 0.25
_BACKOFF_MAX_S = 10.0
# Connecting (TCP, TLS, CONNACK), SUBACK and the presence PUBACK each get this long.
_ANSWER_TIMEOUT_S = 10.0
# A stopping link waits this long for its presence PUBACK, then for its DISCONNECT to go out.
_STOP_TIMEOUT_S = 2.0
# MQTT 5's "never expires", what a 3.1.1 persistent session is: QoS 1 messages devices send
# while the coordinator is down wait for it however long that is.
_SESSION_NEVER_EXPIRES = 0xFFFFFFFF
MQTT_V311, MQTT_V5 = 4, 5
# The largest payload paho publishes (MQTT's remaining-length limit); a refusal in the sender
# would stall the outbox, so enqueue refuses more.
_MAX_PAYLOAD = 268_435_455
_WINDOW_TAG = TAGS[ReconnectWindow]


class Lane(enum.Enum):
    """Which queue of the outbox a message waits in; ROUND leaves first."""

    ROUND = "round"  # plans, stage requests, acks, announcements, presence
    PACE = "pace"  # reconnect windows: "come back later" to devices not needed now


def lane_of(payload: bytes) -> Lane:
    """PACE for a reconnect window, ROUND for everything else. Read from the round codec's
    tag byte: decoding every outgoing message to classify it would cost a plan's size."""
    if len(payload) >= 3 and payload[0] == MAGIC and payload[2] == _WINDOW_TAG:
        return Lane.PACE
    return Lane.ROUND


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    lane: Lane = Lane.ROUND


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
    # MQTT 3.1.1 (4), which every broker fedrt runs speaks (amqtt only that), or MQTT 5 (5).
    protocol: int = MQTT_V311
    # More listeners of the same cluster: after a lost connection the link tries the next.
    fallbacks: Sequence[tuple[str, int]] = ()
    # The highest QoS the broker takes (NATS: 1; a QoS 2 publish closes the connection).
    max_qos: int = 2
    # Where the filters ``follow`` adds are kept across a crash (broker/followed.py); None:
    # nowhere, and a crash leaves them subscribed in the persistent session.
    followed_file: Path | None = None

    def __post_init__(self) -> None:
        if self.protocol not in (MQTT_V311, MQTT_V5):
            raise ConfigError(f"MQTT protocol must be 4 (3.1.1) or 5, not {self.protocol!r}")
        if not 0 <= self.keepalive_s <= 65535:
            raise ConfigError(f"keepalive_s must be 0..65535, not {self.keepalive_s}")
        if self.max_outbox < 1 or self.max_pending < 1:
            raise ConfigError("max_outbox and max_pending must be at least 1")
        if self.max_qos not in (1, 2):
            raise ConfigError(f"max_qos must be 1 or 2, not {self.max_qos!r}")

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), *self.fallbacks]


class MqttLink:
    """Keeps one paho client connected and feeds incoming messages to ``on_message``.

    The session is persistent (3.1.1: ``clean_session=False``; 5: no clean start and a
    session that never expires): QoS 1 messages devices publish while the coordinator is
    away are queued by the broker and delivered after it reconnects. Outgoing messages
    leave the outbox only once the broker acknowledged them (QoS 0: once written), so a
    connection dropped mid-publish sends them again on the next one.

    The outbox has two lanes (``Lane``), each first-in-first-out, ``max_outbox`` messages
    in both together. A free in-flight slot always takes the ROUND lane's head first; the
    PACE lane (reconnect windows) goes only when no round traffic waits. At 10,000 devices
    thousands of "come back later" replies queued in front of a round's plans and stage
    requests, which then reached their devices after the round's deadline (issue 17). A
    device's round messages all travel in the ROUND lane, so they keep their order; a
    window overtaken by round traffic only makes its device come back a little later.

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
        self._lanes: dict[Lane, deque[Outgoing]] = {lane: deque() for lane in Lane}
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: PahoConnection | None = None
        # Messages sent on the current connection and not yet confirmed, in sending order.
        self._sent: deque[tuple[Outgoing, asyncio.Future[ReasonCode]]] = deque()
        self._backoff = _BACKOFF_START_S
        # Which of ``settings.addresses`` the link uses now, and why the last try failed.
        self._address = 0
        self.last_error: BrokerError | None = None
        self.connects = 0
        self.failures = 0
        self.handled = 0
        # Filters read besides ``settings.subscriptions`` (``follow``), in insertion order.
        self._following: dict[str, None] = {}
        self._followed = FollowedFile(settings.followed_file) if settings.followed_file else None
        # What an earlier process followed: unsubscribed at the first connect unless followed.
        self._stale = self._followed.load() if self._followed is not None else []

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Messages received from the broker and waiting to be handled."""
        conn = self._conn
        return len(conn.inbox) if conn is not None else 0

    @property
    def outbox_size(self) -> int:
        """Messages queued or in flight, both lanes."""
        return sum(len(q) for q in self._lanes.values()) + len(self._sent)

    def queued(self, lane: Lane) -> int:
        """Messages waiting in ``lane`` (not yet handed to the connection)."""
        return len(self._lanes[lane])

    def enqueue(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        lane: Lane | None = None,
    ) -> None:
        """Queue a message; ``lane`` None: ``lane_of(payload)``."""
        if not topic or "+" in topic or "#" in topic or len(topic.encode()) > 65535:
            raise BrokerError(f"cannot publish on {topic!r}: not an MQTT topic name")
        if qos not in (0, 1, 2):
            raise BrokerError(f"QoS must be 0, 1 or 2, not {qos!r}")
        if qos > self.settings.max_qos:
            raise BrokerError(
                f"QoS {qos} on {topic}: this broker takes QoS {self.settings.max_qos} at most"
                " (NATS closes the connection on a QoS 2 publish)"
            )
        if len(payload) > _MAX_PAYLOAD:
            raise BrokerError(f"a {len(payload)}-byte payload is over MQTT's {_MAX_PAYLOAD}")
        if self.outbox_size >= self.settings.max_outbox:
            raise BrokerError(f"MQTT outbox full ({self.settings.max_outbox} messages)")
        chosen = lane_of(payload) if lane is None else lane
        item = Outgoing(topic=topic, payload=payload, qos=qos, retain=retain, lane=chosen)
        self._lanes[chosen].append(item)
        self._wake.set()

    def follow(self, filters: Sequence[str], on: bool = True) -> None:
        """Read (``on``) or stop reading more topic filters, now and after every reconnect
        (the cohort topics of the rounds this instance runs). Called on the link's loop,
        the SUBSCRIBE goes out before anything enqueued after it."""
        for topic_filter in filters:
            if on:
                self._following[topic_filter] = None
            else:
                self._following.pop(topic_filter, None)
        if self._followed is not None and filters:
            self._followed.save(self._following)
        conn = self._conn
        if conn is None or not filters:
            return  # the next connect subscribes to what is followed then
        # Before the CONNACK paho refuses (NO_CONN): the connect's subscription has it.
        if on:
            conn.client.subscribe([(f, 1) for f in filters])
        else:
            conn.client.unsubscribe(list(filters))

    def following(self) -> list[str]:
        return list(self._following)

    def set_incarnation(self, incarnation: str) -> None:
        """Announce a new presence value now and at every later connect (the coordinator
        lost rounds: devices in them check in again)."""
        if incarnation == self.settings.incarnation:
            return
        self.settings = dataclasses.replace(self.settings, incarnation=incarnation)
        if self.settings.status_topic is not None:
            presence = coordinator_presence(incarnation)
            self.enqueue(self.settings.status_topic, presence, 1, True)

    async def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (True) or ``timeout`` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.outbox_size and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self.outbox_size

    async def start(self, timeout: float = 10.0) -> None:
        if self._task is not None:
            raise BrokerError("MQTT link already started")
        self._task = asyncio.create_task(self._run(), name="fedrt-mqtt-link")
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            await self.stop()
            where = ", ".join(f"{h}:{p}" for h, p in self.settings.addresses)
            why = self.last_error
            if isinstance(why, BrokerRefused):
                raise BrokerRefused(f"MQTT broker refused the coordinator: {why}") from None
            raise BrokerError(f"cannot connect to MQTT broker {where}: {why}") from None

    async def stop(self, *, offline: bool = True) -> None:
        conn, s = self._conn, self.settings
        if offline and conn is not None and self.connected and s.status_topic is not None:
            conn.disarm()  # the PUBACK must not wait behind unhandled messages
            presence = coordinator_presence(None, online=False)
            with contextlib.suppress(BrokerError):
                published = conn.publish(s.status_topic, presence, 1, True)
                await conn.answer(published, _STOP_TIMEOUT_S, "PUBACK")
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()

    async def _run(self) -> None:
        s = self.settings
        while True:
            conn = PahoConnection(self._client(), max_pending=s.max_pending)
            self._conn = conn
            host, port = s.addresses[self._address]
            try:
                await self._session(conn, host, port)
            except BrokerError as exc:
                self.last_error = exc
                log.warning("MQTT connection to %s:%d lost: %s", host, port, exc)
                # Another node of the cluster holds the same session (NATS: in JetStream).
                self._address = (self._address + 1) % len(s.addresses)
            finally:
                self._connected.clear()
                self._conn = None
                await conn.close(_STOP_TIMEOUT_S)
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)

    def _client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == MQTT_V5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.identifier,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,  # MQTT 5 says it at connect (clean_start)
            # The link reconnects with its own back-off; paho's retry would block the loop.
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            client.tls_set_context(s.tls)
        if s.status_topic is not None:
            offline = coordinator_presence(None, online=False)
            client.will_set(s.status_topic, offline, qos=1, retain=True)
        return client

    def _connect_options(self) -> dict[str, Any]:
        s = self.settings
        if s.protocol != MQTT_V5:
            return {"keepalive": s.keepalive_s}
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = _SESSION_NEVER_EXPIRES
        return {"keepalive": s.keepalive_s, "clean_start": False, "properties": props}

    async def _session(self, conn: PahoConnection, host: str, port: int) -> None:
        """One connection, from connect until it is lost (a BrokerError says why)."""
        s = self.settings
        await conn.open(host, port, _ANSWER_TIMEOUT_S, **self._connect_options())
        wanted = [*s.subscriptions, *self._following]
        granted = await conn.subscribe(wanted, 1, _ANSWER_TIMEOUT_S)
        for topic_filter, reason in zip(wanted, granted, strict=False):
            if reason.is_failure:
                raise BrokerError(f"the broker refused the subscription {topic_filter}: {reason}")
        late = [f for f in self._following if f not in wanted]  # followed while subscribing
        if late:
            conn.client.subscribe([(f, 1) for f in late])
        stale = [f for f in self._stale if f not in self._following and f not in wanted]
        if stale:
            conn.client.unsubscribe(stale)
            log.info("MQTT: unsubscribed %d filter(s) an earlier process followed", len(stale))
        self._stale = []
        if s.status_topic is not None:
            online = conn.publish(s.status_topic, coordinator_presence(s.incarnation), 1, True)
            await conn.answer(online, _ANSWER_TIMEOUT_S, "presence PUBACK")
        self.connects += 1
        self._connected.set()
        self._backoff = _BACKOFF_START_S
        self.last_error = None
        log.info("MQTT connected to %s:%d", host, port)
        sender = asyncio.create_task(self._send(conn), name="fedrt-mqtt-send")
        conn.armed = True
        try:
            await self._receive(conn)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        raise BrokerError(conn.why)

    async def _receive(self, conn: PahoConnection) -> None:
        """Hand each message to ``on_message``, then acknowledge it; returns once lost."""
        while not conn.lost.is_set():
            if not conn.inbox:
                conn.arrived.clear()
                await conn.arrived.wait()
                continue
            message = conn.inbox.popleft()
            await self._deliver(message.topic, message.payload)
            # Handled (or refused for good): the broker may forget it now.
            conn.ack(message)
            self.handled += 1
            conn.handled()

    async def _deliver(self, topic: str, payload: bytes) -> None:
        try:
            await self._on_message(topic, payload)
        except Exception:
            # Typed errors are handled by the service; anything else is a bug in one message's
            # path, and it must not stop every other device's messages from being read.
            self.failures += 1
            log.exception("handling a message on %s failed", topic)

    async def _send(self, conn: PahoConnection) -> None:
        """Publish the outbox, ROUND lane first, ``conn.window`` messages in flight at most."""
        # What the last connection sent and never had confirmed goes again first, in the
        # order it went then, each back at the head of its own lane.
        for item, _ in reversed(self._sent):
            self._lanes[item.lane].appendleft(item)
        sent: deque[tuple[Outgoing, asyncio.Future[ReasonCode]]] = deque()
        self._sent = sent
        first, then = self._lanes[Lane.ROUND], self._lanes[Lane.PACE]
        while True:
            while len(sent) < conn.window and (first or then):
                item = first.popleft() if first else then.popleft()
                future = conn.publish(item.topic, item.payload, item.qos, item.retain)
                sent.append((item, future))
                future.add_done_callback(functools.partial(self._confirmed, sent))
            self._wake.clear()
            await self._wake.wait()

    def _confirmed(
        self,
        sent: deque[tuple[Outgoing, asyncio.Future[ReasonCode]]],
        _: asyncio.Future[ReasonCode],
    ) -> None:
        # QoS 0 messages complete when written, possibly before an earlier QoS 1 PUBACK:
        # a message leaves the outbox only once every message sent before it is done.
        if sent is not self._sent:
            return  # a connection since replaced: its unconfirmed messages were resent
        while sent and sent[0][1].done():
            item, future = sent.popleft()
            reason = future.result()
            if reason.is_failure:
                log.warning("the broker refused a message on %s: %s", item.topic, reason)
        self._wake.set()


__all__ = ["MQTT_V5", "MQTT_V311", "Lane", "LinkSettings", "MqttLink", "Outgoing", "lane_of"]
