"""A real Mosquitto whose password and ACL files enrollment writes, and the ``Enrollment``
(SQLite store) that writes them: the fixture ``enrolled_broker`` (re-exported by
``tests/coordinator/conftest.py``), for the enrollment and batched-enrollment tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.coordinator.broker.mosquitto import BrokerConfig, MosquittoBroker
from fedrt.coordinator.broker.mosquitto_auth import MosquittoFileAuth
from fedrt.coordinator.devices.enrollment import Enrollment
from fedrt.coordinator.errors import BrokerError
from fedrt.coordinator.records import DeviceRecord
from fedrt.coordinator.security.credentials import hash_password
from fedrt.coordinator.store import SqliteStore

COORD_USER, COORD_PASSWORD = "fedrt-coordinator", "coordinator-password-123"


class Clock:
    """A clock the test sets (enrollment tokens expire on it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingAuth(MosquittoFileAuth):
    """Mosquitto's file auth that counts its syncs and can be made to fail."""

    def __init__(self, directory: Path) -> None:
        super().__init__(
            password_file=directory / "passwords",
            acl_file=directory / "acl",
            coordinator_username=COORD_USER,
            coordinator_password_hash=hash_password(COORD_PASSWORD),
        )
        self.syncs = 0
        self.fail = False

    def sync(self, devices: Sequence[DeviceRecord]) -> None:
        if self.fail:
            raise BrokerError("broker files not writable")
        self.syncs += 1
        super().sync(devices)


@dataclass(frozen=True, slots=True)
class EnrolledBroker:
    enrollment: Enrollment
    auth: CountingAuth
    broker: MosquittoBroker
    clock: Clock


@pytest.fixture
def enrolled_broker(tmp_path: Path) -> Iterator[EnrolledBroker]:
    """Enrollment over a SQLite store and a Mosquitto that reloads what it writes."""
    directory = tmp_path / "mosq"
    directory.mkdir()
    auth = CountingAuth(directory)
    clock = Clock()
    enrollment = Enrollment(
        SqliteStore(tmp_path / "db.sqlite3"), auth, coordinator_public_key=b"k" * 32, clock=clock
    )
    enrollment.sync_broker()  # the files must exist before Mosquitto starts
    broker = MosquittoBroker(
        BrokerConfig(
            directory=directory,
            allow_anonymous=False,
            password_file=auth.password_file,
            acl_file=auth.acl_file,
        )
    )
    broker.start()
    auth._reload = broker.reload
    try:
        yield EnrolledBroker(enrollment=enrollment, auth=auth, broker=broker, clock=clock)
    finally:
        broker.stop()
        enrollment.store.close()


def device_key() -> tuple[Ed25519PrivateKey, bytes]:
    """A new device identity key and its raw public key."""
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, raw


__all__ = [
    "COORD_PASSWORD", "COORD_USER", "Clock", "CountingAuth", "EnrolledBroker", "device_key",
    "enrolled_broker",
]  # fmt: skip
