"""The stack kill -9 tests share: ``fedrt coordinator serve`` on Mosquitto, LiteRT devices."""

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
from tests.conftest import SpawnFn
from tests.support.process import ManagedProcess, free_port, http_ok

TOKEN = "crash-admin-token-0123456789"
# The SDK's default timers (a 300 s check-in timeout, a 12-18 minute back-off): devices of the
# round the coordinator forgot learn of its restart from its new incarnation. Only the spread
# of their return is shortened (20 s by default), to keep the test quick.
TIMINGS = {"restart_spread": 1.0}


def request(url: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


class CrashStack:
    """One data dir and HTTP port that coordinator processes come and go on, and its devices."""

    def __init__(self, tmp_path: Path, spawn: SpawnFn, mosquitto: MosquittoBroker) -> None:
        self.tmp_path, self.spawn = tmp_path, spawn
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        # Devices sent away come back within a second (the default waits >= 60 s).
        self.argv = [sys.executable, "-m", "fedrt", "coordinator", "serve",
                     "--pace-min-delay", "0.3", "--pace-spread", "0.5",
                     "--data-dir", str(tmp_path / "data"), "--http", f"127.0.0.1:{port}",
                     "--broker", mosquitto.url]  # fmt: skip
        self.env = {"FEDRT_ADMIN_TOKEN": TOKEN, "FEDRT_TICK_INTERVAL_S": "0.1"}
        self.devices: list[Device] = []

    def serve(self, name: str) -> ManagedProcess:
        proc = self.spawn(self.argv, name=name, env=self.env)
        proc.wait_ready(http_ok(f"{self.base}/healthz"))
        return proc

    def start_task(
        self, name: str, model_dir: Path, spec: dict[str, Any], digits: datasets.Dataset, n: int
    ) -> str:
        """Create the task, enrol ``n`` devices (64 digits each) and start it: its id."""
        body = {"name": name, "model_dir": str(model_dir), "spec": spec}
        task_id: str = request(f"{self.base}/v1/tasks", body)["task_id"]
        for i in range(n):
            token = request(f"{self.base}/v1/enrollment-tokens", {})["token"]
            xs, ys = digits.x[i * 64 : (i + 1) * 64], digits.y[i * 64 : (i + 1) * 64]
            device = self._device(self.tmp_path / f"device-{i}", task_id, xs, ys)
            device.enroll(token)
            device.start()
            self.devices.append(device)
        request(f"{self.base}/v1/tasks/{task_id}/start", {})
        return task_id

    def rounds(self, task_id: str) -> list[dict[str, Any]]:
        out = request(f"{self.base}/v1/tasks/{task_id}/rounds")
        rounds = out["rounds"] if isinstance(out, dict) else out
        assert isinstance(rounds, list)
        return rounds

    def committed(self, task_id: str) -> list[dict[str, Any]]:
        return [r for r in self.rounds(task_id) if r["status"] == "committed"]

    def _device(self, directory: Path, task_id: str, x: np.ndarray, y: np.ndarray) -> Device:
        directory.mkdir(parents=True)
        shape = x.shape[1:]
        store = ExampleStore(directory / "examples.sqlite3", x_shape=shape, x_dtype=np.float32)
        store.extend(list(x.astype(np.float32)), list(y))
        config = DeviceConfig(
            data_dir=directory,
            coordinator_url=self.base,
            task_id=task_id,
            poll_s=0.2,
            participant=dict(TIMINGS),
        )
        state = ScriptedDeviceState([(0.0, idle_plugged_in())])
        return Device(config, store=store, device_state=state)


@pytest.fixture
def crash_stack(tmp_path: Path, spawn: SpawnFn, mosquitto: MosquittoBroker) -> Iterator[CrashStack]:
    stack = CrashStack(tmp_path, spawn, mosquitto)
    yield stack
    for device in stack.devices:
        device.stop()
