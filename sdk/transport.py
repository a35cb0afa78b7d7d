"""Bytes on MQTT topics: the `Transport` interface and its paho-mqtt (MQTT v5) implementation.

The transport knows nothing of rounds: it publishes payloads (QoS 1, optionally tagged with
a message id carried as an MQTT v5 user property), delivers messages to per-filter handlers,
and keeps reconnecting. Storing updates until the coordinator acknowledges them is the
outbox's job (`fedrt.sdk.outbox`), built on top of this interface.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import socket
import ssl
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fedrt.sdk.errors import NotConnected, SdkConfigError, TransportError
from fedrt.sdk.network_loop import NetworkLoop

__all__ = [
    "MSG_ID_PROPERTY",
    "Handler",
    "Message",
    "MqttConfig",
    "PahoTransport",
    "ReconnectBackoff",
    "Transport",
]

log = logging.getLogger("fedrt.sdk.transport")

# The user property naming a message for application-level acks and receiver-side dedupe.
MSG_ID_PROPERTY = "fedrt-msg-id"


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    topic: str
    payload: bytes
    msg_id: str | None = None
    retained: bool = False


Handler = Callable[[Message], None]
ConnectListener = Callable[[bool], None]  # called with session_present on every connect


class Transport(ABC):
    """A publish/subscribe link that reconnects by itself.

    Handlers run on the transport's network thread: they must return quickly (hand work to
    another thread) and may publish. A handler that raises is logged and skipped.
    """

    @abstractmethod
    def start(self) -> None:
        """Begin connecting in the background (returns at once)."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect cleanly and stop reconnecting. The broker keeps the session."""

    def __init__(self) -> None:
        # Link state every implementation keeps the same way: set by its network thread.
        self._lock = threading.Lock()
        self._listeners: list[ConnectListener] = []
        self._connected = threading.Event()
        self._connects = 0
        self._network_up = True

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connection_count(self) -> int:
        """Successful connects so far; it grows before ``connected`` turns true."""
        return self._connects

    def wait_connected(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for a connection; True once connected."""
        return self._connected.wait(timeout)

    @abstractmethod
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        """Hand a message to the link; raises `NotConnected` while the link is down."""

    @abstractmethod
    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> None:
        """Deliver matching messages to ``handler``; kept across reconnects."""

    @abstractmethod
    def unsubscribe(self, topic_filter: str) -> None: ...

    def network_changed(self, available: bool) -> None:
        """The device's network went away (False) or came back (True), as the OS reports it
        (Android: a ConnectivityManager callback). Gone: the link is cut now and no
        connection is tried until it is back. Back: reconnect now, not when the back-off ends.
        """
        with self._lock:
            if self._network_up == available:
                return
            self._network_up = available
        if available:
            self._network_back()
        else:
            self._connected.clear()
            self._network_lost()

    @property
    def network_up(self) -> bool:
        return self._network_up

    @abstractmethod
    def _network_lost(self) -> None:
        """Cut the link abruptly, as a lost network does (no DISCONNECT)."""

    @abstractmethod
    def _network_back(self) -> None:
        """Connect again without waiting for the back-off."""

    def add_connect_listener(self, listener: ConnectListener) -> None:
        """Call ``listener(session_present)`` after every successful (re)connect."""
        with self._lock:
            self._listeners.append(listener)


def check_topic(topic: str, *, wildcards: bool) -> None:
    if not topic or len(topic.encode()) > 65535 or "\x00" in topic:
        raise TransportError(f"invalid topic {topic!r}")
    if not wildcards and ("+" in topic or "#" in topic):
        raise TransportError(f"cannot publish to a wildcard topic {topic!r}")
    if wildcards and "#" in topic and not (topic == "#" or topic.endswith("/#")):
        raise TransportError(f"'#' must be the last level of {topic!r}")


def check_qos(qos: int) -> None:
    if qos not in (0, 1):
        raise TransportError(f"qos must be 0 or 1 (QoS 2 is not used), got {qos}")


class ReconnectBackoff:
    """Exponential backoff with "equal jitter": attempt n waits in [d/2, d], d = min(cap, b·2^n).

    Jitter spreads a fleet's reconnects after a broker restart; the random source is injected
    so a schedule is reproducible in tests.
    """

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not (0 < initial_s <= max_s and math.isfinite(max_s)):
            raise SdkConfigError(f"need 0 < initial ({initial_s}) <= max ({max_s})")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (timing jitter)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * 2.0 ** min(attempt, 62))
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)


# A week covers a phone left off its charger over a long weekend; the broker then drops the
# session (and the messages queued for it).
DEFAULT_SESSION_EXPIRY_S = 7 * 86400


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConfig:
    """Where and how to connect; ``ca_file`` turns TLS on (the coordinator's CA)."""

    host: str
    client_id: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = field(default=None, repr=False)
    keepalive_s: int = 30
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 120.0
    connect_timeout_s: float = 10.0
    will_topic: str | None = None
    will_payload: bytes = b"offline"
    # 5: MQTT v5 (session expiry, message ids as user properties). 4: MQTT 3.1.1 for brokers
    # without v5, such as the coordinator's embedded amqtt; the session then never expires
    # and message ids travel only inside payloads.
    protocol: int = 5

    def __post_init__(self) -> None:
        if not self.host:
            raise SdkConfigError("host must not be empty")
        if not self.client_id or len(self.client_id.encode()) > 65535:
            raise SdkConfigError("client_id must be a non-empty string")
        if not 0 < self.port < 65536:
            raise SdkConfigError(f"port out of range: {self.port}")
        if self.password is not None and self.username is None:
            raise SdkConfigError("a password needs a username")
        if (self.client_cert is None) != (self.client_key is None):
            raise SdkConfigError("client_cert and client_key go together")
        if self.protocol not in (4, 5):
            raise SdkConfigError(f"protocol must be 5 (MQTT v5) or 4 (3.1.1), got {self.protocol}")
        if self.keepalive_s < 5 or self.session_expiry_s < 0 or self.connect_timeout_s <= 0:
            raise SdkConfigError("keepalive_s >= 5, session_expiry_s >= 0, connect_timeout_s > 0")
        for path in (self.ca_file, self.client_cert, self.client_key):
            if path is not None and not Path(path).is_file():
                raise SdkConfigError(f"TLS file {path} does not exist")
        ReconnectBackoff(self.backoff_initial_s, self.backoff_max_s)


class PahoTransport(Transport):
    """paho-mqtt 2.x, MQTT v5: persistent session (clean start off), QoS 1, TLS, backoff.

    paho's own network thread runs the link (``loop_start``), or, given a shared
    `NetworkLoop`, that loop's thread runs it beside many others; before each reconnect
    attempt the wait is set to the next jittered delay of our `ReconnectBackoff`.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        rng: random.Random | None = None,
        loop: NetworkLoop | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self._loop = loop
        self._backoff = ReconnectBackoff(config.backoff_initial_s, config.backoff_max_s, rng)
        self._attempt = 0
        # filter -> (handler, qos, subscription identifier)
        self._handlers: dict[str, tuple[Handler, int, int]] = {}
        self._next_sub_id = 1
        self._started = False
        self.last_error: str | None = None
        self._v5 = config.protocol == 5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else False,
            reconnect_on_failure=True,
        )
        client.connect_timeout = config.connect_timeout_s
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.ca_file is not None:
            try:
                client.tls_set(
                    ca_certs=str(config.ca_file),
                    certfile=str(config.client_cert) if config.client_cert else None,
                    keyfile=str(config.client_key) if config.client_key else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise TransportError(f"cannot load TLS files: {exc}") from exc
        if config.will_topic is not None:
            check_topic(config.will_topic, wildcards=False)
            client.will_set(config.will_topic, config.will_payload, qos=1, retain=False)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_pre_connect = self._on_pre_connect
        client.on_message = self._on_message
        self._client = client

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise TransportError("transport already started")
            self._started = True
        try:
            if self._v5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = self.config.session_expiry_s
                self._client.connect_async(
                    self.config.host,
                    self.config.port,
                    keepalive=self.config.keepalive_s,
                    clean_start=False,
                    properties=props,
                )
            else:
                self._client.connect_async(
                    self.config.host, self.config.port, keepalive=self.config.keepalive_s
                )
        except ValueError as exc:
            raise TransportError(f"cannot connect to {self.config.host}: {exc}") from exc
        if self._loop is not None:
            self._loop.attach(self._client, self._on_connect_error)
        else:
            self._client.loop_start()

    def close(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
        if self._loop is not None:
            self._loop.detach(self._client)
        else:
            self._client.disconnect()
            self._client.loop_stop()
        self._connected.clear()

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _schedule_next_wait(self) -> None:
        # Every wait paho makes is preceded by on_disconnect or on_connect_fail, which call this.
        if self._network_up:
            delay = self._backoff.delay(self._attempt)
            self._attempt += 1
        else:
            # No network: each try fails at once without I/O (_on_pre_connect); looking once
            # a second bounds how late paho's own thread notices that the network is back.
            delay = 1.0
        if self._loop is not None:
            self._loop.reconnect_later(self._client, delay)
        else:
            self._client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            self.last_error = f"broker refused the connection: {rc}"
            log.warning("mqtt %s: %s", self.config.client_id, self.last_error)
            return
        self._attempt = 0
        self.last_error = None
        with self._lock:
            subs = [(f, qos, sid) for f, (_, qos, sid) in self._handlers.items()]
            listeners = list(self._listeners)
        # Re-subscribe every time: a broker that lost its state (no persistence) forgot them.
        for topic_filter, qos, sid in subs:
            self._send_subscribe(topic_filter, qos, sid)
        self._connects += 1
        self._connected.set()
        session_present = bool(getattr(flags, "session_present", False))
        for listener in listeners:
            try:
                listener(session_present)
            except Exception:
                log.exception("connect listener failed")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        self._connected.clear()
        if rc.is_failure:
            self.last_error = f"connection lost: {rc}"
        self._schedule_next_wait()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.last_error = f"cannot reach {self.config.host}:{self.config.port}"
        self._schedule_next_wait()

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._network_up:
            raise ConnectionAbortedError("no network")

    def _network_lost(self) -> None:
        sock = self._client.socket()
        # What a dead network does to the socket: paho sees the link drop and backs off.
        if isinstance(sock, socket.socket):  # ssl.SSLSocket included
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _network_back(self) -> None:
        self._attempt = 0
        if self._loop is not None:
            self._loop.reconnect_later(self._client, 0.0)

    def _on_connect_error(self, exc: Exception) -> None:
        # The shared loop's counterpart of paho's on_connect_fail, with the cause.
        self._schedule_next_wait()
        self.last_error = f"cannot reach {self.config.host}:{self.config.port}: {exc}"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        msg_id = None
        props = getattr(msg, "properties", None)
        for key, value in getattr(props, "UserProperty", None) or []:
            if key == MSG_ID_PROPERTY:
                msg_id = value
        # With overlapping filters MQTT v5 sends one copy per matching subscription, each
        # naming its subscription: hand each copy only to that subscription's handler.
        sub_ids = set(getattr(props, "SubscriptionIdentifier", None) or [])
        message = Message(
            topic=msg.topic, payload=bytes(msg.payload), msg_id=msg_id, retained=bool(msg.retain)
        )
        with self._lock:
            handlers = [
                h
                for f, (h, _, sid) in self._handlers.items()
                if (sid in sub_ids if sub_ids else mqtt.topic_matches_sub(f, msg.topic))
            ]
        for handler in handlers:
            try:
                handler(message)
            except Exception:
                log.exception("handler for %s failed", msg.topic)

    # -- publish / subscribe -----------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        check_topic(topic, wildcards=False)
        check_qos(qos)
        if not self.connected:
            raise NotConnected(f"not connected to {self.config.host}:{self.config.port}")
        props = None
        if msg_id is not None and self._v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = (MSG_ID_PROPERTY, msg_id)
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            # paho keeps a QoS 1 message it could not send and sends it after reconnecting;
            # the caller's outbox resends too and the receiver drops the duplicate by id.
            raise NotConnected("connection dropped while publishing")
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransportError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> None:
        check_topic(topic_filter, wildcards=True)
        check_qos(qos)
        with self._lock:
            known = self._handlers.get(topic_filter)
            if known is not None:
                sid = known[2]
            else:
                sid, self._next_sub_id = self._next_sub_id, self._next_sub_id + 1
            self._handlers[topic_filter] = (handler, qos, sid)
        if self.connected:
            self._send_subscribe(topic_filter, qos, sid)

    def _send_subscribe(self, topic_filter: str, qos: int, sub_id: int) -> None:
        if not self._v5:
            self._client.subscribe(topic_filter, qos)
            return
        props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        props.SubscriptionIdentifier = sub_id
        self._client.subscribe(topic_filter, qos, properties=props)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            known = self._handlers.pop(topic_filter, None)
        if known is not None and self.connected:
            self._client.unsubscribe(topic_filter)
