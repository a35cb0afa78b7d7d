"""A Device wired as the Android app wires it completes a real round (Mosquitto, coordinator).

Device state from the Android provider reading a stand-in Context (charging on Wi-Fi, idle),
training through JavaTrainer on the stand-in Kotlin LiteRtTrainer (real ai_edge_litert):
the two Android pieces inside the unchanged SDK, end to end.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fedrt.coordinator.driver import DriverContext, RoundDriver
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.tasks import TaskSpec
from fedrt.sdk.android_trainer import java_trainer_factory
from fedrt.sdk.device import Device, DeviceConfig
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.scheduler import SchedulerConfig
from fedrt.simulation.stack import LocalStack
from fedrt.simulation.timings import PARTICIPANT_TIMINGS
from tests.sdk.android_support import StandInLiteRtTrainer, android_provider, java_module

MODEL = Path(__file__).resolve().parents[2] / "device_tests" / "fixtures" / "mlp"


def test_an_android_wired_device_completes_a_round(tmp_path: Path) -> None:
    def driver(ctx: DriverContext) -> RoundDriver:
        return FederatedDriver(ctx, pace=PaceConfig(min_delay=0.5, spread=1.0))

    opened: list[StandInLiteRtTrainer] = []

    def open_trainer(path: str) -> StandInLiteRtTrainer:
        opened.append(StandInLiteRtTrainer(path))
        return opened[-1]

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 12)).astype(np.float32)
    store = ExampleStore(tmp_path / "examples.sqlite3", x_shape=(12,), x_dtype=np.float32)
    store.extend(list(x), [int(v) for v in np.argmax(x[:, :4], axis=1)])
    with LocalStack(tmp_path / "stack", broker="mosquitto", driver_factory=driver) as stack:
        svc = stack.service
        assert svc is not None
        model = stack.call(lambda: svc.catalog.add_export_dir(MODEL, actor="t", max_bytes=1 << 26))
        spec = TaskSpec(goal_count=1, min_reports=1, secagg=False, checkin_deadline_s=8.0,
                        training_deadline_s=20.0, max_rounds=3)  # fmt: skip
        task = stack.call(lambda: svc.tasks.create(name="t", model_sha256=model.sha256,
                                                   spec=spec, actor="t"))  # fmt: skip
        token = stack.call(lambda: svc.enrollment.create_token(actor="t"))
        config = DeviceConfig(
            data_dir=tmp_path / "device",
            coordinator_url=stack.http_url,
            task_id=task.task_id,
            poll_s=0.5,
            scheduler=SchedulerConfig(wait_poll_s=0.5),
            participant=dict(PARTICIPANT_TIMINGS),
        )
        device = Device(
            config,
            store=store,
            device_state=android_provider("charging_wifi"),
            trainer_factory=java_trainer_factory(open_trainer, java=java_module()),
        )
        device.enroll(token)
        device.start()
        stack.call(lambda: svc.tasks.act(task.task_id, "start", actor="t"))
        try:
            deadline = time.monotonic() + 90
            status = device.status()
            while status.rounds_completed < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
                status = device.status()
        finally:
            device.stop()
            store.close()
        rounds = stack.call(lambda: svc.store.list_rounds(task.task_id))
    assert status.rounds_completed >= 1, status
    assert any(r.status.value == "committed" for r in rounds)
    # The round's model was trained in the Java stand-in, not in an in-process LiteRtTrainer.
    assert opened
    assert {"read_weights", "train"} <= set(opened[0].calls)
    assert "get_weights" not in opened[0].calls  # Java's runSignature could not run it
    # The round's interpreter was closed once its work was done, before the update was built.
    assert all(t.calls[-1] == "close" for t in opened), [t.calls[-3:] for t in opened]
