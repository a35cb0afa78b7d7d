"""SecAgg+ rounds over a 3-node NATS cluster started by the simulation, with node faults."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fedrt.errors import UsageError
from fedrt.simulation.runner import SimConfig, Simulation, write_report
from tests.support.nats import needs_nats


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the module: the exported model is cached there between runs."""
    return tmp_path_factory.mktemp("sim")


def _config(data_dir: Path, **overrides: object) -> SimConfig:
    base: dict[str, object] = {
        "devices": 5,
        "per_round": 4,
        "rounds": 2,
        "model": "zoo:mlp",
        "partition": "iid",
        "bits": 8,
        "secagg": True,
        "seed": 7,
        "broker": "nats-cluster",
        "data_dir": data_dir,
        "time_limit_s": 240,
    }
    base.update(overrides)
    return SimConfig(**base)  # type: ignore[arg-type]


# Both runs take 30-60 s on a loaded 2-core box (model export, 3 nodes, LiteRT devices): slow.
# The fast variants are tests/coordinator/test_nats_auth.py (a device round trip on the
# cluster) and test_nats_failover.py (a node killed under live clients).
@needs_nats
@pytest.mark.slow
def test_secagg_rounds_commit_over_the_nats_cluster(data_dir: Path) -> None:
    report = Simulation(_config(data_dir), out=io.StringIO()).run()
    assert report.broker == "nats-cluster"
    assert report.completed
    assert [r.status for r in report.rounds] == ["committed", "committed"], report.rounds
    assert all(r.reported >= 2 for r in report.rounds)  # the SecAgg+ threshold here
    assert report.final_accuracy is not None
    assert report.final_accuracy > report.initial_accuracy  # type: ignore[operator]
    # Nothing of the cluster outlives the run.
    assert not any(_alive(p) for p in data_dir.glob("run-*/nats/*/nats.pid"))


@needs_nats
@pytest.mark.slow
def test_rounds_go_on_when_a_node_dies_and_the_cluster_restarts(
    data_dir: Path, tmp_path: Path
) -> None:
    config = _config(
        data_dir,
        seed=8,
        rounds=4,
        chaos=("kill-broker-node@2", "restart-broker@3"),
        time_limit_s=400,
    )
    report = Simulation(config, out=io.StringIO()).run()
    assert report.completed
    assert [e["event"] for e in report.chaos] == ["kill-broker-node", "restart-broker"]
    assert all(e["ok"] for e in report.chaos), report.chaos
    assert "killed NATS node n1" in report.chaos[0]["what"]
    # The coordinator's link and every device connected again after each fault.
    for event in report.chaos:
        assert event["coordinator_back_s"] is not None, event
        assert event["devices_back_s"] is not None, event
    # Every round after each fault commits: clients moved to live nodes, sessions held.
    assert [r.round for r in report.rounds] == [1, 2, 3, 4]
    assert [r.status for r in report.rounds][-1] == "committed", report.rounds
    assert sum(r.status == "committed" for r in report.rounds) >= 3, report.rounds
    path = tmp_path / "report.json"
    write_report(report, path)
    assert json.loads(path.read_text())["chaos"][1]["event"] == "restart-broker"


def test_bad_chaos_specs_are_usage_errors(tmp_path: Path) -> None:
    for spec in ("kill-broker-node", "explode@2", "kill-broker-node@0"):
        with pytest.raises(UsageError, match="--chaos"):
            _config(tmp_path, chaos=(spec,))


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}").exists()
