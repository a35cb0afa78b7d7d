"""What device tests on the in-memory broker share: an enrolled device with a few examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrt.sdk.credentials import Credentials
from fedrt.sdk.device import Device, DeviceConfig
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.memory_transport import MemoryBroker, MemoryTransport
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in


def enroll(data_dir: Path, device_id: str) -> None:
    """The credentials enrollment would have left in ``data_dir`` (no coordinator needed)."""
    Credentials(device_id=device_id, mqtt_username=device_id, mqtt_password="pw",
                coordinator_public_key=b"k" * 32, mqtt_host="memory",
                mqtt_port=1).save(data_dir)  # fmt: skip


def memory_device(
    data_dir: Path, task_id: str, broker: MemoryBroker
) -> tuple[Device, ExampleStore]:
    """An enrolled device (``enroll``) following ``task_id`` through ``broker``, idle and
    plugged in, with four examples; the caller stops it and closes the store."""
    store = ExampleStore(data_dir / "ex.sqlite3", x_shape=(4,), x_dtype=np.float32)
    store.extend([np.zeros(4, np.float32)] * 4, [0, 1, 0, 1])
    config = DeviceConfig(data_dir=data_dir, coordinator_url="http://127.0.0.1:9",
                          task_id=task_id, poll_s=0.05)  # fmt: skip
    device = Device(config, store=store,
                    device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]),
                    transport_factory=lambda c: MemoryTransport(broker, c.client_id))  # fmt: skip
    return device, store
