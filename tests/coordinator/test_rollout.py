"""Gated rollout (rounds/rollout.py): a poisoned round's version never reaches devices, and
a task gated on federated evaluation rolls back by itself, audited."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.config import EvaluationConfig
from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.records import ModelStatus, RoundStatus
from fedrt.coordinator.rounds.rollout import STATE_KEY
from tests.coordinator.driver_harness import TASK
from tests.coordinator.rollout_harness import EvaluatingFleet, base_labelled, poison_in


def _audit(fleet: EvaluatingFleet, action: str) -> list[dict[str, object]]:
    entries = fleet.svc.store.list_audit(limit=1000)
    return [{"subject": e.subject, **e.detail} for e in entries if e.action == action]


def test_a_poisoned_round_is_stored_but_never_reaches_devices(tmp_path: Path) -> None:
    data = base_labelled(tmp_path / "held-out.npz")
    # SecAgg off, a plain mean: one hostile update of norm 100 moves the mean by 100 / 7.
    fleet = EvaluatingFleet(7, poison_in({2}), data)
    coordinator = fleet.open(tmp_path / "data", evaluation=EvaluationConfig(data=data))
    try:
        base = fleet.create_task(max_rounds=3, clip_norm=100.0, promote_margin=0.05)
        fleet.run_until(fleet.done)
        rounds = fleet.svc.store.list_rounds(TASK)
        good, bad = rounds[0].result_sha256, rounds[1].result_sha256
        assert good is not None
        assert bad is not None
        bad_status = fleet.svc.store.get_model(bad).status
        current = fleet.svc.store.get_task(TASK).model_sha256
        held_back = _audit(fleet, "model.held_back")
    finally:
        coordinator.close()
    assert [r.status for r in rounds] == [RoundStatus.COMMITTED] * 3
    first, second = rounds[0].detail, rounds[1].detail
    assert (first["promoted"], second["promoted"]) == (True, False)
    # The base model labelled the set, an honest round keeps it; the poisoned one breaks it.
    assert first["evaluation"]["accuracy"] >= 0.95
    assert second["evaluation"]["accuracy"] < 0.95 - 0.05
    assert bad_status is ModelStatus.CANDIDATE  # stored, not promoted
    # Round 3's plan names round 1's version, and no plan ever named the bad one.
    assert rounds[2].model_sha256 == good
    assert {sha for r, sha in fleet.planned if r == 3} == {good}
    assert bad not in {sha for _, sha in fleet.planned}
    assert {sha for r, sha in fleet.planned if r == 1} == {base}
    assert current != bad
    (entry,) = held_back
    assert entry["subject"] == bad
    assert entry["promoted"] == good
    assert entry["task_id"] == TASK
    assert entry["round_no"] == 2


def test_the_first_candidate_is_gated_against_the_base_model(tmp_path: Path) -> None:
    """The promoted version's own figures are taken at the first commit (no free pass)."""
    data = base_labelled(tmp_path / "held-out.npz")
    fleet = EvaluatingFleet(7, poison_in({1}), data)
    coordinator = fleet.open(tmp_path / "data", evaluation=EvaluationConfig(data=data))
    try:
        base = fleet.create_task(max_rounds=2, clip_norm=100.0, rollout_gate="held_out")
        fleet.run_until(fleet.done)
        rounds = fleet.svc.store.list_rounds(TASK)
    finally:
        coordinator.close()
    assert [r.detail["promoted"] for r in rounds] == [False, True]
    assert rounds[1].model_sha256 == base


