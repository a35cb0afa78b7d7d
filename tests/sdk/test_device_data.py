"""``fedrt device run`` and ``add-examples`` with the examples the model's train signature
declares: an LSTM language model over int32 tokens through a round a real coordinator commits,
examples appended by another process while the device runs, float targets for an mse model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fedrt.sdk.example_schema import ExampleSchema
from fedrt.sdk.trainer import LiteRtTrainer
from tests.conftest import SpawnFn
from tests.sdk.served_coordinator import Broker, serve_coordinator, until


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _tokens(path: Path, n: int, seed: int) -> Path:
    """n sequences of 6 token ids (int64, as numpy makes them) and each one's next token."""
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 20, size=(n, 6)), y=rng.integers(0, 20, size=n))
    return path


def test_lstm_language_model_trains_through_device_run(
    tmp_path: Path, spawn: SpawnFn, mosquitto: Broker, exported_lstm_lm: Path
) -> None:
    coordinator = serve_coordinator(spawn, mosquitto.url, tmp_path / "coordinator")
    task_id = coordinator.start_task(exported_lstm_lm)
    config = tmp_path / "device.toml"
    config.write_text(
        f"[device]\ndata_dir = '{tmp_path / 'device'}'\ncoordinator_url = '{coordinator.url}'\n"
        f"task_id = '{task_id}'\nenrollment_token = '{coordinator.token()}'\nstate = 'always'\n"
        f"poll_s = 0.2\n[data]\nmanifest = '{exported_lstm_lm / 'manifest.json'}'\n"
        f"import_npz = '{_tokens(tmp_path / 'first.npz', 8, seed=1)}'\n"
    )
    device = spawn([sys.executable, "-m", "fedrt", "device", "run", "--config", str(config),
                    "--status-every", "0.3"], name="device")  # fmt: skip

    def started() -> dict[str, Any] | None:
        lines = [e for e in _json_lines(device.log_path) if e["event"] == "started"]
        return lines[0] if lines else None

    first = until(started, 60, "the device to start", device)
    assert first["schema"] == "x int32[6], y int32[]"
    assert first["examples"] == 8
    # Another process appends while the device runs (and may be training on the store).
    added = subprocess.run(
        [sys.executable, "-m", "fedrt", "device", "add-examples", "--config", str(config),
         str(_tokens(tmp_path / "second.npz", 8, seed=2))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout.splitlines()[-1]) == {"event": "stored", "examples": 16}

    def trained_and_sees_both() -> bool:
        return any(e.get("rounds_completed", 0) >= 1 and e.get("examples") == 16
                   for e in _json_lines(device.log_path))  # fmt: skip

    until(trained_and_sees_both, 60, "a completed round and 16 examples", device)
    assert device.stop() == 0
    committed = coordinator.committed(task_id)
    assert [r["round_no"] for r in committed] == [1]


def test_float_targets_of_an_mse_model_train_from_the_store(
    tmp_path: Path, exported_mse_mlp: Path
) -> None:
    schema = ExampleSchema.from_manifest_file(exported_mse_mlp)
    assert schema.describe() == "x float32[3], y float32[2]"
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 3))
    y = x[:, :2] * 0.5  # float64 targets, stored as the model's float32
    with schema.open_store(tmp_path / "examples.sqlite3") as store:
        store.extend(*schema.check_arrays(x, y, "targets"))
        batch = store.batch(4)
    assert batch.y.shape == (4, 2)
    assert batch.y.dtype == np.float32
    np.testing.assert_allclose(batch.y, y[:4].astype(np.float32))
    trainer = LiteRtTrainer.open(exported_mse_mlp)
    try:
        losses = [trainer.train_step(batch.x, batch.y, lr=0.1) for _ in range(20)]
    finally:
        trainer.close()
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
