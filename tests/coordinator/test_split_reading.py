"""Device traffic split over coordinator instances on real brokers (``broker.reading``): a
NATS queue group on a 3-node cluster and an MQTT 5 shared subscription on Mosquitto give each
device message to exactly one instance, and no device can publish on an instance's relay
topic (``protocol.relay_topics``), where a forwarded message's device id is trusted."""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fedrt.coordinator.broker.link import MQTT_V5, LinkSettings, MqttLink
from fedrt.coordinator.broker.mosquitto import BrokerConfig as MosquittoConfig
from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.broker.mosquitto_auth import MosquittoFileAuth
from fedrt.coordinator.broker.nats_queue import NatsQueueReader, QueueSettings
from fedrt.coordinator.broker.reading import QUEUE_GROUP, nats_subject, reading_plan
from fedrt.coordinator.broker.settings import BrokerConfig
from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.records import DeviceRecord
from fedrt.coordinator.security.credentials import Secret, hash_password
from fedrt.protocol.relay_topics import relay_filter, relay_topic
from fedrt.protocol.topics import UpChannel, device_up, device_up_filter
from tests.support.mqtt import TestClient
from tests.support.nats import COORDINATOR, core_connect, needs_nats, running_cluster

DEVICE = "dev-01"
N = 40
# How long a message that must not arrive is waited for after one that must.
GRACE_S = 1.0


def _payloads() -> list[bytes]:
    return [f"check-in {i}".encode() for i in range(N)]


def _publish_all(client: TestClient, device_id: str) -> None:
    for payload in _payloads():
        assert not client.publish(device_up(device_id, UpChannel.CHECKIN), payload).is_failure


async def _publish_and_wait(device: TestClient, got: dict[str, list[bytes]]) -> None:
    """The device's N check-ins, then until all arrived (10 s at most) and a grace period in
    which a duplicate would arrive."""
    await asyncio.to_thread(_publish_all, device, DEVICE)
    for _ in range(200):
        if sum(len(v) for v in got.values()) >= N:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(GRACE_S)


def test_one_instance_reads_everything_and_a_split_needs_a_shared_store() -> None:
    nats = BrokerConfig(url="mqtt://127.0.0.1:4222", password=Secret("x" * 12),
                        nats_auth_file=Path("/nonexistent/auth.conf"),
                        nats_urls=("nats://127.0.0.1:4223",))  # fmt: skip
    one = reading_plan(nats, shared_store=False, instance_id="a")
    assert (one.subscriptions, one.queue_subject, one.split) == ((device_up_filter(),), None, False)
    many = reading_plan(nats, shared_store=True, instance_id="a")
    assert many.subscriptions == ()  # all on core NATS
    assert many.relay_subject == nats_subject(relay_filter("a"))
    assert many.split
    assert many.queue_subject == "fedrt.v1.dev.*.up.*"
    api_only = reading_plan(nats, shared_store=True, instance_id="api", runs_rounds=False)
    assert api_only.subscriptions == ()
    assert api_only.queue_subject is None
    mosquitto = reading_plan(BrokerConfig(url="mqtt://127.0.0.1:1883"), shared_store=True,
                             instance_id="a")  # fmt: skip
    assert mosquitto.protocol == MQTT_V5
    assert mosquitto.subscriptions == (
        relay_filter("a"),
        f"$share/{QUEUE_GROUP}/fedrt/v1/dev/+/up/+",
    )
    with pytest.raises(ConfigError, match="nats://HOST:PORT"):
        BrokerConfig(url="mqtt://h:1", password=Secret("x" * 12),
                     nats_auth_file=Path("/a"), nats_urls=("http://h:1",))  # fmt: skip


# ---------------------------------------------------------------------------- NATS


@contextlib.asynccontextmanager
async def _readers(
    urls: list[str], password: str, got: dict[str, list[bytes]]
) -> AsyncIterator[list[NatsQueueReader]]:
    """A reader per URL, as instance ``inst-K``, each also on its own relay subject; what
    each receives is in ``got[name]`` (a relayed message as b"relayed:" + payload)."""
    readers = []
    for i, url in enumerate(urls):
        name = f"inst-{i}"
        got[name] = []

        async def on_message(topic: str, payload: bytes, name: str = name) -> None:
            if topic == relay_topic(name, DEVICE, UpChannel.CHECKIN):
                got[name].append(b"relayed:" + payload)
                return
            assert topic == device_up(DEVICE, UpChannel.CHECKIN)
            got[name].append(payload)

        reader = NatsQueueReader(
            QueueSettings(servers=[url], subject=nats_subject(device_up_filter()),
                          queue=QUEUE_GROUP, username=COORDINATOR, password=password,
                          direct=(nats_subject(relay_filter(name)),)),
            on_message,
        )  # fmt: skip
        await reader.start()
        readers.append(reader)
    try:
        yield readers
    finally:
        for reader in readers:
            await reader.stop()


@needs_nats
def test_a_nats_queue_group_gives_each_check_in_to_one_instance(tmp_path: Path) -> None:
    with running_cluster(tmp_path, devices=[DEVICE]) as secured:
        nodes = secured.cluster.nodes
        urls = [f"nats://{n.host}:{n.ports.client}" for n in nodes[:2]]
        got: dict[str, list[bytes]] = {}

        async def run() -> None:
            async with _readers(urls, secured.passwords[COORDINATOR], got) as readers:
                # A receiver forwards to inst-0 over core NATS: only inst-0 gets it.
                await readers[1].publish(relay_topic("inst-0", DEVICE, UpChannel.CHECKIN), b"x")
                host, port = secured.mqtt(2)
                device = TestClient(host, port, username=DEVICE, client_id=DEVICE,
                                    password=secured.passwords[DEVICE], protocol=4)  # fmt: skip
                assert not device.connect().is_failure
                try:
                    await _publish_and_wait(device, got)
                finally:
                    device.close()

        asyncio.run(run())
        assert got["inst-0"].count(b"relayed:x") == 1
        received = [p for payloads in got.values() for p in payloads if p != b"relayed:x"]
        assert Counter(received) == Counter(_payloads())  # each exactly once
        assert all(got.values())  # split between both (all in one: 2**-39)


