"""The round driver's DP state survives a restart: it is rebuilt from the stored rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.coordinator.driver import DriverContext
from fedrt.coordinator.errors import RaceLost
from fedrt.coordinator.privacy.config import AdaptiveClip, AdaptiveClipSettings, DpConfig, DpMode
from fedrt.coordinator.privacy.rounds import TaskPrivacy
from fedrt.coordinator.records import (
    ModelRecord,
    RoundRecord,
    RoundStatus,
    TaskRecord,
    TaskStatus,
)
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.store import MemoryStore
from fedrt.coordinator.tasks import TaskSpec
from tests.coordinator.driver_harness import TASK, Fleet, pull_to_targets
from tests.coordinator.store_conformance import model, sha


def _context(store: MemoryStore) -> DriverContext:
    unused: Any = None  # recovery reads only the store
    return DriverContext(store=store, catalog=unused, tasks=unused, enrollment=unused,
                         clock=lambda: 100.0, publish=lambda *a: None,
                         model_url_prefix="http://x/")  # fmt: skip


def _store_with_task(dp: DpConfig) -> MemoryStore:
    """A store holding one running DP task "t1" on model m0."""
    spec = TaskSpec(goal_count=10, min_reports=8, max_rounds=5, eval_every=0, dp=dp)
    store = MemoryStore()
    store.add_model(model("m0"))
    store.create_task(TaskRecord(task_id="t1", name="t", status=TaskStatus.RUNNING,
                                 spec=spec.to_json(), model_sha256=sha("m0"),
                                 created_at=1.0, updated_at=1.0))  # fmt: skip
    return store


def test_restarted_driver_rebuilds_the_accountant_and_the_clip_bound() -> None:
    dp = DpConfig(mode=DpMode.CENTRAL, target_epsilon=6.0, budget_epsilon=6.0,
                  clip=AdaptiveClip(adaptive=AdaptiveClipSettings(initial=0.2)))  # fmt: skip
    store = _store_with_task(dp)
    # What a previous process did: two committed rounds, one abandoned, one left open.
    live = TaskPrivacy(dp, train_rounds=5)
    statuses = [RoundStatus.COMMITTED, RoundStatus.ABANDONED, RoundStatus.COMMITTED,
                RoundStatus.RUNNING]  # fmt: skip
    for no, status in enumerate(statuses, start=1):
        plan = live.plan(population=200, cohort=13)
        if status is RoundStatus.COMMITTED:
            live.commit(plan, included=10, unclipped=9.0, device_sum_std=0.0,
                        rng=np.random.default_rng(no))  # fmt: skip
        store.create_round(RoundRecord(task_id="t1", round_no=no, stage="x", status=status,
                                       model_sha256=sha("m0"), started_at=float(no),
                                       detail={"kind": "train", "dp": plan.to_json()},
                                       epsilon=live.epsilon))  # fmt: skip
    store.save_task_state("t1", "driver", {"round_no": 4, "next_msg_id": 9, "dp_clip": live.clip})
    driver = FederatedDriver(_context(store))
    privacy = driver.runs["t1"].privacy
    assert privacy is not None
    assert len(privacy.accountant.rounds) == 2  # the committed ones only
    assert privacy.epsilon == pytest.approx(live.epsilon)
    assert privacy.clip == live.clip != 0.2
    assert store.get_round("t1", 4).status is RoundStatus.ABANDONED
    nxt = privacy.plan(population=200, cohort=13)
    assert (
        nxt.privacy.noise_multiplier
        == live.plan(population=200, cohort=13).privacy.noise_multiplier
    )


def test_calibrating_a_target_epsilon_runs_off_the_event_loop_before_round_one() -> None:
    """dp_accounting needs 1-2 s to calibrate: the driver's tick hands that to a worker and
    returns; round 1 starts on a later tick, once the noise multiplier is known."""
    dp = DpConfig(mode=DpMode.CENTRAL, target_epsilon=4.0, delta=1e-5)
    store = _store_with_task(dp)
    driver = FederatedDriver(_context(store))
    run = driver.runs["t1"]
    assert run.privacy is not None
    assert run.privacy.needs_calibration
    driver.on_tick(100.0)
    assert run.machine is None  # no round while the multiplier is unknown
    future = run.calibrating
    assert future is not None
    assert future.result(timeout=120) > 0
    assert not run.privacy.needs_calibration
    assert run.round_no == 0


def test_rounds_run_then_restart_keep_their_dp_plans_and_the_epsilon_spent(tmp_path: Path) -> None:
    """A closed round keeps the kind and DP plan it started with, so a restarted driver's
    accountant starts from the epsilon already spent, not from zero."""
    fleet = Fleet(4, pull_to_targets)
    first = fleet.open(tmp_path / "data")
    dp = DpConfig(mode=DpMode.CENTRAL, noise_multiplier=1.0, budget_epsilon=100.0)
    fleet.create_task(max_rounds=2, dp=dp)
    fleet.run_until(fleet.done)
    rounds = fleet.svc.store.list_rounds(TASK)
    assert [r.detail["kind"] for r in rounds] == ["train", "train"]
    assert all("dp" in r.detail and "metrics" in r.detail for r in rounds)
    # Each round is charged for the pool its cohort was drawn from (selection.sampling).
    for r in rounds:
        pool = r.detail["metrics"]["checked_in"]
        assert (r.detail["dp"]["population"], r.detail["dp"]["cohort"]) == (
            max(pool, r.detail["metrics"]["selected"]),
            r.detail["metrics"]["selected"],
        )
    spent = rounds[-1].epsilon
    assert spent is not None
    assert spent > 0
    first.close()
    again = fleet.open(tmp_path / "data")
    try:
        privacy = again.driver._new_run(fleet.svc.store.get_task(TASK)).privacy
        assert privacy is not None
        assert privacy.epsilon == pytest.approx(spent)
    finally:
        again.close()


def _two_dp_rounds(data_dir: Path, *, raced: bool) -> float | None:
    """Two central-DP rounds; with ``raced``, the first commit's transaction loses a race."""
    fleet = Fleet(4, pull_to_targets)
    coordinator = fleet.open(data_dir)
    dp = DpConfig(mode=DpMode.CENTRAL, noise_multiplier=1.0, budget_epsilon=100.0)
    fleet.create_task(max_rounds=2, dp=dp)
    store = fleet.svc.store
    add_model, races = store.add_model, [raced]

    def add_model_once_raced(record: ModelRecord) -> None:
        if races and races.pop():
            raise RaceLost("could not serialize access due to concurrent update")
        add_model(record)

    store.add_model = add_model_once_raced  # type: ignore[method-assign]
    try:
        fleet.run_until(fleet.done)
        rounds = store.list_rounds(TASK)
        assert [r.status for r in rounds] == [RoundStatus.COMMITTED] * 2
        assert len({r.result_sha256 for r in rounds}) == 2
        assert len(store.list_models()) == 3  # the base and one version per round
        assert not races  # the race was run into
        return rounds[-1].epsilon
    finally:
        coordinator.close()


def test_a_commit_that_lost_a_race_runs_again_and_charges_once(tmp_path: Path) -> None:
    """A commit whose transaction lost a serialization race (RaceLost: nothing written) is
    run again from the run's memory as it was: one version per round, DP charged once."""
    plain = _two_dp_rounds(tmp_path / "plain", raced=False)
    raced = _two_dp_rounds(tmp_path / "raced", raced=True)
    assert plain is not None
    assert raced == pytest.approx(plain)
