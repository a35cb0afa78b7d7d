"""fedrt simulate --personal-layers N and --finetune-steps K end to end (real broker, LiteRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.cli import build_parser
from fedrt.errors import UsageError
from fedrt.simulation.cli import _config
from fedrt.simulation.runner import Report, SimConfig
from tests.support.simulate import simulate_small

LOGITS = ["logits_kernel", "logits_bias"]  # zoo:mlp's last layer


def test_the_command_line_reaches_the_task_spec() -> None:
    argv = ["simulate", "--personal-layers", "1", "--finetune-steps", "5", "--holdout", "0.2"]
    config = _config(build_parser("simulate").parse_args(argv))
    spec = config.task_spec()
    assert (spec.personal_last_layers, spec.finetune_steps, spec.holdout) == (1, 5, 0.2)
    assert spec.personal_layers == []
    plain = SimConfig().task_spec()
    assert (plain.personal_last_layers, plain.finetune_steps) == (0, 0)


@pytest.mark.parametrize("options", [{"personal_layers": 1}, {"finetune_steps": 3}])
def test_personalization_needs_a_held_out_share(options: dict[str, int]) -> None:
    with pytest.raises(UsageError, match="--holdout"):
        SimConfig(**options)  # type: ignore[arg-type]


def _run(tmp_path: Path, **options: object) -> tuple[Report, Path]:
    report = simulate_small(
        tmp_path,
        per_round=3,
        rounds=2,
        partition="shards:2",
        learning_rate=0.1,
        local_epochs=2,
        holdout=0.25,
        seed=11,
        **options,
    )
    return report, tmp_path


@pytest.fixture(scope="module")
def fedper(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    return _run(tmp_path_factory.mktemp("sim-fedper"), personal_layers=1, eval_every=2)


@pytest.mark.slow
def test_personal_layers_stay_on_each_device_and_are_evaluated_there(
    fedper: tuple[Report, Path],
) -> None:
    rep, data_dir = fedper
    assert rep.completed
    committed = [r for r in rep.rounds if r.status == "committed"]
    assert len(committed) >= 2, [(r.round, r.status, r.reason) for r in rep.rounds]
    # Each device trained and kept its own copy of the last layer: no two alike.
    kept = sorted(data_dir.glob("devices/*/device-*/personal/*.npz"))
    assert len(kept) >= 2
    biases = []
    for path in kept:
        with np.load(path) as data:
            assert sorted(data.files) == sorted(LOGITS)
            biases.append(np.array(data["logits_bias"]))
    assert all(not np.array_equal(a, b) for i, a in enumerate(biases) for b in biases[i + 1 :])
    # The evaluation round reports the personalized models, and after the run every device's
    # personalized model was evaluated on its own held-out share.
    evaluated = [r for r in committed if r.federated_accuracy is not None]
    assert evaluated
    assert evaluated[-1].personalized_accuracy is not None
    result = rep.personalization
    assert result is not None
    assert result["devices"] == 4
    assert result["personal_layers"] == LOGITS
    for model in ("global", "personalized"):
        figures = result[model]
        assert 0.0 <= figures["worst_decile_accuracy"] <= figures["mean_device_accuracy"] <= 1.0
    # The global model's last layer never trained: each device's own does far better.
    assert result["personalized"]["mean_device_accuracy"] > result["global"]["mean_device_accuracy"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    return _run(tmp_path_factory.mktemp("sim-finetune"), finetune_steps=5)


@pytest.mark.slow
def test_finetuning_is_evaluated_per_device_and_leaves_no_personal_layers(
    finetuned: tuple[Report, Path],
) -> None:
    rep, data_dir = finetuned
    assert rep.completed
    assert not list(data_dir.glob("devices/*/device-*/personal/*.npz"))
    result = rep.personalization
    assert result is not None
    assert (result["devices"], result["finetune_steps"], result["personal_layers"]) == (4, 5, [])
    g, p = result["global"], result["personalized"]
    assert 0.0 <= g["mean_device_accuracy"] <= 1.0
    assert 0.0 <= p["mean_device_accuracy"] <= 1.0
    # Five steps on a device's own two labels move its model: the figures differ.
    assert p != g
