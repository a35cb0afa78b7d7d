"""Crashes on the real stack: ``fedrt coordinator serve`` killed -9 mid-round, devices on LiteRT."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.sdk.device import Device, DeviceConfig
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
from fedrt.simulation import datasets
from fedrt.simulation.runner import SimConfig, export_model
from tests.conftest import SpawnFn
from tests.support.process import ManagedProcess, free_port, http_ok, until

TOKEN = "crash-admin-token-0123456789"
# The SDK's default timers (a 300 s check-in timeout, a 12-18 minute back-off): devices of the
# round the coordinator forgot learn of its restart from its new incarnation. Only the spread
# of their return is shortened (20 s by default), to keep the test quick.
TIMINGS = {"restart_spread": 1.0}


def _request(url: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _rounds(base: str, task_id: str) -> list[dict[str, Any]]:
    out = _request(f"{base}/v1/tasks/{task_id}/rounds")
    rounds = out["rounds"] if isinstance(out, dict) else out
    assert isinstance(rounds, list)
    return rounds


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[list[Device]]:
    started: list[Device] = []
    yield started
    for device in started:
        device.stop()


def _device(directory: Path, base: str, task_id: str, x: np.ndarray, y: np.ndarray) -> Device:
    directory.mkdir(parents=True)
    store = ExampleStore(directory / "examples.sqlite3", x_shape=x.shape[1:], x_dtype=np.float32)
    store.extend(list(x.astype(np.float32)), list(y))
    config = DeviceConfig(
        data_dir=directory,
        coordinator_url=base,
        task_id=task_id,
        poll_s=0.2,
        participant=dict(TIMINGS),
    )
    return Device(config, store=store, device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]))


def test_kill_9_mid_round_keeps_history_abandons_the_round_and_commits_a_new_one(
    tmp_path: Path, spawn: SpawnFn, mosquitto: MosquittoBroker, devices: list[Device]
) -> None:
    digits = datasets.load_digits(flat=True)
    model_dir = export_model(SimConfig(model="zoo:mlp", batch_size=16), digits, tmp_path)
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    # Devices sent away come back within a second (the default waits >= 60 s).
    argv = [
        sys.executable,
        "-m",
        "fedrt",
        "coordinator",
        "serve",
        "--pace-min-delay",
        "0.3",
        "--pace-spread",
        "0.5",
        "--data-dir",
        str(data),
        "--http",
        f"127.0.0.1:{port}",
        "--broker",
        mosquitto.url,
    ]
    env = {"FEDRT_ADMIN_TOKEN": TOKEN, "FEDRT_TICK_INTERVAL_S": "0.1"}

    def serve(name: str) -> ManagedProcess:
        proc = spawn(argv, name=name, env=env)
        proc.wait_ready(http_ok(f"{base}/healthz"))
        return proc

    first = serve("coordinator-1")
    # Three wanted, two devices: every round waits out its check-in deadline, which keeps a
    # round open long enough to be killed in the middle of it.
    spec = {
        "goal_count": 3,
        "over_selection": 1.0,
        "min_reports": 2,
        "eval_every": 0,
        "secagg": False,
        "checkin_deadline_s": 3.0,
        "training_deadline_s": 20.0,
        "max_rounds": 50,
    }
    task = _request(
        f"{base}/v1/tasks", {"name": "crash", "model_dir": str(model_dir), "spec": spec}
    )
    task_id = task["task_id"]
    for i in range(2):
        token = _request(f"{base}/v1/enrollment-tokens", {})["token"]
        device = _device(
            tmp_path / f"device-{i}",
            base,
            task_id,
            digits.x[i * 64 : (i + 1) * 64],
            digits.y[i * 64 : (i + 1) * 64],
        )
        device.enroll(token)
        device.start()
        devices.append(device)
    _request(f"{base}/v1/tasks/{task_id}/start", {})

    def committed() -> list[dict[str, Any]]:
        return [r for r in _rounds(base, task_id) if r["status"] == "committed"]

    before = until(committed, 30, "a first committed round")

    def open_round() -> dict[str, Any] | None:
        rounds = _rounds(base, task_id)
        last = rounds[-1]
        return last if last["status"] == "running" and last["round_no"] > 1 else None

    victim = until(open_round, 20, "a round after the first to be open")
    first.kill()

    second = serve("coordinator-2")
    rounds = {r["round_no"]: r for r in _rounds(base, task_id)}
    assert rounds[victim["round_no"]]["status"] == "abandoned"
    for r in before:
        assert rounds[r["round_no"]]["status"] == "committed"
        assert rounds[r["round_no"]]["result_sha256"] == r["result_sha256"]
    again = _request(f"{base}/v1/tasks/{task_id}")
    assert again["status"] == "running"

    def new_commit() -> list[dict[str, Any]]:
        return [r for r in committed() if r["round_no"] > victim["round_no"]]

    until(new_commit, 30, "a round committed after the restart")
    assert second.stop() == 0
