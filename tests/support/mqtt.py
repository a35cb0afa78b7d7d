"""A small synchronous paho-mqtt client for tests: connect, subscribe, publish, collect."""

from __future__ import annotations

import queue
import ssl
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes


class TestClient:
    """paho client (MQTT v5 or 3.1.1) whose callbacks feed queues the test reads with timeouts."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_cert: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
        client_id: str | None = None,
        protocol: int = 5,
    ) -> None:
        # protocol 4: MQTT 3.1.1 (a NATS node), a persistent session as devices keep.
        v5 = protocol == 5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_cert is not None:
            cert, key = client_cert if client_cert else (None, None)
            self.client.tls_set(
                ca_certs=str(ca_cert),
                certfile=str(cert) if cert else None,
                keyfile=str(key) if key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.messages: queue.Queue[Received] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.pubacks: queue.Queue[tuple[int, ReasonCode]] = queue.Queue()
        self._connected = threading.Event()
        self.connect_reason: ReasonCode | None = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.host, self.port = host, port

    def _on_connect(self, c: object, u: object, f: object, rc: ReasonCode, p: object) -> None:
        self.connect_reason = rc
        self._connected.set()

    def _on_message(self, c: object, u: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload)))

    def _on_subscribe(
        self, c: object, u: object, mid: int, rcs: list[ReasonCode], p: Properties | None
    ) -> None:
        self.subacks.put(rcs)

    def _on_publish(
        self, c: object, u: object, mid: int, rc: ReasonCode, p: Properties | None
    ) -> None:
        self.pubacks.put((mid, rc))

    def connect(self) -> ReasonCode:
        """Connect and wait for CONNACK; returns its reason code (check ``is_failure``)."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(TIMEOUT):
            raise TimeoutError("no CONNACK")
        assert self.connect_reason is not None
        return self.connect_reason

    def subscribe(self, topic: str, qos: int = 1) -> list[ReasonCode]:
        self.client.subscribe(topic, qos)
        return self.subacks.get(timeout=TIMEOUT)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> ReasonCode:
        info = self.client.publish(topic, payload, qos)
        _, rc = self.pubacks.get(timeout=TIMEOUT)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        return rc

    def expect(self, timeout: float = TIMEOUT) -> Received:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho closes its wake-up sockets only when the client is deleted. Callbacks bound to
        # this object make a cycle, and a garbage collection may finalize those sockets
        # first (a ResourceWarning); without them the client goes as soon as this does.
        self.client.on_connect = self.client.on_message = None
        self.client.on_subscribe = self.client.on_publish = None
