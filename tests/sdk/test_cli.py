"""``fedrt device run``: a device process enrolls and completes a round with a real stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.driver import DriverContext, RoundDriver
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.tasks import TaskSpec
from fedrt.sdk.cli import build_device, load_config
from fedrt.sdk.errors import SdkConfigError
from fedrt.simulation import datasets
from fedrt.simulation.runner import SimConfig, export_model
from fedrt.simulation.stack import LocalStack
from tests.conftest import SpawnFn


def test_config_errors_are_typed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[device]\ndata_dir = '/tmp/x'\n")
    with pytest.raises(SdkConfigError, match="coordinator_url"):
        load_config(bad)
    bad.write_text("[device]\ndata_dir = '/x'\ncoordinator_url = 'http://h'\nsurprise = 1\n")
    with pytest.raises(SdkConfigError, match="surprise"):
        load_config(bad)
    bad.write_text("not toml [")
    with pytest.raises(SdkConfigError):
        load_config(bad)
    data = {"device": {"data_dir": str(tmp_path), "coordinator_url": "http://h"}}
    with pytest.raises(SdkConfigError, match="x_shape"):
        build_device(data)
    data["policy"] = {"min_battery": 30.0, "warp_drive": True}  # type: ignore[assignment]
    data["data"] = {"x_shape": [64]}  # type: ignore[assignment]
    with pytest.raises(SdkConfigError, match="warp_drive"):
        build_device(data)


def test_device_process_enrolls_and_completes_a_round(tmp_path: Path, spawn: SpawnFn) -> None:
    digits = datasets.load_digits(flat=True)
    model_dir = export_model(SimConfig(model="zoo:mlp", batch_size=16), digits, tmp_path)
    np.savez(tmp_path / "examples.npz", x=digits.x[:64], y=digits.y[:64])

    def driver(ctx: DriverContext) -> RoundDriver:
        return FederatedDriver(ctx, pace=PaceConfig(min_delay=0.5, spread=1.0))

    with LocalStack(tmp_path / "stack", broker="mosquitto", driver_factory=driver) as stack:
        svc = stack.service
        assert svc is not None
        model = stack.call(
            lambda: svc.catalog.add_export_dir(model_dir, actor="t", max_bytes=1 << 26)
        )
        spec = TaskSpec(goal_count=1, min_reports=1, secagg=False, checkin_deadline_s=30.0,
                        training_deadline_s=30.0, max_rounds=3)  # fmt: skip
        task = stack.call(lambda: svc.tasks.create(name="t", model_sha256=model.sha256,
                                                   spec=spec, actor="t"))  # fmt: skip
        token = stack.call(lambda: svc.enrollment.create_token(actor="t"))
        config = tmp_path / "device.toml"
        config.write_text(
            "[device]\n"
            f"data_dir = '{tmp_path / 'device'}'\n"
            f"coordinator_url = '{stack.http_url}'\n"
            f"task_id = '{task.task_id}'\n"
            f"enrollment_token = '{token}'\n"
            "state = 'always'\n"
            "poll_s = 0.2\n"
            f"[data]\nx_shape = [64]\nimport_npz = '{tmp_path / 'examples.npz'}'\n"
        )
        proc = spawn([sys.executable, "-m", "fedrt", "device", "run", "--config", str(config),
                      "--status-every", "0.5"], name="device")  # fmt: skip
        stack.call(lambda: svc.tasks.act(task.task_id, "start", actor="t"))

        def completed() -> bool:
            for line in proc.log_path.read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("rounds_completed", 0) >= 1:
                    return True
            return False

        proc.wait_ready(completed, timeout=90)
        assert proc.stop() == 0
        rounds = stack.call(lambda: svc.store.list_rounds(task.task_id))
    assert any(r.status.value == "committed" for r in rounds)
    assert '"event": "stopped"' in proc.log_path.read_text()
