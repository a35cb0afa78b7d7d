"""Enrollment.refresh: an instance follows the devices other instances enroll and revoke on
the shared store (its broker files and its cache of active devices)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from fedrt.coordinator.devices.enrollment import BrokerAuth, Enrollment
from fedrt.coordinator.records import DeviceRecord
from fedrt.coordinator.store import MemoryStore
from tests.coordinator.store_conformance import device


class RecordingAuth(BrokerAuth):
    def __init__(self) -> None:
        self.written: list[list[str]] = []

    def sync(self, devices: Sequence[DeviceRecord]) -> None:
        self.written.append(sorted(d.device_id for d in devices if not d.revoked))


def test_an_instance_follows_enrollments_and_revocations_made_elsewhere() -> None:
    store = MemoryStore()
    auth = RecordingAuth()
    here = Enrollment(store, auth, coordinator_public_key=b"k" * 32, clock=lambda: 1.0)
    here.sync_broker()
    assert here.refresh() is False  # nothing changed since it wrote
    store.add_device(device("dev-1"))  # enrolled through another instance
    store.add_device(device("dev-2"))
    assert here.refresh() is True
    assert auth.written[-1] == ["dev-1", "dev-2"]
    assert here.is_active("dev-1")  # now cached
    store.revoke_device("dev-1", at=10.0)  # revoked through another instance
    assert here.is_active("dev-1")  # the cache does not know yet ...
    assert here.refresh() is True
    assert not here.is_active("dev-1")  # ... until the refresh
    assert auth.written[-1] == ["dev-2"]
    assert here.refresh() is False


def test_a_small_order_identity_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from fedrt.coordinator.devices.enrollment import _public_key
    from fedrt.coordinator.errors import BadRequestError

    identity_point = bytes([1]) + bytes(31)  # order 1: any signature of the form (R=1, s=0)
    for raw in (identity_point, bytes(32)):
        with pytest.raises(BadRequestError, match="small-order"):
            _public_key(raw)
    honest = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert _public_key(honest) is not None
