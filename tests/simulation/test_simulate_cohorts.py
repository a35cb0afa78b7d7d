"""SecAgg+ in cohorts over the real stack: Mosquitto, the coordinator, devices on LiteRT."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fedrt.simulation.runner import SimConfig, Simulation, write_report
from fedrt.simulation.stack import mosquitto_available


@pytest.mark.slow
def test_rounds_in_two_cohorts_commit_with_both_cohort_sums(tmp_path: Path) -> None:
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto)")
    config = SimConfig(
        devices=10,
        per_round=10,
        rounds=2,
        model="zoo:mlp",
        partition="iid",
        bits=8,
        secagg=True,
        seed=5,
        broker="mosquitto",
        cohort_size=5,
        data_dir=tmp_path / "sim",
        time_limit_s=240,
    )
    report = Simulation(config, out=io.StringIO()).run()
    assert report.completed
    assert [r.round for r in report.rounds] == [1, 2]
    for r in report.rounds:
        assert r.status == "committed", r.reason
        assert (r.cohorts, r.cohorts_committed) == (2, 2)
        assert r.reported == r.selected == 10
    assert report.final_accuracy is not None
    assert report.final_accuracy > report.initial_accuracy  # type: ignore[operator]
    write_report(report, tmp_path / "r.json")
    rows = json.loads((tmp_path / "r.json").read_text())["rounds"]
    assert [(r["cohorts"], r["cohorts_committed"]) for r in rows] == [(2, 2), (2, 2)]
