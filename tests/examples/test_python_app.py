"""examples/python_app: the app embeds a Device and takes part in a round a real coordinator
(its own process, on a real Mosquitto) commits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import SpawnFn
from tests.sdk.served_coordinator import Broker, serve_coordinator, until

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "python_app" / "app.py"
MODEL = ROOT / "device_tests" / "fixtures" / "mlp"


def test_the_app_takes_part_in_a_committed_round(
    tmp_path: Path, spawn: SpawnFn, mosquitto: Broker
) -> None:
    coordinator = serve_coordinator(spawn, mosquitto.url, tmp_path / "coordinator")
    task_id = coordinator.start_task(MODEL)
    app = spawn([sys.executable, str(APP), "--coordinator", coordinator.url,
                 "--token", coordinator.token(), "--model", str(MODEL),
                 "--data-dir", str(tmp_path / "app-data"), "--task", task_id,
                 "--rounds", "1", "--timeout", "45", "--poll-s", "0.2"],
                name="app", cwd=ROOT)  # fmt: skip
    assert app.proc is not None
    assert app.proc.wait(timeout=50) == 0, app.log_tail()
    lines = [json.loads(line) for line in app.log_path.read_text().splitlines()
             if line.startswith('{"app"')]  # fmt: skip
    events = [line["event"] for line in lines if line["app"] == "event"]
    assert events[:3] == ["checked_in", "training_started", "update_sent"], events
    ended = [line for line in lines if line.get("event") == "round_ended"]
    assert ended
    assert ended[0]["reason"] == "ROUND_COMPLETE"
    done = [line for line in lines if line["app"] == "done"]
    assert done
    assert done[0]["rounds_completed"] == 1
    assert done[0]["bytes_up"] > 0
    enrolled = next(line for line in lines if line["app"] == "enrolled")
    assert enrolled["schema"] == "x float32[12], y int32[]"
    committed = until(lambda: coordinator.committed(task_id), 10, "the committed round")
    assert committed[0]["round_no"] == ended[0]["round_id"]
