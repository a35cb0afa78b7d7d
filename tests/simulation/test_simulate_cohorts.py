"""SecAgg+ in cohorts over the real stack: Mosquitto, the coordinator, devices on LiteRT."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fedrt.coordinator.selection.cohort_split import DEFAULT_COHORT_SIZE
from fedrt.errors import UsageError
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
        # The round's one instance ran both cohorts; none was left out.
        assert r.instance == "sim-1"
        assert r.cohort_owners == [
            {"index": 0, "instance": "sim-1"},
            {"index": 1, "instance": "sim-1"},
        ]
        assert r.reported == r.selected == 10
    assert report.final_accuracy is not None
    assert report.final_accuracy > report.initial_accuracy  # type: ignore[operator]
    write_report(report, tmp_path / "r.json")
    rows = json.loads((tmp_path / "r.json").read_text())["rounds"]
    assert [(r["cohorts"], r["cohorts_committed"]) for r in rows] == [(2, 2), (2, 2)]
    assert [len(r["cohort_owners"]) for r in rows] == [2, 2]


def test_the_task_gets_the_cohort_size_and_a_stage_deadline_sized_from_the_round() -> None:
    big = SimConfig(devices=1300, per_round=1000, partition="iid", cohort_size=250)
    spec = big.task_spec()
    assert spec.cohort_size == 250
    # Simulated devices share the cores: 5 s + 25 ms per device of the round.
    assert spec.secagg_stage_deadline_s == pytest.approx(30.0)
    assert spec.training_deadline_s == pytest.approx(60.0)
    assert SimConfig(per_round=10).task_spec().secagg_stage_deadline_s == pytest.approx(5.25)
    assert SimConfig(per_round=10, stage_s=2.0).task_spec().secagg_stage_deadline_s == 2.0
    assert SimConfig().task_spec().cohort_size == DEFAULT_COHORT_SIZE
    # Check-in: 10 s + 30 ms per device, capped below the devices' own 60 s check-in timeout.
    assert spec.checkin_deadline_s == pytest.approx(40.0)
    assert SimConfig(per_round=10).task_spec().checkin_deadline_s == pytest.approx(10.3)
    assert SimConfig(devices=5000, per_round=4000).checkin_deadline_s == pytest.approx(55.0)
    assert SimConfig(per_round=10, checkin_s=3.0).task_spec().checkin_deadline_s == 3.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cohort_size": 4}, "--cohort-size"),
        ({"stage_s": 0.0}, "--stage-deadline"),
        ({"checkin_s": 70.0}, "check-in deadline"),
    ],
)
def test_bad_cohort_and_deadline_options_are_usage_errors(
    options: dict[str, float], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        SimConfig(**options)  # type: ignore[arg-type]


def test_large_fleets_run_their_devices_in_processes_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert SimConfig(devices=1300, per_round=1000).device_process_count == 2
    assert SimConfig(devices=499, per_round=100).device_process_count == 1
    assert SimConfig(devices=1300, per_round=1000, device_processes=1).device_process_count == 1
    # Personalized models are evaluated on the devices' own files: in this process only.
    personal = SimConfig(devices=1300, per_round=1000, personal_layers=1, holdout=0.2)
    assert personal.device_process_count == 1
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert SimConfig(devices=1300, per_round=1000).device_process_count == 4
    with pytest.raises(UsageError, match="--device-processes"):
        SimConfig(devices=1300, per_round=1000, device_processes=2, personal_layers=1, holdout=0.2)
