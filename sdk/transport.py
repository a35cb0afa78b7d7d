"""Bytes on MQTT topics: the paho-mqtt (MQTT v5) `Transport` (its interface: `transport_base`).

The transport knows nothing of rounds: it publishes payloads (QoS 1, optionally tagged with
a message id carried as an MQTT v5 user property), delivers messages to per-filter handlers,
and keeps reconnecting. Storing updates until the coordinator acknowledges them is the
outbox's job (`fedrt.sdk.outbox`), built on top of this interface.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fedrt.sdk.errors import BrokerRefused, NotConnected, TransportError
from fedrt.sdk.network_loop import NetworkLoop
from fedrt.sdk.transport_base import (
    DEFAULT_SESSION_EXPIRY_S,
    MSG_ID_PROPERTY,
    ConnectListener,
    Handler,
    Message,
    MqttConfig,
    ReconnectBackoff,
    Transport,
    check_qos,
    check_topic,
)

# The interface's names are re-exported: their import path predates `transport_base`.
__all__ = [
    "DEFAULT_SESSION_EXPIRY_S",
    "MSG_ID_PROPERTY",
    "ConnectListener",
    "Handler",
    "Message",
    "MqttConfig",
    "PahoTransport",
    "ReconnectBackoff",
    "Transport",
    "check_qos",
    "check_topic",
]

log = logging.getLogger("fedrt.sdk.transport")


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
        self._addresses = [(config.host, config.port), *config.fallbacks]
        self._address = 0
        # filter -> (handler, qos, subscription identifier)
        self._handlers: dict[str, tuple[Handler, int, int]] = {}
        self._next_sub_id = 1
        # SUBSCRIBE packet id -> its filter, until the SUBACK.
        self._subscribing: dict[int, str] = {}
        # Refused SUBACKs (_on_subscribe): in all, and in a row per filter.
        self.subscription_refusals = 0
        self._refused: dict[str, int] = {}
        self._started = False
        self.last_error: str | None = None
        # The last CONNACK refusal (typed), until a connection succeeds again.
        self.refusal: BrokerRefused | None = None
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
        client.on_subscribe = self._on_subscribe
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

    def _next_address(self) -> None:
        """Aim the next try at the next listener of the cluster (the session is cluster-wide)."""
        if len(self._addresses) < 2:
            return
        self._address = (self._address + 1) % len(self._addresses)
        # paho's host/port setters refuse while the lost connection is not yet reset; the
        # next reconnect() reads these two fields, which is all that changes between tries.
        self._client._host, self._client._port = self._addresses[self._address]

    @property
    def address(self) -> tuple[str, int]:
        """The listener the transport is connected to or trying next."""
        return self._addresses[self._address]

    def _schedule_next_wait(self) -> None:
        # Every wait paho makes is preceded by on_disconnect or on_connect_fail, which call this.
        self._next_address()
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
            self.last_error = "{}:{} refused the connection: {}".format(*self.address, rc)
            self.refusal = BrokerRefused(self.last_error)
            log.warning("mqtt %s: %s", self.config.client_id, self.last_error)
            return
        self._attempt = 0
        self.last_error = None
        self.refusal = None
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
        self.last_error = "cannot reach {}:{}".format(*self.address)
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
        self.last_error = "cannot reach {}:{}: {}".format(*self.address, exc)
        self._schedule_next_wait()

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
            _, mid = self._client.subscribe(topic_filter, qos)
        else:
            props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
            props.SubscriptionIdentifier = sub_id
            _, mid = self._client.subscribe(topic_filter, qos, properties=props)
        if mid is not None:
            with self._lock:
                self._subscribing[mid] = topic_filter

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        with self._lock:
            topic_filter = self._subscribing.pop(mid, None)
            if topic_filter is None:
                return
            if not any(c.is_failure for c in codes):
                self._refused.pop(topic_filter, None)
                return
            tries = self._refused.get(topic_filter, 0)
            self._refused[topic_filter] = tries + 1
        # Connected but deaf: a NATS node whose JetStream timed out creating the consumer
        # behind a QoS 1 subscription answers 0x80, and the device would wait for its plans
        # for good (issue 17). Ask again after the reconnect back-off. Not by reconnecting:
        # a reconnect also reloads the session and every consumer, which is what an
        # overloaded cluster has too much of (measured: a storm of them).
        delay = self._backoff.delay(tries)
        self.subscription_refusals += 1
        self.last_error = f"the broker refused the subscription {topic_filter}"
        log.warning("mqtt %s: %s (%s); asking again in %.1f s", self.config.client_id,
                    self.last_error, codes[0], delay)  # fmt: skip
        timer = threading.Timer(delay, self._subscribe_again, args=(topic_filter,))
        timer.daemon = True
        timer.start()

    def _subscribe_again(self, topic_filter: str) -> None:
        with self._lock:
            known = self._handlers.get(topic_filter)
            running = self._started
        # Not connected: the next connect subscribes to every filter anyway.
        if known is not None and running and self.connected:
            self._send_subscribe(topic_filter, known[1], known[2])

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            known = self._handlers.pop(topic_filter, None)
        if known is not None and self.connected:
            self._client.unsubscribe(topic_filter)