def test_a_task_gated_on_federated_accuracy_rolls_back_by_itself(tmp_path: Path) -> None:
    data = base_labelled(tmp_path / "held-out.npz")
    # Rounds: 1 train, 2 evaluate (V1 is the good one), 3 train poisoned (V3 promoted: the
    # gate is federated), 4 evaluate (V3 falls far below V1: roll back), 5 train from V1.
    fleet = EvaluatingFleet(7, poison_in({3}), data)
    coordinator = fleet.open(tmp_path / "data")  # no held-out set on the coordinator
    try:
        fleet.create_task(max_rounds=5, clip_norm=100.0, eval_every=1, promote_margin=0.05,
                          rollout_gate="federated")  # fmt: skip
        fleet.run_until(fleet.done)
        rounds = fleet.svc.store.list_rounds(TASK)
        v1, v3 = rounds[0].result_sha256, rounds[2].result_sha256
        assert v1 is not None
        assert v3 is not None
        statuses = [fleet.svc.store.get_model(v).status for v in (v1, v3)]
        rollbacks = _audit(fleet, "model.rollback")
        state = fleet.svc.store.load_task_state(TASK, STATE_KEY)
    finally:
        coordinator.close()
    assert [r.status for r in rounds] == [RoundStatus.COMMITTED] * 5
    assert rounds[2].detail["promoted"] is True  # the federated gate lets every version out
    assert rounds[1].model_sha256 == v1
    assert rounds[3].model_sha256 == v3
    assert rounds[1].detail["evaluation"]["federated_accuracy"] >= 0.95
    assert rounds[3].detail["evaluation"]["federated_accuracy"] < 0.9
    # The promoted pointer moved back: round 5's plan names V1 again.
    assert rounds[4].model_sha256 == v1
    assert {sha for r, sha in fleet.planned if r == 5} == {v1}
    assert statuses == [ModelStatus.PROMOTED, ModelStatus.ROLLED_BACK]
    (entry,) = rollbacks
    assert entry["subject"] == TASK
    assert (entry["from"], entry["to"]) == (v3, v1)
    assert entry["reason"] == "federated_accuracy"
    assert entry["round_no"] == 4
    assert float(entry["federated_accuracy"]) < float(entry["good_accuracy"]) - 0.05  # type: ignore[arg-type]
    assert state is not None
    assert state["good"] == v1


def test_a_held_out_gate_the_coordinator_cannot_give_is_refused_at_creation(
    tmp_path: Path,
) -> None:
    fleet = EvaluatingFleet(7, poison_in(set()), base_labelled(tmp_path / "ok.npz"))
    coordinator = fleet.open(tmp_path / "data")
    try:
        with pytest.raises(BadRequestError, match="no held-out set"):
            fleet.create_task(rollout_gate="held_out")
    finally:
        coordinator.close()


def test_a_held_out_task_on_a_coordinator_without_the_set_holds_every_candidate_back(
    tmp_path: Path,
) -> None:
    """Restarted without --eval-data, nothing vouches for a candidate: none is promoted."""
    data = base_labelled(tmp_path / "held-out.npz")
    fleet = EvaluatingFleet(7, poison_in(set()), data)
    first = fleet.open(tmp_path / "data", evaluation=EvaluationConfig(data=data))
    base = fleet.create_task(max_rounds=1, clip_norm=100.0, rollout_gate="held_out")
    first.close()
    second = fleet.open(tmp_path / "data")
    try:
        fleet.run_until(fleet.done)
        (r,) = fleet.svc.store.list_rounds(TASK)
        current = fleet.svc.store.get_task(TASK).model_sha256
    finally:
        second.close()
    assert r.status is RoundStatus.COMMITTED
    assert r.detail["promoted"] is False
    assert current == base


def test_auto_leaves_a_model_the_set_does_not_fit_ungated(tmp_path: Path) -> None:
    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, x=np.zeros((4, 10), np.float32), y=np.zeros(4, np.int32))
    fleet = EvaluatingFleet(7, poison_in({1}), base_labelled(tmp_path / "held-out.npz"))
    coordinator = fleet.open(tmp_path / "data", evaluation=EvaluationConfig(data=narrow))
    try:
        fleet.create_task(max_rounds=1, clip_norm=100.0)  # rollout_gate auto
        fleet.run_until(fleet.done)
        (r,) = fleet.svc.store.list_rounds(TASK)
    finally:
        coordinator.close()
    assert r.detail["promoted"] is True  # not gated: the poisoned version went out
    assert r.detail["evaluation"] == {}


def test_the_good_version_outlives_a_restart(tmp_path: Path) -> None:
    data = base_labelled(tmp_path / "held-out.npz")
    fleet = EvaluatingFleet(7, poison_in({3}), data)
    first = fleet.open(tmp_path / "data")
    fleet.create_task(max_rounds=5, clip_norm=100.0, eval_every=1, promote_margin=0.05,
                      rollout_gate="federated")  # fmt: skip

    def evaluated() -> bool:  # round 2 (an evaluation of V1) has ended
        return any(r.round_no == 2 and r.ended_at for r in fleet.svc.store.list_rounds(TASK))

    fleet.run_until(evaluated)
    first.close()
    second = fleet.open(tmp_path / "data")  # a new process: the rollout's memory is the store
    try:
        fleet.run_until(fleet.done)
        rounds = {r.round_no: r for r in fleet.svc.store.list_rounds(TASK)}
        rollbacks = _audit(fleet, "model.rollback")
    finally:
        second.close()
    v1 = rounds[1].result_sha256
    (entry,) = rollbacks
    assert entry["to"] == v1
    assert rounds[max(rounds)].model_sha256 == v1
