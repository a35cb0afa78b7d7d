"""An async (FedBuff) task on the real stack: ``fedrt coordinator serve`` killed -9 between
commits, devices on LiteRT over Mosquitto. No committed version is lost, and commits go on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedrt.simulation import datasets
from fedrt.simulation.runner import SimConfig, export_model
from tests.coordinator.crash_stack import CrashStack, crash_stack
from tests.support.process import until

__all__ = ["crash_stack"]  # the fixture


@pytest.mark.slow
def test_kill_9_between_async_commits_loses_no_committed_version(
    tmp_path: Path, crash_stack: CrashStack
) -> None:
    digits = datasets.load_digits(flat=True)
    model_dir = export_model(SimConfig(model="zoo:mlp", batch_size=16), digits, tmp_path)
    first = crash_stack.serve("coordinator-1")
    spec = {"mode": "async", "buffer_size": 2, "max_concurrent": 3, "max_staleness": 20,
            "secagg": False, "goal_count": 2, "min_reports": 2, "eval_every": 0,
            "training_deadline_s": 30.0, "secagg_stage_deadline_s": 10.0,
            "max_rounds": 200}  # fmt: skip
    task_id = crash_stack.start_task("async-crash", model_dir, spec, digits, 3)

    def committed() -> list[dict[str, Any]]:
        return crash_stack.committed(task_id)

    def two_commits() -> list[dict[str, Any]] | None:
        done = committed()
        return done if len(done) >= 2 else None

    before = until(two_commits, 60, "two async commits")
    assert all(r["detail"]["mode"] == "async" for r in before)
    first.kill()

    second = crash_stack.serve("coordinator-2")
    rounds = {r["round_no"]: r for r in crash_stack.rounds(task_id)}
    for r in before:  # every version committed before the kill is there, unchanged
        assert rounds[r["round_no"]]["status"] == "committed"
        assert rounds[r["round_no"]]["result_sha256"] == r["result_sha256"]
    assert all(r["status"] != "running" for r in rounds.values())
    last = max(rounds)

    def new_commit() -> list[dict[str, Any]]:
        return [r for r in committed() if r["round_no"] > last]

    after = until(new_commit, 60, "an async commit after the restart")
    assert after[0]["detail"]["mode"] == "async"
    assert second.stop() == 0
