"""The service edge: device messages through a secured Mosquitto to the driver hook and back."""

from __future__ import annotations

import base64
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.coordinator.broker.mosquitto import BrokerConfig as MosquittoConfig
from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.broker.mosquitto_auth import MosquittoFileAuth
from fedrt.coordinator.config import BrokerConfig, LimitsConfig, Secret
from fedrt.coordinator.devices.enrollment import enrollment_proof_payload
from fedrt.coordinator.driver import DriverContext, RoundDriver
from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.records import TaskRecord
from fedrt.coordinator.security.credentials import hash_password
from fedrt.protocol.topics import (
    UpChannel,
    UpTopic,
    coordinator_status,
    device_inbox,
    device_up,
    parse_coordinator_presence,
)
from tests.coordinator.harness import ServiceThread, make_config, mqtt_connect_code
from tests.support.brokers import SecureBroker
from tests.support.mqtt import TestClient

COORD_USER, COORD_PASSWORD = "fedrt-coordinator", "coordinator-secret-0123"


@dataclass
class RecordingDriver(RoundDriver):
    """Echoes each check-in to the device's inbox; refuses payloads starting with b'bad'."""

    ctx: DriverContext
    messages: list[tuple[str, UpChannel, bytes]] = field(default_factory=list)
    ticks: int = 0
    tasks: list[TaskRecord] = field(default_factory=list)
    shutdowns: int = 0

    def on_device_message(self, up: UpTopic, payload: bytes, now: float) -> None:
        if payload.startswith(b"bad"):
            raise BadRequestError("malformed round message")
        self.messages.append((up.device_id, up.channel, payload))
        if up.channel is UpChannel.CHECKIN:
            self.ctx.publish(device_inbox(up.device_id), b"plan for " + payload, 1, False)

    def on_tick(self, now: float) -> None:
        self.ticks += 1

    def on_task_change(self, task: TaskRecord) -> None:
        self.tasks.append(task)

    def on_shutdown(self, now: float) -> None:
        self.shutdowns += 1


@pytest.fixture
def secured_service(tmp_path: Path) -> Iterator[tuple[ServiceThread, MosquittoBroker]]:
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    auth = MosquittoFileAuth(
        password_file=directory / "passwords",
        acl_file=directory / "acl",
        coordinator_username=COORD_USER,
        coordinator_password_hash=hash_password(COORD_PASSWORD),
    )
    auth.sync([])  # Mosquitto refuses to start without its files
    broker = MosquittoBroker(
        MosquittoConfig(
            directory=directory,
            allow_anonymous=False,
            password_file=auth.password_file,
            acl_file=auth.acl_file,
        )
    )
    broker.start()
    (directory / "mosquitto.pid").write_text(f"{broker.pid}\n")
    config = make_config(
        tmp_path / "data",
        broker=BrokerConfig(
            url=broker.url,
            username=COORD_USER,
            password=Secret(COORD_PASSWORD),
            password_file=auth.password_file,
            acl_file=auth.acl_file,
            pid_file=directory / "mosquitto.pid",
        ),
        limits=LimitsConfig(device_rate_per_s=0.01, device_burst=6, max_message_bytes=2048),
    )
    try:
        with ServiceThread(config, driver_factory=RecordingDriver) as svc:
            yield svc, broker
    finally:
        broker.stop()


def _enroll(svc: ServiceThread) -> tuple[str, str]:
    token = svc.request("POST", "/v1/enrollment-tokens", body={}).json()["token"]
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body = {
        "token": token,
        "public_key": base64.b64encode(raw).decode(),
        "proof": base64.b64encode(key.sign(enrollment_proof_payload(token))).decode(),
    }
    grant = svc.request("POST", "/v1/enroll", token=None, body=body).json()
    return grant["mqtt_username"], grant["mqtt_password"]


