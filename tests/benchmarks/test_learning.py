"""``fedrt bench learning``: a tiny real run's table and JSON, cells marked n/a where this build
lacks their simulate option, and the figures read from simulate's report."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedrt.benchmarks import learning
from fedrt.errors import UsageError

CELL = {c.name: c for c in learning.CELLS}


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    root = argparse.ArgumentParser()
    learning.register(root.add_subparsers())
    return root.parse_args(["learning", "--out", str(tmp_path), *extra])


def test_a_tiny_run_prints_the_json_of_its_one_cell(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedrt", "bench", "learning", "--devices", "4", "--per-round",
         "2", "--rounds", "2", "--model", "zoo:mlp", "--cells", "fedavg", "--json",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(done.stdout)
    assert document["config"]["devices"] == 4
    [cell] = document["cells"]
    assert (cell["cell"], cell["partition"], cell["status"]) == ("fedavg", "dirichlet:0.1", "ok")
    assert cell["committed"] == cell["rounds"] == 2
    assert 0.0 <= cell["accuracy_mid"] <= 1.0
    assert 0.0 <= cell["accuracy_final"] <= 1.0
    assert cell["rounds_to_target"] is None or 1 <= cell["rounds_to_target"] <= 2
    assert "--secagg" in cell["command"]
    assert json.loads((tmp_path / "learning.json").read_text()) == document
    table = (tmp_path / "table.md").read_text()
    assert "| FedAvg | " in table
    assert "| method | rounds to 0.90 | acc @1 | acc @2 |" in table
    # The same algorithm in plain numpy on the same partition, beside it.
    [reference] = document["reference"]
    assert reference["algorithm"] == "fedavg"
    assert 0.0 <= reference["accuracy_final"] <= 1.0
    assert "plain numpy reference" in table


def test_cells_without_their_simulate_option_are_not_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A build whose simulate knows neither --fedprox-mu nor SCAFFOLD nor personalization.
    monkeypatch.setattr(learning, "simulate_options", lambda: (frozenset(), frozenset({"fedavg"})))
    args = _args(tmp_path, "--cells", "fedprox,scaffold,fedper", "--json", "--no-reference")
    assert learning.run(args) == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert [(c["cell"], c["status"]) for c in cells] == [
        ("fedprox", learning.NOT_AVAILABLE),
        ("scaffold", learning.NOT_AVAILABLE),
        ("fedper", learning.NOT_AVAILABLE),
    ]
    assert list(tmp_path.glob("*.json")) == [tmp_path / "learning.json"]  # nothing ran
    assert "| SCAFFOLD | n/a (not available) |" in (tmp_path / "table.md").read_text()


def test_this_build_offers_every_cell() -> None:
    flags, strategies = learning.simulate_options()
    assert {"--rounds", "--partition", "--secagg"} <= flags
    assert learning.available(CELL["fedavg"], flags, strategies)
    assert learning.available(CELL["fedprox"], flags, strategies)
    assert not learning.available(CELL["fedprox"], flags - {"--fedprox-mu"}, strategies)
    assert not learning.available(CELL["scaffold"], flags, strategies - {"scaffold"})


def _row(round_no: int, accuracy: float | None, **figures: float) -> dict[str, Any]:
    return {"round": round_no, "status": "committed", "accuracy": accuracy, **figures}


def test_the_figures_come_from_the_rounds_of_the_report() -> None:
    accuracies = [0.3, 0.6, 0.85, 0.91, 0.89, 0.93]
    report = {"rounds": [_row(i + 1, a) for i, a in enumerate(accuracies)]}
    row = learning.cell_row(CELL["fedavg"], report, rounds=6, target=0.9)
    assert row["rounds_to_target"] == 4
    assert row["accuracy_mid"] == pytest.approx(0.85)
    assert row["accuracy_final"] == pytest.approx(0.93)
    assert (
        learning.cell_row(CELL["fedavg"], report, rounds=6, target=0.95)["rounds_to_target"] is None
    )


def test_shards_cells_read_device_figures() -> None:
    rows = [_row(1, 0.5), _row(2, 0.6), _row(3, None, federated_accuracy=0.55,
                                              worst_decile_accuracy=0.2)]  # fmt: skip
    glob = learning.cell_row(CELL["global"], {"rounds": rows}, rounds=2, target=0.9)
    assert (glob["mean_device_accuracy"], glob["worst_decile_accuracy"]) == (0.55, 0.2)
    assert glob["mean_weighted"] is True
    personal = {
        "global": {"mean_device_accuracy": 0.5, "worst_decile_accuracy": 0.1},
        "personalized": {"mean_device_accuracy": 0.8, "worst_decile_accuracy": 0.6},
    }
    per = learning.cell_row(CELL["fedper"], {"rounds": rows, "personalization": personal},
                            rounds=2, target=0.9)  # fmt: skip
    assert (per["mean_device_accuracy"], per["worst_decile_accuracy"]) == (0.8, 0.6)
    assert per["global_mean_device_accuracy"] == 0.5
    lines = learning.targets([glob | {"status": "ok"}, per | {"status": "ok"}])
    assert lines == ["target FedPer mean >= global + 0.05: met (0.800 vs 0.550)"]
    # The fine-tuning run's global model (plain FedAvg's, each device counted once) wins.
    tuned = {"cell": "finetune", "status": "ok", "global_mean_device_accuracy": 0.78}
    lines = learning.targets([glob | {"status": "ok"}, per | {"status": "ok"}, tuned])
    assert lines == ["target FedPer mean >= global + 0.05: not met (0.800 vs 0.780)"]


def test_the_evaluation_round_follows_the_last_training_round() -> None:
    assert learning.eval_every(60, 10) == 10
    assert learning.eval_every(2, 10) == 2
    assert learning.eval_every(25, 10) == 5
    assert learning.eval_every(7, 10) == 7


def test_unknown_cells_are_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--cells"):
        learning.run(_args(tmp_path, "--cells", "fedavg,fedsgd"))
