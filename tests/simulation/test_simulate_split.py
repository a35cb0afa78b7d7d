"""``fedrt simulate --coordinators 2 --store postgresql://... --broker nats-cluster``: the
instances read the device topics in a NATS queue group, forward what the round's owner
needs to it over core NATS, and the rounds commit (``coordinator.broker.reading``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fedrt.simulation.runner import SimConfig, Simulation
from tests.support.nats import needs_nats
from tests.support.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]


@pytest.mark.slow
@needs_nats
def test_two_instances_split_the_check_ins_over_nats_and_rounds_commit(
    tmp_path: Path, postgres_url: str
) -> None:
    config = SimConfig(
        devices=8, per_round=6, rounds=2, model="zoo:mlp", partition="iid", seed=5,
        broker="nats-cluster", coordinators=2, store=postgres_url,
        data_dir=tmp_path / "sim", time_limit_s=400,
    )  # fmt: skip
    report = Simulation(config, out=io.StringIO()).run()
    assert [r.status for r in report.rounds] == ["committed", "committed"]
    logs = [p.read_text() for p in (tmp_path / "sim").glob("run-*/instances/sim-*/serve.log")]
    assert len(logs) == 2
    # Both read in the queue group; the owner of the rounds got check-ins the other received.
    assert all("device traffic: NATS queue group 'fedrt'" in log for log in logs)