@needs_nats
def test_only_the_coordinator_user_reads_on_the_core_port(tmp_path: Path) -> None:
    with running_cluster(tmp_path, devices=[DEVICE]) as secured:
        node = secured.cluster.nodes[0]
        host, port = node.host, node.ports.client
        assert "PONG" in core_connect(host, port, COORDINATOR, secured.passwords[COORDINATOR])
        assert "-ERR" in core_connect(host, port, DEVICE, secured.passwords[DEVICE])


def _forgery_is_dropped(coordinator: TestClient, observer: TestClient, device: TestClient) -> None:
    """``device`` publishes on an instance's relay topic; ``observer`` (subscribed to it)
    receives only what ``coordinator`` publishes there."""
    topic = relay_topic("inst-a", DEVICE, UpChannel.CHECKIN)
    assert not observer.subscribe(relay_filter("inst-a"))[0].is_failure
    device.publish(topic, b"forged")  # dropped by the broker (acknowledged or not)
    device.publish(relay_topic("inst-a", "dev-02", UpChannel.CHECKIN), b"forged as another")
    assert not coordinator.publish(topic, b"forwarded").is_failure
    assert observer.expect().payload == b"forwarded"
    with pytest.raises(queue.Empty):
        observer.expect(timeout=GRACE_S)


@needs_nats
def test_a_device_cannot_publish_on_a_relay_topic_of_the_nats_cluster(tmp_path: Path) -> None:
    with running_cluster(tmp_path, devices=[DEVICE]) as secured:
        host, port = secured.mqtt(0)
        password = secured.passwords[COORDINATOR]
        clients = [
            TestClient(host, port, username=COORDINATOR, password=password, protocol=4,
                       client_id=f"{COORDINATOR}-{role}")
            for role in ("pub", "sub")
        ] + [TestClient(host, port, username=DEVICE, password=secured.passwords[DEVICE],
                        client_id=DEVICE, protocol=4)]  # fmt: skip
        for client in clients:
            assert not client.connect().is_failure
        try:
            _forgery_is_dropped(*clients)
        finally:
            for client in clients:
                client.close()


# ---------------------------------------------------------------------------- Mosquitto

PASSWORD = "coordinator-password-123"
ACCOUNTS = ("fedrt-coordinator-a", "fedrt-coordinator-b")


def _mosquitto(directory: Path, device_password: str) -> MosquittoBroker:
    """A Mosquitto with fedrt's own ACL (``topics.render_acl_file``) and one device."""
    directory.mkdir()
    auth = MosquittoFileAuth(
        password_file=directory / "passwords",
        acl_file=directory / "acl",
        coordinator_username=ACCOUNTS[0],
        coordinator_password_hash=hash_password(PASSWORD),
        coordinator_accounts=ACCOUNTS,
    )
    record = DeviceRecord(device_id=DEVICE, credential_hash=hash_password(device_password),
                          public_key=bytes(32), enrolled_at=0.0)  # fmt: skip
    auth.sync([record])
    broker = MosquittoBroker(
        MosquittoConfig(directory=directory, allow_anonymous=False,
                        password_file=auth.password_file, acl_file=auth.acl_file)
    )  # fmt: skip
    broker.start()
    return broker


def test_an_mqtt5_shared_subscription_gives_each_check_in_to_one_instance(tmp_path: Path) -> None:
    broker = _mosquitto(tmp_path / "mosq", "device-password-123")
    got: dict[str, list[bytes]] = {user: [] for user in ACCOUNTS}

    async def run() -> None:
        links = []
        for user in ACCOUNTS:

            async def on_message(topic: str, payload: bytes, user: str = user) -> None:
                assert topic == device_up(DEVICE, UpChannel.CHECKIN)
                got[user].append(payload)

            plan = reading_plan(BrokerConfig(url=f"mqtt://{broker.host}:{broker.port}"),
                                shared_store=True, instance_id=user)  # fmt: skip
            link = MqttLink(
                LinkSettings(host=broker.host, port=broker.port, identifier=user, username=user,
                             password=PASSWORD, subscriptions=plan.subscriptions,
                             protocol=plan.protocol),
                on_message,
            )  # fmt: skip
            await link.start()
            links.append(link)
        device = TestClient(broker.host, broker.port, username=DEVICE, client_id=DEVICE,
                            password="device-password-123")  # fmt: skip
        assert not device.connect().is_failure
        try:
            await _publish_and_wait(device, got)
        finally:
            device.close()
            for link in links:
                await link.stop()

    try:
        asyncio.run(run())
    finally:
        broker.stop()
    received = [p for payloads in got.values() for p in payloads]
    assert Counter(received) == Counter(_payloads())
    assert all(got.values())


def test_a_device_cannot_publish_on_a_relay_topic_of_mosquitto(tmp_path: Path) -> None:
    broker = _mosquitto(tmp_path / "mosq", "device-password-123")
    clients = [
        TestClient(broker.host, broker.port, username=user, password=PASSWORD, client_id=user)
        for user in ACCOUNTS
    ] + [TestClient(broker.host, broker.port, username=DEVICE, client_id=DEVICE,
                    password="device-password-123")]  # fmt: skip
    try:
        for client in clients:
            assert not client.connect().is_failure
        _forgery_is_dropped(*clients)
    finally:
        for client in clients:
            client.close()
        broker.stop()
