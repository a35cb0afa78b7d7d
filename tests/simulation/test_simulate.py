"""A whole small federated run: real Mosquitto, real coordinator, real devices on LiteRT."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fedrt.simulation.runner import Report, SimConfig, Simulation
from fedrt.simulation.stack import mosquitto_available


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, str]:
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto)")
    out = io.StringIO()
    config = SimConfig(
        devices=5,
        per_round=4,
        rounds=3,
        model="zoo:mlp",
        partition="iid",
        bits=8,
        secagg=True,
        dropout=0.25,
        seed=3,
        broker="mosquitto",
        data_dir=tmp_path_factory.mktemp("sim"),
        time_limit_s=240,
    )
    return Simulation(config, out=out).run(), out.getvalue()


def test_every_round_is_reported_with_consistent_numbers(report: tuple[Report, str]) -> None:
    rep, _ = report
    assert rep.completed
    assert rep.broker == "mosquitto"
    assert [r.round for r in rep.rounds] == [1, 2, 3]
    committed = [r for r in rep.rounds if r.status == "committed"]
    assert len(committed) >= 2
    for r in committed:
        assert r.selected >= r.reported >= 2  # the SecAgg+ threshold of this config
        assert r.bytes_up > 0
        assert r.bytes_down > 0
        assert r.accuracy is not None
        assert 0.0 <= r.accuracy <= 1.0
        assert r.model_sha256 is not None
    assert len(rep.versions) == len(committed)
    assert rep.config["secagg"] is True


def test_training_beats_chance_and_improves(report: tuple[Report, str]) -> None:
    rep, _ = report
    assert rep.initial_accuracy is not None
    assert rep.final_accuracy is not None
    assert rep.final_accuracy > 0.3  # ten classes: chance is 0.1
    assert rep.final_accuracy > rep.initial_accuracy + 0.15


def test_progress_lines_are_printed(report: tuple[Report, str]) -> None:
    _, text = report
    lines = [line for line in text.splitlines() if "round " in line and "/3" in line]
    assert len(lines) == 3
    assert "acc" in lines[-1]


def test_report_json_has_the_contract_fields(report: tuple[Report, str], tmp_path: Path) -> None:
    import json

    from fedrt.simulation.runner import write_report

    rep, _ = report
    write_report(rep, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    for key in ("config", "rounds", "versions"):
        assert key in data
    for key in ("round", "accuracy", "loss", "selected", "reported", "dropped", "bytes_up",
                "bytes_down", "seconds"):  # fmt: skip
        assert key in data["rounds"][0]
