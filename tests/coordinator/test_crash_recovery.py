"""Crashes on the real stack: ``fedrt coordinator serve`` killed -9 mid-round, devices on LiteRT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedrt.simulation import datasets
from fedrt.simulation.runner import SimConfig, export_model
from tests.coordinator.crash_stack import CrashStack, crash_stack, request
from tests.support.process import until

__all__ = ["crash_stack"]  # the fixture


def test_kill_9_mid_round_keeps_history_abandons_the_round_and_commits_a_new_one(
    tmp_path: Path, crash_stack: CrashStack
) -> None:
    digits = datasets.load_digits(flat=True)
    model_dir = export_model(SimConfig(model="zoo:mlp", batch_size=16), digits, tmp_path)
    base = crash_stack.base
    first = crash_stack.serve("coordinator-1")
    # Three wanted, two devices: every round waits out its check-in deadline, which keeps a
    # round open long enough to be killed in the middle of it.
    spec = {
        "goal_count": 3,
        "over_selection": 1.0,
        "min_reports": 2,
        "eval_every": 0,
        "secagg": False,
        "checkin_deadline_s": 3.0,
        "training_deadline_s": 20.0,
        "max_rounds": 50,
    }
    task_id = crash_stack.start_task("crash", model_dir, spec, digits, 2)

    def committed() -> list[dict[str, Any]]:
        return crash_stack.committed(task_id)

    before = until(committed, 30, "a first committed round")

    def open_round() -> dict[str, Any] | None:
        rounds = crash_stack.rounds(task_id)
        last = rounds[-1]
        return last if last["status"] == "running" and last["round_no"] > 1 else None

    victim = until(open_round, 20, "a round after the first to be open")
    first.kill()

    second = crash_stack.serve("coordinator-2")
    rounds = {r["round_no"]: r for r in crash_stack.rounds(task_id)}
    assert rounds[victim["round_no"]]["status"] == "abandoned"
    for r in before:
        assert rounds[r["round_no"]]["status"] == "committed"
        assert rounds[r["round_no"]]["result_sha256"] == r["result_sha256"]
    again = request(f"{base}/v1/tasks/{task_id}")
    assert again["status"] == "running"

    def new_commit() -> list[dict[str, Any]]:
        return [r for r in committed() if r["round_no"] > victim["round_no"]]

    until(new_commit, 30, "a round committed after the restart")
    assert second.stop() == 0
