"""Task specs decode strictly; lifecycle moves are audited and illegal ones change nothing."""

from __future__ import annotations

import pytest

from fedrt.coordinator.errors import BadRequestError, IllegalTransition
from fedrt.coordinator.privacy.config import DpMode
from fedrt.coordinator.records import TaskRecord, TaskStatus
from fedrt.coordinator.store import MemoryStore
from fedrt.coordinator.tasks import TaskManager, TaskSpec
from tests.coordinator.store_conformance import model, sha


def test_spec_round_trips_and_defaults_are_valid() -> None:
    spec = TaskSpec.from_json({"goal_count": 20, "min_reports": 15, "learning_rate": 1})
    assert spec.learning_rate == 1.0
    assert TaskSpec.from_json(spec.to_json()) == spec
    assert TaskSpec().secagg is True
    plain = TaskSpec.from_json({"strategy": "krum", "secagg": False})
    assert plain.strategy == "krum"


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"goal_count": True},
        {"learning_rate": float("inf")},
        {"over_selection": 0.9},
        {"quantization_bits": 17},
        {"strategy": "trimmed_mean"},
        {"secagg_threshold": 1.0},
    ],
)
def test_bad_specs(data: object) -> None:
    with pytest.raises(BadRequestError):
        TaskSpec.from_json(data)


def test_dp_spec_round_trips() -> None:
    raw = {
        "dp": {
            "mode": "central",
            "target_epsilon": 4,
            "delta": 1e-5,
            "budget_epsilon": 8,
            "clip": {"adaptive": {"quantile": 0.5, "lr": 0.2}},
        }
    }
    spec = TaskSpec.from_json(raw)
    assert spec.dp.mode is DpMode.CENTRAL
    assert spec.dp.target_epsilon == 4
    assert spec.to_json()["dp"]["clip"]["adaptive"]["quantile"] == 0.5
    assert TaskSpec.from_json(spec.to_json()) == spec
    assert TaskSpec().to_json()["dp"] == {"mode": "none", "delta": 1e-5, "clip": {"fixed": 1.0}}


@pytest.mark.parametrize(
    ("dp", "says"),
    [
        ("central", "dp must be a table"),
        ({"mode": "local"}, "mode must be one of"),
        ({"mode": "central"}, "exactly one of noise_multiplier or target_epsilon"),
        ({"mode": "central", "noise_multiplier": 1, "target_epsilon": 2}, "exactly one"),
        ({"mode": "none", "budget_epsilon": 3}, "cannot be set"),
        ({"mode": "central", "noise_multiplier": 1, "delta": 0.5}, "below 1 / population"),
        ({"mode": "central", "noise_multiplier": 1, "clip": {"fixed": -1}}, "clip.fixed"),
        ({"mode": "central", "noise_multiplier": 1, "clip": {"fixed": 1, "adaptive": {}}}, "clip"),
        ({"mode": "central", "noise_multiplier": 1, "colour": 1}, "unknown key"),
        ({"mode": "distributed", "noise_multiplier": 1}, "secagg = true"),
        ({"mode": "central", "target_epsilon": 9, "budget_epsilon": 8}, "exceeds budget"),
    ],
)
def test_bad_dp_specs_say_why(dp: object, says: str) -> None:
    data: dict[str, object] = {"dp": dp}
    if isinstance(dp, dict) and dp.get("mode") == "distributed":
        data["secagg"] = False
    with pytest.raises(BadRequestError, match=says):
        TaskSpec.from_json(data)


def test_adaptive_clipping_needs_secagg() -> None:
    dp = {"mode": "central", "noise_multiplier": 1.0, "clip": {"adaptive": {"quantile": 0.5}}}
    with pytest.raises(BadRequestError, match="adaptive clipping needs secagg"):
        TaskSpec.from_json({"secagg": False, "dp": dp})
    assert TaskSpec.from_json({"dp": dp}).dp.enabled


def test_dp_needs_a_mean() -> None:
    dp = {"mode": "central", "noise_multiplier": 1.0}
    with pytest.raises(BadRequestError, match="mean-based strategy"):
        TaskSpec.from_json({"strategy": "median", "secagg": False, "dp": dp})


def test_lifecycle_and_hook() -> None:
    store = MemoryStore()
    store.add_model(model("m0"))
    seen: list[TaskRecord] = []
    manager = TaskManager(store, clock=lambda: 5.0, on_change=seen.append)
    task = manager.create(name="t", model_sha256=sha("m0"), spec=TaskSpec(), actor="admin")
    assert manager.act(task.task_id, "start", actor="admin").status is TaskStatus.RUNNING
    with pytest.raises(IllegalTransition):
        manager.act(task.task_id, "resume", actor="admin")
    with pytest.raises(BadRequestError):
        manager.act(task.task_id, "explode", actor="admin")
    with pytest.raises(BadRequestError):
        manager.create(name="t", model_sha256=sha("m0"), spec=TaskSpec(), actor="a", task_id="a/b")
    assert [t.status for t in seen] == [TaskStatus.CREATED, TaskStatus.RUNNING]
    assert [e.action for e in store.list_audit()] == ["task.create", "task.start"]
    assert manager.spec(task.task_id) == TaskSpec()
