"""Round check: enroll with a coordinator and take part in one real round (fedrt.sdk Device).

The coordinator must run a task on ``device_tests/fixtures/mlp`` (12 float inputs, 4
classes): the device brings the fixture's examples. Eligibility is forced on (a scripted
always-eligible state), since the device-state check reports the real one separately.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from device_tests.fixture_specs import FIXTURES, MLP
from device_tests.report import CheckFailed


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RoundOptions:
    coordinator_url: str
    token: str
    task_id: str | None = None
    timeout_s: float = 120.0
    data_dir: Path | None = None


def _device(options: RoundOptions, data_dir: Path) -> Any:
    from fedrt.sdk.device import Device, DeviceConfig
    from fedrt.sdk.example_store import ExampleStore
    from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in

    kat = np.load(FIXTURES / "mlp" / "kat.npz")
    store = ExampleStore(data_dir / "examples.sqlite3", x_shape=MLP.input_shape, x_dtype=np.float32)
    if len(store) == 0:
        store.extend(list(kat["x"].reshape(-1, *MLP.input_shape)), list(kat["y"].reshape(-1)))
    config = DeviceConfig(
        data_dir=data_dir,
        coordinator_url=options.coordinator_url,
        task_id=options.task_id,
        poll_s=0.5,
    )
    return Device(config, store=store, device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]))


def take_part_in_a_round(options: RoundOptions) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fedrt-device-tests-") as tmp:
        data_dir = options.data_dir or Path(tmp)
        device = _device(options, data_dir)
        start = time.monotonic()
        device_id = device.enroll(options.token)
        device.start()
        try:
            deadline = start + options.timeout_s
            status = device.status()
            while status.rounds_completed < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
                status = device.status()
        finally:
            device.stop()
            device.store.close()
        detail = {
            "device_id": device_id,
            "task_id": status.task_id,
            "round_id": status.round_id,
            "rounds_completed": status.rounds_completed,
            "bytes_up": status.bytes_up,
            "bytes_down": status.bytes_down,
            "last_detail": status.last_detail,
            "round_seconds": round(time.monotonic() - start, 2),
        }
        if status.rounds_completed < 1:
            raise CheckFailed(f"no round completed within {options.timeout_s:.0f} s", **detail)
        return detail
