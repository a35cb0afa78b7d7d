"""Enrollment against a real Mosquitto: credentials connect, ACLs confine, revocation bites."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.devices.enrollment import (
    Enrollment,
    EnrollmentGrant,
    OpenBrokerAuth,
    enrollment_proof_payload,
)
from fedrt.coordinator.errors import (
    AuthError,
    BadRequestError,
    BrokerError,
    ConflictError,
    NotFoundError,
)
from fedrt.coordinator.store import MemoryStore
from fedrt.protocol.topics import UpChannel, device_inbox, device_up, device_up_filter
from tests.coordinator.enrolled_broker import (
    COORD_PASSWORD,
    COORD_USER,
    Clock,
    EnrolledBroker,
    device_key,
)
from tests.coordinator.harness import mqtt_connect_code
from tests.support.mqtt import TestClient

NOT_AUTHORIZED = 0x87


def _enroll(enrollment: Enrollment, token: str) -> EnrollmentGrant:
    key, raw = device_key()
    return enrollment.enroll(token, raw, key.sign(enrollment_proof_payload(token)))


def _client(broker: MosquittoBroker, user: str, password: str) -> TestClient:
    return TestClient(broker.host, broker.port, username=user, password=password)


def _connects(broker: MosquittoBroker, user: str, password: str) -> bool:
    return mqtt_connect_code(broker.port, user, password, host=broker.host) == 0


def test_enrolled_device_connects_confined_and_revocation_locks_it_out(
    enrolled_broker: EnrolledBroker,
) -> None:
    enrollment, broker = enrolled_broker.enrollment, enrolled_broker.broker
    a = _enroll(enrollment, enrollment.create_token(actor="admin"))
    b = _enroll(enrollment, enrollment.create_token(actor="admin"))
    assert "mqtt_password" not in repr(a)
    coordinator = _client(broker, COORD_USER, COORD_PASSWORD)
    dev_a = _client(broker, a.mqtt_username, a.mqtt_password)
    try:
        assert not coordinator.connect().is_failure
        assert not dev_a.connect().is_failure
        assert not coordinator.subscribe(device_up_filter())[0].is_failure
        # Publishing as another device is refused by the broker; its own topic goes through.
        forged = dev_a.publish(device_up(b.device_id, UpChannel.CHECKIN), b"forged")
        assert forged.value == NOT_AUTHORIZED
        dev_a.publish(device_up(a.device_id, UpChannel.CHECKIN), b"mine")
        got = coordinator.expect()
        assert (got.topic, got.payload) == (device_up(a.device_id, UpChannel.CHECKIN), b"mine")
        # Mosquitto 2.0 may grant a SUBSCRIBE to another inbox; the ACL bites on delivery.
        dev_a.subscribe(device_inbox(b.device_id))
        dev_a.subscribe(device_inbox(a.device_id))
        coordinator.publish(device_inbox(b.device_id), b"for b only")
        coordinator.publish(device_inbox(a.device_id), b"for a")
        got = dev_a.expect()
        assert (got.topic, got.payload) == (device_inbox(a.device_id), b"for a")
        with pytest.raises(queue.Empty):
            dev_a.expect(timeout=0.2)
        assert coordinator.messages.empty()
    finally:
        dev_a.close()
        coordinator.close()
    assert not _connects(broker, a.device_id, "wrong-password")
    assert enrollment.is_active(a.device_id)  # remembered as active...
    enrollment.revoke(a.device_id, actor="admin")  # ...until revoked
    assert not enrollment.is_active(a.device_id)
    assert enrollment.is_active(b.device_id)
    # SIGHUP is asynchronous: allow the broker a moment to re-read its files.
    assert _eventually(lambda: not _connects(broker, a.mqtt_username, a.mqtt_password))
    assert _connects(broker, b.mqtt_username, b.mqtt_password)
    actions = [e.action for e in enrollment.store.list_audit()]
    assert actions.count("device.enroll") == 2
    assert actions[-1] == "device.revoke"


def _eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_token_is_one_time_and_expires() -> None:
    clock = Clock()
    enrollment = Enrollment(
        MemoryStore(), OpenBrokerAuth(), coordinator_public_key=b"k" * 32, clock=clock
    )
    token = enrollment.create_token(actor="admin", ttl_s=60)
    grant = _enroll(enrollment, token)
    assert grant.coordinator_public_key == b"k" * 32
    with pytest.raises(AuthError):
        _enroll(enrollment, token)
    late = enrollment.create_token(actor="admin", ttl_s=60)
    clock.now += 61
    with pytest.raises(AuthError):
        _enroll(enrollment, late)
    assert len(enrollment.store.list_devices()) == 1


def test_bad_enrollment_inputs_change_nothing() -> None:
    enrollment = Enrollment(
        MemoryStore(), OpenBrokerAuth(), coordinator_public_key=b"k" * 32, clock=Clock()
    )
    token = enrollment.create_token(actor="admin")
    key, raw = device_key()
    proof = key.sign(enrollment_proof_payload(token))
    other, _ = device_key()
    cases = [
        (AuthError, dict(token=token, public_key=raw, proof=other.sign(b"x"))),
        (BadRequestError, dict(token=token, public_key=raw[:31], proof=proof)),
        (BadRequestError, dict(token=token, public_key=raw, proof=proof, labels={"k": 1})),
        (AuthError, dict(token="x", public_key=raw, proof=proof)),
    ]
    for error, kwargs in cases:
        with pytest.raises(error):
            enrollment.enroll(**kwargs)  # type: ignore[arg-type]
    assert enrollment.store.list_devices() == []
    with pytest.raises(BadRequestError):
        enrollment.create_token(actor="admin", ttl_s=-1)
    with pytest.raises(NotFoundError):
        enrollment.revoke("ghost", actor="admin")
    grant = _enroll(enrollment, token)
    enrollment.revoke(grant.device_id, actor="admin")
    with pytest.raises(ConflictError):
        enrollment.revoke(grant.device_id, actor="admin")


def test_broker_failure_rolls_back_enrollment(tmp_path: Path) -> None:
    class Broken(OpenBrokerAuth):
        def sync(self, devices: object) -> None:
            raise BrokerError("broker unreachable")

    enrollment = Enrollment(
        MemoryStore(), Broken(), coordinator_public_key=b"k" * 32, clock=Clock()
    )
    token = enrollment.create_token(actor="admin")
    with pytest.raises(BrokerError):
        _enroll(enrollment, token)
    assert enrollment.store.list_devices() == []
    assert enrollment.store.list_enrollment_tokens()[0].used_by is None
