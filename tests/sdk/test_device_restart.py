"""``fedrt device run`` killed -9 mid-round and started again, in a SecAgg+ round on a real stack.

The restarted process finds in ``device-state.json`` that it was in a round, tells the
coordinator it abandons it (``RESTARTED``) instead of checking in as if nothing happened,
and drops that round's unsent answers. The round goes on with the two other devices and
commits; the restarted device is counted once as dropped and takes part in a later round.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.coordinator.driver import DriverContext, RoundDriver
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.rounds.journal import RoundSummary
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.tasks import TaskSpec
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_from_device
from fedrt.sdk.device import Device, DeviceConfig
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
from fedrt.sdk.transport import MqttConfig, PahoTransport
from fedrt.simulation import datasets
from fedrt.simulation.runner import SimConfig, export_model
from fedrt.simulation.stack import LocalStack
from tests.conftest import SpawnFn
from tests.support.process import ManagedProcess, until

# In-process devices: short timers, so that nothing waits on a device-side timeout.
TIMINGS = {"deadline_margin": 0.5, "grace": 30.0, "checkin_timeout": 20.0,
           "retry_earliest": 0.3, "retry_latest": 0.8}  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datasets.Dataset]:
    digits = datasets.load_digits(flat=True)
    root = tmp_path_factory.mktemp("exported")
    return export_model(SimConfig(model="zoo:mlp", batch_size=16), digits, root), digits


class _HoldMaskedInput(PahoTransport):
    """Holds this device's masked input until ``release`` is set: the round stays in the
    masked-input stage while the test kills a device that has already sent its own."""

    def __init__(self, config: MqttConfig, held: threading.Event, release: threading.Event):
        super().__init__(config)
        self.held, self.release = held, release

    def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        if not self.release.is_set():
            msg = decode_from_device(payload)
            if isinstance(msg, rm.StageResponse) and msg.stage is rm.Stage.MASKED_INPUT:
                self.held.set()
                self.release.wait(60)
        super().publish(topic, payload, **kwargs)


def _statuses(proc: ManagedProcess) -> list[dict[str, Any]]:
    lines = proc.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"event": "status"')]


def _round_facts(data_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((data_dir / "device-state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-replace
        return {}
    facts = state.get("round") or {}
    assert isinstance(facts, dict)
    return facts


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    started: list[Device] = []
    yield started
    for device in started:
        device.stop()
        device.store.close()


@pytest.mark.parametrize("kill_when", ["training", "masked_input_sent"])
def test_a_device_killed_mid_round_abandons_it_on_restart_and_joins_a_later_round(
    kill_when: str,
    tmp_path: Path,
    spawn: SpawnFn,
    exported: tuple[Path, datasets.Dataset],
    devices: list[Device],
) -> None:
    model_dir, digits = exported
    summaries: list[RoundSummary] = []

    def driver(ctx: DriverContext) -> RoundDriver:
        return FederatedDriver(ctx, pace=PaceConfig(min_delay=0.3, spread=0.5),
                               listener=summaries.append)  # fmt: skip

    held, release = threading.Event(), threading.Event()
    if kill_when == "training":
        release.set()  # nothing held: the victim is the slow one (28x the data)
    with LocalStack(tmp_path / "stack", broker="mosquitto", driver_factory=driver) as stack:
        svc = stack.service
        assert svc is not None
        model = stack.call(
            lambda: svc.catalog.add_export_dir(model_dir, actor="t", max_bytes=1 << 26)
        )
        # Three devices, all needed to start a round, two enough to finish one (t = 2).
        spec = TaskSpec(goal_count=3, over_selection=1.0, min_reports=2, secagg=True,
                        eval_every=0, local_epochs=8, batch_size=16, checkin_deadline_s=60.0,
                        training_deadline_s=60.0, secagg_stage_deadline_s=60.0,
                        max_rounds=20)  # fmt: skip
        task = stack.call(lambda: svc.tasks.create(name="t", model_sha256=model.sha256,
                                                   spec=spec, actor="t"))  # fmt: skip

        def token() -> str:
            return str(stack.call(lambda: svc.enrollment.create_token(actor="t")))

        for i in range(2):
            directory = tmp_path / f"device-{i}"
            directory.mkdir()
            store = ExampleStore(directory / "ex.sqlite3", x_shape=(64,), x_dtype=np.float32)
            store.extend(
                list(digits.x[i * 64 : (i + 1) * 64]), list(digits.y[i * 64 : (i + 1) * 64])
            )
            hold = i == 0 and not release.is_set()
            config = DeviceConfig(
                data_dir=directory,
                coordinator_url=stack.http_url,
                task_id=task.task_id,
                poll_s=0.2,
                participant=dict(TIMINGS),
            )
            device = Device(
                config,
                store=store,
                device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]),
                transport_factory=(lambda c: _HoldMaskedInput(c, held, release)) if hold else None,
            )
            device.enroll(token())
            device.start()
            devices.append(device)

        victim_dir = tmp_path / "victim"
        np.savez(tmp_path / "victim.npz", x=digits.x[128:], y=digits.y[128:])
        config_file = tmp_path / "device.toml"
        config_file.write_text(
            "[device]\n"
            f"data_dir = '{victim_dir}'\n"
            f"coordinator_url = '{stack.http_url}'\n"
            f"task_id = '{task.task_id}'\n"
            f"enrollment_token = '{token()}'\n"
            "state = 'always'\n"
            "poll_s = 0.2\n"
            f"[data]\nx_shape = [64]\nimport_npz = '{tmp_path / 'victim.npz'}'\n"
        )
        argv = [sys.executable, "-m", "fedrt", "device", "run", "--config", str(config_file),
                "--status-every", "0.2"]  # fmt: skip
        first = spawn(argv, name="victim-1")
        # Enrolled before the first round opens, so that the round knows its identity key.
        first.wait_ready(lambda: '"event": "started"' in first.log_path.read_text(), 60)
        stack.call(lambda: svc.tasks.act(task.task_id, "start", actor="t"))

        def in_round() -> dict[str, Any] | None:
            facts = _round_facts(victim_dir)
            if kill_when == "training":
                return facts if facts.get("state") == "training" else None
            # Sent AND acknowledged (the facts are saved before a message goes out).
            sent = facts.get("answered") == "MASKED_INPUT" and facts.get("unacked") == []
            return facts if sent else None

        facts = until(in_round, 60, f"the victim at {kill_when}", every=0.01)
        first.kill()  # SIGKILL: nothing of the round survives but device-state.json
        assert first.proc is not None
        assert first.proc.returncode == -signal.SIGKILL
        victim_round = int(facts["round_id"])
        assert not [s for s in summaries if s.round_no == victim_round], "round ended too soon"

        second = spawn(argv, name="victim-2")

        def abandoned() -> bool:
            return any(s["last_detail"].startswith("restarted while") and s["pending_uploads"] == 0
                       for s in _statuses(second))  # fmt: skip

        until(abandoned, 60, "the coordinator to acknowledge the victim's Abandon")
        release.set()  # the held masked input goes out: the round can finish without the victim

        def later_round_done() -> bool:
            return any(s["rounds_completed"] >= 1 for s in _statuses(second))

        until(later_round_done, 90, "the restarted victim to complete a later round", 0.2)
        assert second.stop() == 0

    by_round = {s.round_no: s for s in summaries}
    victim = by_round[victim_round]
    assert victim.status == "committed", victim.reason
    during = "training" if kill_when == "training" else "masked_input"
    assert dict(victim.metrics.dropped) == {during: 1}  # once, though it also checked in again
    # Killed in training, it never entered SecAgg+; killed later, its masked input counts.
    assert victim.metrics.included == (2 if kill_when == "training" else 3)
    assert any(r > victim_round and s.status == "committed" for r, s in by_round.items())
    log = second.log_path.read_text(errors="replace")
    assert f"restarted in round {victim_round}" in log
    assert "abandoning it" in log
