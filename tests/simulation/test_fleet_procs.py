"""``simulation.fleet_procs``: a device process's log and status when it is stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from fedrt.simulation.datasets import Dataset
from fedrt.simulation.fleet_procs import ProcessFleet

_WAIT_S = 60.0


def test_a_stopped_device_process_logs_why_as_the_run_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its log is set up as a command's (here JSON lines, from FEDRT_LOG_FORMAT), and one
    record tells why it stopped; its last status says it is done."""
    monkeypatch.setenv("FEDRT_LOG_FORMAT", "json")
    monkeypatch.setenv("FEDRT_LOG_LEVEL", "WARNING")
    train = Dataset("tiny", np.zeros((4, 2), np.float32), np.zeros(4, np.int32), 2)
    fleet = ProcessFleet(
        tmp_path,
        processes=1,
        tokens=lambda n: [f"token-{i}" for i in range(n)],
        train=train,
        parts=[[0, 1], [2, 3]],
        settings={
            "coordinator_url": "http://127.0.0.1:9",  # nothing there: enrolling fails
            "task_id": "t1",
            "mqtt_protocol": 5,
            "dropout": 0.0,
            "seed": 1,
            "poll_s": 1.0,
            "devices_per_thread": 2,
            "train_seconds": 0.0,
            "availability": "always",
            "speed": 1.0,
            "time_limit_s": 60.0,
            "t0": time.time(),
            "sim_start": 0.0,
            "enroll_workers": 1,
        },
    )
    fleet.start_all()
    try:
        deadline = time.monotonic() + _WAIT_S
        while not fleet.statuses() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fleet.statuses(), "the device process wrote no status"
    finally:
        fleet.stop_all()
    last = json.loads((tmp_path / "worker-0.status.json").read_text())
    assert (last["done"], last["stopped"]) == (True, "SIGTERM")
    lines = (tmp_path / "worker-0.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    stops = [r for r in records if r["message"].startswith("device process 0 stops")]
    assert [r["message"] for r in stops] == ["device process 0 stops: SIGTERM"]
    assert stops[0]["level"] == "WARNING"
