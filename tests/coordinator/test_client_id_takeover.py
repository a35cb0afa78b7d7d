"""No device can take over another's connection or session by connecting with its client id.

A device id is its MQTT client id and is not secret. Mosquitto lets the newest connection
with an id win, and a clean start wipes that id's session, so both brokers the coordinator
runs (the managed Mosquitto, on its plain and TLS listeners, and the embedded amqtt) must
bind each client's id to its user name.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fedrt.coordinator.broker.embedded import EmbeddedAuth
from fedrt.coordinator.broker.mosquitto import BrokerConfig, MosquittoBroker, write_password_file
from fedrt.coordinator.security.credentials import hash_password
from fedrt.coordinator.security.tls import write_tls_files
from fedrt.protocol.topics import device_inbox, render_acl_file
from tests.support.brokers import running_embedded

TIMEOUT = 10.0
COORDINATOR, VICTIM, ATTACKER = "coordinator", "dev-a", "dev-b"
ATTEMPTS = 10  # takeover attempts per phase
QUEUED = 3  # messages queued for the victim while it is away
SESSION_EXPIRY_S = 600


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    passwords: dict[str, str]
    v5: bool  # Mosquitto speaks MQTT 5; amqtt only 3.1.1
    ca_cert: Path | None = None


class Peer:
    """A paho client that never reconnects by itself: a connection the broker closes stays
    closed, and is counted in ``dropped``."""

    def __init__(
        self, ep: Endpoint, client_id: str, username: str, password: str, *, persistent: bool
    ) -> None:
        self.ep, self.persistent = ep, persistent
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if ep.v5 else mqtt.MQTTv311,
            clean_session=None if ep.v5 else not persistent,
            reconnect_on_failure=False,
        )
        self.client.username_pw_set(username, password)
        if ep.ca_cert is not None:
            self.client.tls_set(ca_certs=str(ep.ca_cert))
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.dropped = 0
        self._connack: queue.Queue[int] = queue.Queue()
        self._subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self._closing = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self._connack.put(int(rc.value))
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, m: self.messages.put(bytes(m.payload))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subacks.put(rcs)

    def _on_disconnect(self, c: object, u: object, f: object, rc: object, p: object) -> None:
        if not self._closing.is_set():
            self.dropped += 1

    def connect(self) -> int:
        """CONNACK's reason code (0: accepted)."""
        if self.ep.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S if self.persistent else 0
            self.client.connect(
                self.ep.host, self.ep.port, clean_start=not self.persistent, properties=props
            )
        else:
            self.client.connect(self.ep.host, self.ep.port)
        self.client.loop_start()
        return self._connack.get(timeout=TIMEOUT)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert not any(rc.is_failure for rc in self._subacks.get(timeout=TIMEOUT))

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)

    def received(self, expected: set[bytes]) -> set[bytes]:
        """What arrived of ``expected`` (QoS 1 may repeat a message: extra reads allowed)."""
        got: set[bytes] = set()
        for _ in range(3 * len(expected)):
            if expected <= got:
                break
            try:
                got.add(self.messages.get(timeout=TIMEOUT))
            except queue.Empty:
                break
        return got & expected

    def close(self) -> None:
        self._closing.set()
        self.client.disconnect()
        self.client.loop_stop()
        # paho closes its sockets only when the client is deleted: without callbacks that
        # refer back to this object, that happens as soon as it is dropped, not in a later
        # garbage collection that may close the sockets first, and warn.
        self.client.on_connect = self.client.on_disconnect = None
        self.client.on_message = self.client.on_subscribe = None


def _attempt(ep: Endpoint, username: str, password: str) -> int:
    """One clean-start connect with the victim's client id; its CONNACK code."""
    peer = Peer(ep, VICTIM, username, password, persistent=False)
    try:
        return peer.connect()
    finally:
        peer.close()


