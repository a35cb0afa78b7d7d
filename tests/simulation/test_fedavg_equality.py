"""With SecAgg off, the committed model is FedAvg of the devices' own updates."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fedrt.coordinator.models import BlobStore
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import read_weights
from fedrt.protocol.quantize import clip_l2
from fedrt.simulation.runner import SimConfig, Simulation


def _flat(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([w.reshape(-1) for w in weights]).astype(np.float64)


def test_committed_model_is_fedavg_of_the_device_updates(tmp_path: Path) -> None:
    config = SimConfig(devices=4, per_round=4, rounds=1, model="zoo:mlp", partition="iid",
                       bits=8, secagg=False, seed=5, broker="mosquitto", data_dir=tmp_path,
                       time_limit_s=120)  # fmt: skip
    sim = Simulation(config, out=io.StringIO())
    report = sim.run()
    assert report.rounds[0].status == "committed"
    assert sim.fleet is not None
    assert sim.stack is not None
    updates = [u for d in sim.fleet.devices for u in d.updates if u[0] == 1]
    assert len(updates) == report.rounds[0].reported == 4

    blobs = BlobStore(sim.stack.directory / "coordinator" / "artifacts")
    sha = report.versions[0]["sha256"]
    models = sorted((config.data_dir / "models").iterdir())
    manifest = Manifest.load(models[0])
    before = _flat(read_weights(manifest.verify_model_file(models[0]).read_bytes(), manifest))
    after = _flat(read_weights(blobs.read(sha), manifest))

    # Independently: FedAvg weights min(n, cap) / cap over the clipped deltas (server lr 1).
    cap = 1000
    weights = np.array([min(n, cap) / cap for _, _, n in updates])
    deltas = np.stack([clip_l2(np.asarray(d), config.clip_norm) for _, d, _ in updates])
    expected = (weights[:, None] * deltas).sum(axis=0) / weights.sum()
    moved = after - before
    relative = np.linalg.norm(moved - expected) / np.linalg.norm(expected)
    print(f"relative distance to FedAvg: {relative:.4f}")
    assert relative < 0.05  # 8-bit rotated quantization of each update
    assert np.linalg.norm(expected) > 0
