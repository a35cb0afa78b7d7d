"""An async (FedBuff) task on the real stack: ``fedrt coordinator serve`` killed -9 between
commits, devices on LiteRT over Mosquitto. No committed version is lost, and commits go on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.sdk.device import Device
from fedrt.simulation import datasets
from fedrt.simulation.runner import SimConfig, export_model
from tests.conftest import SpawnFn
from tests.coordinator.test_crash_recovery import TOKEN, _device, _request, _rounds, devices
from tests.support.process import ManagedProcess, free_port, http_ok, until

__all__ = ["devices"]  # the fixture, shared with test_crash_recovery


@pytest.mark.slow
def test_kill_9_between_async_commits_loses_no_committed_version(
    tmp_path: Path, spawn: SpawnFn, mosquitto: MosquittoBroker, devices: list[Device]
) -> None:
    digits = datasets.load_digits(flat=True)
    model_dir = export_model(SimConfig(model="zoo:mlp", batch_size=16), digits, tmp_path)
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "fedrt", "coordinator", "serve", "--pace-min-delay", "0.3",
            "--pace-spread", "0.5", "--data-dir", str(data), "--http", f"127.0.0.1:{port}",
            "--broker", mosquitto.url]  # fmt: skip
    env = {"FEDRT_ADMIN_TOKEN": TOKEN, "FEDRT_TICK_INTERVAL_S": "0.1"}

    def serve(name: str) -> ManagedProcess:
        proc = spawn(argv, name=name, env=env)
        proc.wait_ready(http_ok(f"{base}/healthz"))
        return proc

    first = serve("coordinator-1")
    spec = {"mode": "async", "buffer_size": 2, "max_concurrent": 3, "max_staleness": 20,
            "secagg": False, "goal_count": 2, "min_reports": 2, "eval_every": 0,
            "training_deadline_s": 30.0, "secagg_stage_deadline_s": 10.0,
            "max_rounds": 200}  # fmt: skip
    task = _request(
        f"{base}/v1/tasks", {"name": "async-crash", "model_dir": str(model_dir), "spec": spec}
    )
    task_id = task["task_id"]
    for i in range(3):
        token = _request(f"{base}/v1/enrollment-tokens", {})["token"]
        xs, ys = digits.x[i * 64 : (i + 1) * 64], digits.y[i * 64 : (i + 1) * 64]
        device = _device(tmp_path / f"device-{i}", base, task_id, xs, ys)
        device.enroll(token)
        device.start()
        devices.append(device)
    _request(f"{base}/v1/tasks/{task_id}/start", {})

    def committed() -> list[dict[str, Any]]:
        return [r for r in _rounds(base, task_id) if r["status"] == "committed"]

    def two_commits() -> list[dict[str, Any]] | None:
        done = committed()
        return done if len(done) >= 2 else None

    before = until(two_commits, 60, "two async commits")
    assert all(r["detail"]["mode"] == "async" for r in before)
    first.kill()

    second = serve("coordinator-2")
    rounds = {r["round_no"]: r for r in _rounds(base, task_id)}
    for r in before:  # every version committed before the kill is there, unchanged
        assert rounds[r["round_no"]]["status"] == "committed"
        assert rounds[r["round_no"]]["result_sha256"] == r["result_sha256"]
    assert all(r["status"] != "running" for r in rounds.values())
    last = max(rounds)

    def new_commit() -> list[dict[str, Any]]:
        return [r for r in committed() if r["round_no"] > last]

    after = until(new_commit, 60, "an async commit after the restart")
    assert after[0]["detail"]["mode"] == "async"
    assert second.stop() == 0