def _attack(ep: Endpoint, between: Iterator[None] | None = None) -> None:
    """ATTEMPTS connects as the victim's id: the attacker's own (valid) credentials get in,
    as itself; the victim's user name with a wrong password is refused."""
    for i in range(ATTEMPTS):
        assert _attempt(ep, ATTACKER, ep.passwords[ATTACKER]) == 0
        if i % 3 == 0:
            assert _attempt(ep, VICTIM, "not-the-password") != 0
        if between is not None:
            next(between)


def _assert_no_takeover(ep: Endpoint) -> None:
    inbox = device_inbox(VICTIM)
    victim = Peer(ep, VICTIM, VICTIM, ep.passwords[VICTIM], persistent=True)
    coordinator = Peer(ep, COORDINATOR, COORDINATOR, ep.passwords[COORDINATOR], persistent=False)
    again: Peer | None = None
    try:
        assert victim.connect() == 0
        victim.subscribe(inbox)
        assert coordinator.connect() == 0

        # The victim stays connected and keeps getting its inbox during and after the attack.
        sent: list[bytes] = []

        def publish_one() -> Iterator[None]:
            for i in range(ATTEMPTS):
                sent.append(f"during {i}".encode())
                coordinator.publish(inbox, sent[-1])
                yield

        _attack(ep, publish_one())
        coordinator.publish(inbox, b"after")
        expected = {*sent, b"after"}
        assert victim.received(expected) == expected
        assert victim.dropped == 0
        assert victim.client.is_connected()

        # Nor can clean starts with its id wipe its session: what was queued while it was
        # away is delivered when it comes back.
        victim.close()
        queued = {f"queued {i}".encode() for i in range(QUEUED)}
        for payload in sorted(queued):
            coordinator.publish(inbox, payload)
        _attack(ep)
        again = Peer(ep, VICTIM, VICTIM, ep.passwords[VICTIM], persistent=True)
        assert again.connect() == 0
        assert again.received(queued) == queued
        assert again.dropped == 0
    finally:
        for peer in (victim, coordinator, again):
            if peer is not None:
                peer.close()


def _passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(12) for user in (COORDINATOR, VICTIM, ATTACKER)}


@pytest.fixture
def mosquitto_ep(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    """The managed Mosquitto as the coordinator runs it: passwords, fedrt's ACL, TLS."""
    passwords = _passwords()
    write_password_file(tmp_path / "passwd", {u: hash_password(p) for u, p in passwords.items()})
    (tmp_path / "acl").write_text(render_acl_file(COORDINATOR))
    tls = write_tls_files(tmp_path / "tls")
    broker = MosquittoBroker(
        BrokerConfig(
            directory=tmp_path / "mosquitto",
            allow_anonymous=False,
            password_file=tmp_path / "passwd",
            acl_file=tmp_path / "acl",
            tls=tls,
        )
    )
    broker.start()
    try:
        if request.param == "tls":
            assert broker.tls_port is not None
            yield Endpoint(broker.host, broker.tls_port, passwords, True, tls.ca_cert)
        else:
            yield Endpoint(broker.host, broker.port, passwords, True)
    finally:
        broker.stop()


@pytest.mark.parametrize("mosquitto_ep", ["plain", "tls"], indirect=True)
def test_mosquitto_binds_client_ids_to_user_names(mosquitto_ep: Endpoint) -> None:
    _assert_no_takeover(mosquitto_ep)


# amqtt leaves the server-side transports of closed sessions open when it shuts down.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_embedded_broker_binds_client_ids_to_user_names() -> None:
    passwords = _passwords()

    def verify(user: str, password: str) -> bool:
        known = passwords.get(user)
        return known is not None and secrets.compare_digest(known, password)

    auth = EmbeddedAuth(verify=verify, coordinator_username=COORDINATOR)
    with running_embedded(auth) as broker:
        _assert_no_takeover(Endpoint(broker.host, broker.port, passwords, False))
