"""Same seed, same result: two whole runs with SecAgg+ commit bit-identical models.

Every device takes part in every round (selection does not depend on who checked in first),
so what could differ between runs is the randomness of the updates and the coordinator:
both come from the seed, not from network timing.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fedrt.simulation.runner import Report, SimConfig, Simulation
from fedrt.simulation.stack import mosquitto_available


def _run(tmp: Path, seed: int, rounds: int = 2) -> Report:
    config = SimConfig(
        devices=4,
        per_round=4,
        rounds=rounds,
        model="zoo:mlp",
        partition="iid",
        bits=8,
        secagg=True,
        seed=seed,
        broker="mosquitto",
        data_dir=tmp,
        time_limit_s=180,
    )
    return Simulation(config, out=io.StringIO()).run()


def _models(report: Report) -> list[str]:
    return [str(v["sha256"]) for v in report.versions]


def test_same_seed_gives_the_same_models_and_another_seed_does_not(tmp_path: Path) -> None:
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto)")
    first = _run(tmp_path / "a", seed=11)
    again = _run(tmp_path / "b", seed=11)
    other = _run(tmp_path / "c", seed=12, rounds=1)
    for rep in (first, again):
        assert [r.status for r in rep.rounds] == ["committed", "committed"]
    assert [r.status for r in other.rounds] == ["committed"]
    assert _models(first) == _models(again)
    assert [r.accuracy for r in first.rounds] == [r.accuracy for r in again.rounds]
    assert _models(other)[0] != _models(first)[0]
