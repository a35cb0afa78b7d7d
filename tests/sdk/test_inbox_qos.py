"""The inbox QoS the coordinator hands out at enrollment (``mqtt.inbox_qos``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.protocol.topics import device_inbox
from fedrt.sdk.credentials import Credentials
from fedrt.sdk.device import Device, DeviceConfig
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.memory_transport import MemoryBroker, MemoryTransport
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
from fedrt.sdk.transport_base import Handler

DEV = "dev-qos"


def _creds(**more: object) -> Credentials:
    return Credentials(device_id=DEV, mqtt_username=DEV, mqtt_password="pw",
                       coordinator_public_key=b"k" * 32, mqtt_host="memory", mqtt_port=1,
                       **more)  # type: ignore[arg-type]  # fmt: skip


def test_credentials_carry_the_inbox_qos_and_refuse_others() -> None:
    told = _creds(mqtt_inbox_qos=0).to_json()
    assert told["mqtt"]["inbox_qos"] == 0
    assert Credentials.from_json(told).mqtt_inbox_qos == 0
    # Not told (an older coordinator): left out, and read back as None (QoS 1).
    assert "inbox_qos" not in _creds().to_json()["mqtt"]
    assert Credentials.from_json(_creds().to_json()).mqtt_inbox_qos is None
    told["mqtt"]["inbox_qos"] = 2
    with pytest.raises(SdkConfigError, match="inbox_qos must be 0 or 1"):
        Credentials.from_json(told)


class _Recording(MemoryTransport):
    def __init__(self, broker: MemoryBroker, client_id: str, seen: dict[str, int]) -> None:
        super().__init__(broker, client_id)
        self.seen = seen

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> None:
        self.seen[topic_filter] = qos
        super().subscribe(topic_filter, handler, qos=qos)


@pytest.mark.parametrize(("told", "qos"), [(None, 1), (0, 0), (1, 1)])
def test_the_device_reads_its_inbox_at_the_qos_it_was_told(
    tmp_path: Path, told: int | None, qos: int
) -> None:
    _creds(mqtt_inbox_qos=told).save(tmp_path)
    seen: dict[str, int] = {}
    broker = MemoryBroker()
    store = ExampleStore(tmp_path / "ex.sqlite3", x_shape=(4,), x_dtype=np.float32)
    config = DeviceConfig(data_dir=tmp_path, coordinator_url="http://127.0.0.1:9", task_id="t-1",
                          poll_s=0.05)  # fmt: skip
    device = Device(config, store=store,
                    device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]),
                    transport_factory=lambda c: _Recording(broker, c.client_id, seen))  # fmt: skip
    device.start()
    try:
        assert seen[device_inbox(DEV)] == qos
    finally:
        device.stop()
        store.close()
