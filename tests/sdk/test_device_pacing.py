"""A device on a real stack (Mosquitto) spreads its first check-in after connecting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.tasks import TaskSpec
from fedrt.sdk.device import Device, DeviceConfig
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.participant_state import ParticipantState
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
from fedrt.simulation import datasets
from fedrt.simulation.runner import SimConfig, export_model
from fedrt.simulation.stack import LocalStack
from tests.support.process import until

SPREAD = 3600.0


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    started: list[Device] = []
    yield started
    for device in started:
        device.stop()
        device.store.close()


def test_a_connecting_device_draws_its_first_check_in_inside_the_spread(
    tmp_path: Path, devices: list[Device]
) -> None:
    digits = datasets.load_digits(flat=True)
    model_dir = export_model(SimConfig(model="zoo:mlp", batch_size=16), digits, tmp_path / "m")
    with LocalStack(tmp_path / "stack", broker="mosquitto") as stack:
        svc = stack.service
        assert svc is not None
        model = stack.call(
            lambda: svc.catalog.add_export_dir(model_dir, actor="t", max_bytes=1 << 26)
        )
        spec = TaskSpec(goal_count=1, min_reports=1, secagg=False, eval_every=0, max_rounds=1)
        task = stack.call(lambda: svc.tasks.create(name="t", model_sha256=model.sha256,
                                                   spec=spec, actor="t"))  # fmt: skip
        stack.call(lambda: svc.tasks.act(task.task_id, "start", actor="t"))
        store = ExampleStore(tmp_path / "ex.sqlite3", x_shape=(64,), x_dtype=np.float32)
        store.extend(list(digits.x[:64]), list(digits.y[:64]))
        device = Device(
            DeviceConfig(
                data_dir=tmp_path / "device",
                coordinator_url=stack.http_url,
                task_id=task.task_id,
                poll_s=0.1,
                participant={"checkin_spread": SPREAD},
            ),
            store=store,
            device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]),
        )
        device.enroll(str(stack.call(lambda: svc.enrollment.create_token(actor="t"))))
        before = time.time()
        device.start()
        devices.append(device)

        def placed() -> float | None:
            p = device._participant
            if p is None or not device.status().connected or p.not_before == -np.inf:
                return None
            return float(p.not_before)

        at = until(placed, 30, "the device to connect and draw its check-in")
        # Drawn on the connection, inside the spread (device clock = time.time()).
        assert before <= at <= time.time() + SPREAD
        # Several polls later it still waits: no check-in went out.
        for _ in range(10):
            time.sleep(0.1)
            p = device._participant
            assert p is not None
            assert p.state is ParticipantState.IDLE
        assert device.status().connected