def _until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def _outcomes(svc: ServiceThread) -> dict[str, float]:
    text = svc.request("GET", "/metrics", token=None).body.decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fedrt_mqtt_messages_total{"):
            labels, value = line.split("} ")
            outcome = labels.split('outcome="')[1].rstrip('"')
            out[outcome] = out.get(outcome, 0) + float(value)
    return out


def test_device_round_trip_through_secured_mosquitto(
    secured_service: tuple[ServiceThread, MosquittoBroker],
) -> None:
    svc, broker = secured_service
    driver = svc.service.driver
    assert isinstance(driver, RecordingDriver)
    user, password = _enroll(svc)
    device = TestClient(broker.host, broker.port, username=user, password=password)
    try:
        assert not device.connect().is_failure
        device.subscribe(device_inbox(user))
        device.subscribe(coordinator_status())
        presence = parse_coordinator_presence(device.expect().payload)  # retained
        assert presence.online
        assert presence.incarnation == svc.service.incarnation
        device.publish(device_up(user, UpChannel.CHECKIN), b"hello")
        reply = device.expect()
        assert (reply.topic, reply.payload) == (device_inbox(user), b"plan for hello")
        assert driver.messages == [(user, UpChannel.CHECKIN, b"hello")]
        # Hostile input: garbage channel, oversized, refused by the driver, then a flood.
        device.publish(f"fedrt/v1/dev/{user}/up/bogus", b"x")
        device.publish(device_up(user, UpChannel.UPDATE), b"u" * 4096)
        device.publish(device_up(user, UpChannel.ROUND), b"bad frame")
        for i in range(10):
            device.publish(device_up(user, UpChannel.ROUND), b"r%d" % i)
        assert _until(lambda: sum(_outcomes(svc).values()) >= 14)
        outcomes = _outcomes(svc)
        assert outcomes["bad_topic"] == 1
        assert outcomes["too_large"] == 1
        assert outcomes["rejected"] == 1
        assert outcomes["rate_limited"] >= 5
        # The burst allows 6 messages: check-in, the refused one, and 4 of the flood.
        assert outcomes["accepted"] == 5
        assert len(driver.messages) == 5
        assert driver.ticks > 0
    finally:
        device.close()
    svc.request("POST", f"/v1/devices/{user}/revoke")
    assert _until(lambda: locked_out(broker, user, password))


def locked_out(broker: MosquittoBroker, user: str, password: str) -> bool:
    return mqtt_connect_code(broker.port, user, password, host=broker.host) != 0


def test_task_changes_reach_the_driver_and_shutdown_persists(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    svc = ServiceThread(config, driver_factory=RecordingDriver)
    with svc:
        driver = svc.service.driver
        assert isinstance(driver, RecordingDriver)
        from tests.coordinator.exported import write_export

        write_export(tmp_path / "export")
        task = svc.request(
            "POST", "/v1/tasks", body={"name": "t", "model_dir": str(tmp_path / "export")}
        ).json()
        svc.request("POST", f"/v1/tasks/{task['task_id']}/start")
        assert [t.status.value for t in driver.tasks] == ["created", "running"]
        # An unenrolled sender on the (anonymous, loopback) embedded broker is not routed.
        assert svc.run(svc.service.on_device_message, device_up("ghost", UpChannel.CHECKIN), b"x") \
            == "unknown_device"  # fmt: skip
        assert svc.run(svc.service.on_device_message, "fedrt/v1/dev/../up/checkin", b"x") == (
            "bad_topic"
        )
    assert driver.shutdowns == 1
    # Everything committed before the shutdown is there after a restart.
    with ServiceThread(config) as again:
        assert again.service.store.get_task(task["task_id"]).status.value == "running"


def test_no_driver_counts_and_last_seen_is_flushed_on_stop(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with ServiceThread(config) as svc:
        user, _ = _enroll(svc)
        topic = device_up(user, UpChannel.CHECKIN)
        assert svc.run(svc.service.on_device_message, topic, b"x") == "no_driver"
        assert _outcomes(svc)["no_driver"] == 1
    with ServiceThread(config) as again:
        assert again.service.store.get_device(user).last_seen is not None


def test_service_over_mqtts_with_a_private_ca(
    tmp_path: Path, mosquitto_secure: SecureBroker
) -> None:
    config = make_config(
        tmp_path / "data",
        broker=BrokerConfig(
            url=f"mqtts://{mosquitto_secure.host}:{mosquitto_secure.tls_port}",
            username="admin",
            password=Secret(mosquitto_secure.passwords["admin"]),
            ca_file=mosquitto_secure.tls.ca_cert,
        ),
    )
    with ServiceThread(config) as svc:
        health = svc.request("GET", "/healthz", token=None).json()
        assert health["mqtt_connected"] is True
        # Not "admin": that is the coordinator's user, and one user is one client id.
        watcher = TestClient(
            mosquitto_secure.host,
            mosquitto_secure.port,
            username="observer",
            password=mosquitto_secure.passwords["observer"],
        )
        try:
            watcher.connect()
            watcher.subscribe("x/#")
            svc.run(svc.service.publish, "x/y", b"over tls")
            assert watcher.expect().payload == b"over tls"
        finally:
            watcher.close()


class V311Client:
    """paho MQTT 3.1.1 (what amqtt speaks), collecting messages into a queue."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.result: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: self.result.put(rc.value)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def connected(self) -> bool:
        return self.result.get(timeout=10) == 0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client.reinitialise()  # closes paho's sockets now, not at a later gc


def test_embedded_broker_enforces_enrolled_credentials_and_acl(tmp_path: Path) -> None:
    with ServiceThread(make_config(tmp_path / "data"), driver_factory=RecordingDriver) as svc:
        driver = svc.service.driver
        assert isinstance(driver, RecordingDriver)
        assert svc.service.embedded is not None
        port = svc.service.embedded.port
        alice, alice_pw = _enroll(svc)
        bob, _ = _enroll(svc)
        assert mqtt_connect_code(port, None, None, v5=False) != 0
        assert mqtt_connect_code(port, alice, "wrong-password", v5=False) != 0
        device = V311Client(port, alice, alice_pw)
        try:
            assert device.connected()
            device.client.subscribe(device_inbox(alice), qos=1)
            device.client.subscribe(device_inbox(bob), qos=1)  # refused by the ACL
            time.sleep(0.2)
            device.client.publish(device_up(bob, UpChannel.CHECKIN), b"forged", qos=1)
            device.client.publish(device_up(alice, UpChannel.CHECKIN), b"mine", qos=1)
            assert device.messages.get(timeout=10) == (device_inbox(alice), b"plan for mine")
            svc.run(svc.service.publish, device_inbox(bob), b"for bob only", 1, False)
            with pytest.raises(queue.Empty):
                device.messages.get(timeout=0.3)
            assert driver.messages == [(alice, UpChannel.CHECKIN, b"mine")]
        finally:
            device.close()
        svc.request("POST", f"/v1/devices/{alice}/revoke")
        assert mqtt_connect_code(port, alice, alice_pw, v5=False) != 0
