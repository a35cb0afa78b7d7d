"""``fedrt simulate --coordinators N --store postgresql://...``: instances as processes of
their own on a real PostgreSQL and Mosquitto; ``--chaos kill-coordinator`` kills the owner."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fedrt.errors import UsageError
from fedrt.simulation.runner import SimConfig, Simulation, write_report
from fedrt.simulation.stack import mosquitto_available
from tests.support.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]


@pytest.mark.slow
def test_two_instances_run_the_rounds_and_one_takes_over_when_the_owner_dies(
    tmp_path: Path, postgres_url: str
) -> None:
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto)")
    config = SimConfig(
        devices=8,
        per_round=6,
        rounds=4,
        model="zoo:mlp",
        partition="iid",
        seed=3,
        broker="mosquitto",
        coordinators=2,
        store=postgres_url,
        chaos=("kill-coordinator@2",),
        data_dir=tmp_path / "sim",
        time_limit_s=400,
    )
    report = Simulation(config, out=io.StringIO()).run()
    (event,) = report.chaos
    assert event["ok"], event
    killed = event["what"].split()[3]
    assert event["failover_s"] is not None
    statuses = {r.round: (r.status, r.instance) for r in report.rounds}
    assert statuses[2] == ("abandoned", killed)
    later = [r for r in report.rounds if r.round > 2 and r.status == "committed"]
    assert later
    assert all(r.instance not in (None, killed) for r in later)
    write_report(report, tmp_path / "r.json")
    rows = json.loads((tmp_path / "r.json").read_text())["rounds"]
    assert {row["instance"] for row in rows} == {"sim-1", "sim-2"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"coordinators": 2}, "needs --store"),
        ({"coordinators": 2, "store": "postgresql://x/y", "broker": "embedded"}, "broker"),
        ({"store": "mysql://x/y"}, "postgresql"),
        ({"coordinators": 0}, "--coordinators"),
    ],
)
def test_bad_instance_settings_are_usage_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SimConfig(devices=4, per_round=2, **settings)  # type: ignore[arg-type]


def test_kill_coordinator_needs_several_instances(tmp_path: Path) -> None:
    from fedrt.simulation.chaos import ChaosRunner, parse_chaos
    from fedrt.simulation.stack import LocalStack

    runner = ChaosRunner(LocalStack(tmp_path), [parse_chaos("kill-coordinator@1")], lambda: 0)
    with pytest.raises(UsageError, match="--coordinators 2"):
        runner.check("mosquitto")
