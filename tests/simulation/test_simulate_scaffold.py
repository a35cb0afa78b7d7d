"""fedrt simulate --strategy scaffold: SCAFFOLD end to end under SecAgg+ (real broker, LiteRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.model_export.manifest import Manifest
from fedrt.sdk.control_variate import VariateStore, variate_dir
from fedrt.simulation.runner import Report
from tests.support.simulate import simulate_small


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    root = tmp_path_factory.mktemp("sim-scaffold")
    report = simulate_small(
        root,
        per_round=3,
        rounds=3,
        partition="dirichlet:0.3",
        strategy="scaffold",
        learning_rate=0.05,
        seed=5,
    )
    return report, root


def test_scaffold_rounds_commit_and_learn(run: tuple[Report, Path]) -> None:
    rep, _ = run
    assert rep.completed
    assert rep.config["strategy"] == "scaffold"
    committed = [r for r in rep.rounds if r.status == "committed"]
    assert len(committed) >= 2
    assert rep.initial_accuracy is not None
    assert rep.final_accuracy is not None
    assert rep.final_accuracy > rep.initial_accuracy + 0.1


def test_the_export_takes_a_correction(run: tuple[Report, Path]) -> None:
    _, root = run
    manifests = [Manifest.load(p.parent) for p in root.glob("models/*/manifest.json")]
    assert manifests
    assert all(m.options.get("scaffold") for m in manifests)


def test_devices_keep_nonzero_variates_of_the_model_size(run: tuple[Report, Path]) -> None:
    _, root = run
    kept = [p for p in root.rglob("scaffold/*.npz") if ".pending" not in p.name]
    assert kept, "no device committed a control variate"
    manifest = Manifest.load(next(root.glob("models/*/manifest.json")).parent)
    for path in kept:
        store = VariateStore(path.parent, path.name.removesuffix(".npz"))
        c_i = store.load(manifest.weights)
        assert c_i.shape == (manifest.num_params,)
        assert np.all(np.isfinite(c_i))
        assert float(np.abs(c_i).max()) > 0.0
    assert variate_dir(root).name == "scaffold"
