"""TrainingScheduler: idle windows, pause/resume, deadline, budget, failure, restart, cancel."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from fedrt.sdk.budget import DailyBudget
from fedrt.sdk.checkpoint import Checkpoint
from fedrt.sdk.clock import ManualClock, SystemClock
from fedrt.sdk.device_state import DeviceSnapshot, DeviceState
from fedrt.sdk.errors import SchedulerError, SdkConfigError
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.scheduler import (
    JobState,
    Outcome,
    SchedulerConfig,
    TrainingPlan,
    TrainingScheduler,
    steps_for,
)
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in, unplugged
from fedrt.sdk.trainer import LiteRtTrainer
from tests.sdk.fake_trainer import FakeTrainer

T0 = 1_000_000.0
WAIT = 10.0  # result() timeout: the manual clock makes every run near-instant


def make_store(n: int = 20) -> ExampleStore:
    s = ExampleStore(":memory:", x_shape=(3,), x_dtype=np.float32, y_dtype=np.float32)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(n, 3)).astype(np.float32)
    s.extend(list(xs), list(xs @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3))
    return s


def scheduler(
    states: ScriptedDeviceState,
    clock: ManualClock,
    trainer: FakeTrainer | None = None,
    store: ExampleStore | None = None,
    **kwargs: object,
) -> tuple[TrainingScheduler, FakeTrainer]:
    trainer = trainer if trainer is not None else FakeTrainer(clock=clock)
    sched = TrainingScheduler(
        trainer=trainer,
        store=store if store is not None else make_store(),
        device_state=states,
        clock=clock,
        config=SchedulerConfig(wait_poll_s=5.0),
        **kwargs,  # type: ignore[arg-type]
    )
    return sched, trainer


def plan(steps: int = 10, deadline: float = T0 + 1000, round_id: str = "r1") -> TrainingPlan:
    return TrainingPlan(round_id=round_id, steps=steps, lr=0.05, deadline=deadline)


def test_completes_when_eligible_throughout() -> None:
    clock = ManualClock(T0)
    sched, trainer = scheduler(ScriptedDeviceState([(0, idle_plugged_in())]), clock)
    start = trainer.get_weights()
    result = sched.start(plan()).result(WAIT)
    assert result.outcome is Outcome.COMPLETED
    assert result.steps_done == 10
    assert trainer.steps == 10
    assert result.examples == 20  # 10 steps x 4 covered all 20 stored examples
    assert result.checkpoint.mean_loss is not None
    np.testing.assert_array_equal(result.checkpoint.start_weights[0], start[0])
    assert not np.array_equal(result.checkpoint.weights[0], start[0])


def test_unplugged_mid_training_pauses_within_one_step_then_resumes() -> None:
    clock = ManualClock(T0)
    # Each step takes 1 s: steps start at T0..T0+4; the unplug at T0+5 is seen before step 6.
    states = ScriptedDeviceState(
        [(0, idle_plugged_in()), (T0 + 5, unplugged()), (T0 + 100, idle_plugged_in())]
    )
    sched, trainer = scheduler(states, clock)
    checkpoints: list[Checkpoint] = []
    result = sched.start(plan(), on_checkpoint=checkpoints.append).result(WAIT)
    assert result.outcome is Outcome.COMPLETED
    assert result.steps_done == 10
    assert result.checkpoint.pauses == 1
    pause = checkpoints[0]
    assert (pause.step, pause.cursor) == (5, 20)  # stopped after exactly 5 steps
    assert clock.now() >= T0 + 100  # it waited for the charger
    # The data cursor carried on after the pause: batches 6.. continue where 5 stopped.
    np.testing.assert_array_equal(trainer.batches_seen[5], trainer.batches_seen[0])  # 20 = wrap


def test_window_not_back_before_the_deadline_abandons_keeping_progress() -> None:
    clock = ManualClock(T0)
    states = ScriptedDeviceState(
        [(0, idle_plugged_in()), (T0 + 3, unplugged()), (T0 + 5000, idle_plugged_in())]
    )
    sched, _ = scheduler(states, clock)
    job = sched.start(plan(deadline=T0 + 600))
    result = job.result(WAIT)
    assert result.outcome is Outcome.ABANDONED
    assert result.steps_done == 3
    assert "deadline passed after 3/10 steps" in result.reason
    assert "not plugged in" in result.reason
    assert job.status().state is JobState.FINISHED
    assert T0 + 600 <= clock.now() < T0 + 5000


def test_never_eligible_abandons_at_the_deadline_without_training() -> None:
    clock = ManualClock(T0)
    sched, trainer = scheduler(ScriptedDeviceState([(0, idle_plugged_in(metered=True))]), clock)
    result = sched.start(plan(deadline=T0 + 60)).result(WAIT)
    assert result.outcome is Outcome.ABANDONED
    assert trainer.steps == 0
    assert "metered" in result.reason


def test_daily_budget_pauses_until_midnight() -> None:
    clock = ManualClock(T0)
    budget = DailyBudget(3.0)  # three 1-second steps per day
    states = ScriptedDeviceState([(0, idle_plugged_in())])
    sched, _ = scheduler(states, clock, budget=budget)
    result = sched.start(plan(steps=5, deadline=T0 + 3 * 86400)).result(WAIT)
    assert result.outcome is Outcome.COMPLETED
    assert result.checkpoint.pauses == 1
    assert clock.now() >= budget.next_reset(T0)


def test_daily_budget_and_an_early_deadline_abandon() -> None:
    clock = ManualClock(T0)
    sched, _ = scheduler(
        ScriptedDeviceState([(0, idle_plugged_in())]), clock, budget=DailyBudget(2.0)
    )
    result = sched.start(plan(steps=5, deadline=T0 + 100)).result(WAIT)
    assert result.outcome is Outcome.ABANDONED
    assert result.steps_done == 2
    assert "budget" in result.reason


def test_failed_train_step_restores_the_round_weights() -> None:
    clock = ManualClock(T0)
    trainer = FakeTrainer(clock=clock, fail_at_step=3)
    sched, _ = scheduler(ScriptedDeviceState([(0, idle_plugged_in())]), clock, trainer=trainer)
    start = trainer.get_weights()
    result = sched.start(plan()).result(WAIT)
    assert result.outcome is Outcome.FAILED
    assert "injected failure" in result.reason
    for now, then in zip(trainer.get_weights(), start, strict=True):
        np.testing.assert_array_equal(now, then)
    np.testing.assert_array_equal(result.checkpoint.weights[0], start[0])


def test_restart_from_a_saved_checkpoint_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    eligible = ScriptedDeviceState([(0, idle_plugged_in())])
    far = T0 + 1e9  # the first process never reaches it: it is killed while paused
    reference, ref_trainer = scheduler(eligible, ManualClock(T0))
    expected = reference.start(plan(deadline=far)).result(WAIT)

    # First process: unplugged after 4 steps, checkpoint written to disk, then "killed".
    clock = ManualClock(T0)
    states = ScriptedDeviceState([(0, idle_plugged_in()), (T0 + 4, unplugged())])
    first, _ = scheduler(states, clock)
    path = tmp_path / "round.ckpt"
    paused = threading.Event()

    def persist(c: Checkpoint) -> None:
        c.save(path)
        paused.set()

    job = first.start(plan(deadline=far), on_checkpoint=persist)
    assert paused.wait(WAIT)
    job.cancel()
    assert job.result(WAIT).outcome is Outcome.CANCELLED

    # Second process: a fresh trainer (weights as exported) resumes from the file.
    saved = Checkpoint.load(path)
    assert saved.step == 4
    clock2 = ManualClock(T0 + 50)
    second, trainer2 = scheduler(eligible, clock2)
    resumed = second.start(plan(deadline=far), resume=saved).result(WAIT)
    assert resumed.outcome is Outcome.COMPLETED
    assert trainer2.steps == 6
    for a, b in zip(resumed.checkpoint.weights, expected.checkpoint.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for a, b in zip(resumed.checkpoint.start_weights, ref_trainer.get_weights(), strict=False):
        assert a.shape == b.shape


def test_checkpoint_of_another_round_is_refused() -> None:
    clock = ManualClock(T0)
    sched, trainer = scheduler(ScriptedDeviceState([(0, idle_plugged_in())]), clock)
    w = tuple(trainer.get_weights())
    other = Checkpoint(round_id="r0", step=1, cursor=4, weights=w, start_weights=w)
    with pytest.raises(SchedulerError, match="round"):
        sched.start(plan(), resume=other)


def test_cancel_stops_a_waiting_job_promptly() -> None:
    states = ScriptedDeviceState([(0, unplugged())])
    sched = TrainingScheduler(
        trainer=FakeTrainer(),
        store=make_store(),
        device_state=states,
        clock=SystemClock(),
        config=SchedulerConfig(wait_poll_s=3600),
    )
    job = sched.start(plan(deadline=4e9))
    assert not job.done()
    status = job.status()
    assert status.state is JobState.WAITING
    job.cancel()
    result = job.result(WAIT)  # the hour-long sleep is cut short
    assert result.outcome is Outcome.CANCELLED
    assert result.steps_done == 0


def test_one_job_at_a_time() -> None:
    sched = TrainingScheduler(
        trainer=FakeTrainer(),
        store=make_store(),
        device_state=ScriptedDeviceState([(0, unplugged())]),
        config=SchedulerConfig(wait_poll_s=3600),
    )
    job = sched.start(plan(deadline=4e9))
    try:
        with pytest.raises(SchedulerError, match="already running"):
            sched.start(plan(deadline=4e9, round_id="r2"))
    finally:
        job.cancel()
        job.result(WAIT)


def test_an_empty_store_waits_for_examples() -> None:
    clock = ManualClock(T0)
    empty = ExampleStore(":memory:", x_shape=(3,), x_dtype=np.float32, y_dtype=np.float32)
    sched, _ = scheduler(ScriptedDeviceState([(0, idle_plugged_in())]), clock, store=empty)
    result = sched.start(plan(deadline=T0 + 30)).result(WAIT)
    assert result.outcome is Outcome.ABANDONED
    assert "no local examples" in result.reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"lr": 0.0},
        {"lr": float("inf")},
        {"mu": -1.0},
        {"round_id": ""},
        {"deadline": float("nan")},
    ],
)
def test_bad_plans_are_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"round_id": "r", "steps": 1, "lr": 0.1, "deadline": T0}
    with pytest.raises(SdkConfigError):
        TrainingPlan(**(base | kwargs))  # type: ignore[arg-type]


class UnplugOnce(DeviceState):
    """Plugged in, except for the ``at``-th reading (the scheduler reads before every step)."""

    def __init__(self, at: int) -> None:
        self.reads = 0
        self.at = at

    def snapshot(self, now: float) -> DeviceSnapshot:
        self.reads += 1
        state = unplugged() if self.reads == self.at else idle_plugged_in()
        return dataclasses.replace(state, taken_at=now)


def test_real_litert_training_pauses_and_resumes(exported_mlp: Path) -> None:
    clock = ManualClock(T0)
    trainer = LiteRtTrainer.open(exported_mlp)
    store = ExampleStore.for_model(
        ":memory:",
        x_spec_shape=trainer.x_spec.shape,
        x_dtype=np.float32,
        y_spec_shape=trainer.y_spec.shape,
        y_dtype=np.int32,
    )
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(40, 3)).astype(np.float32)
    store.extend(list(xs), [int(v) for v in (xs[:, 0] > 0)])
    states = UnplugOnce(at=11)
    sched = TrainingScheduler(
        trainer=trainer,
        store=store,
        device_state=states,
        clock=clock,
        config=SchedulerConfig(wait_poll_s=5.0),
    )
    batch = store.batch(4)
    loss_before, _ = trainer.evaluate(batch.x, batch.y)
    checkpoints: list[Checkpoint] = []
    job = sched.start(
        TrainingPlan(round_id="r", steps=30, lr=0.1, deadline=T0 + 100),
        on_checkpoint=checkpoints.append,
    )
    result = job.result(WAIT)
    assert result.outcome is Outcome.COMPLETED
    assert result.checkpoint.pauses == 1
    assert checkpoints[0].step == 10  # the 11th reading said "unplugged": stopped before step 11
    assert clock.now() == T0 + 5.0  # one wait_poll_s spent paused
    assert result.examples == 40
    loss_after, _ = trainer.evaluate(batch.x, batch.y)
    assert loss_after < loss_before


def test_steps_for_a_plans_epochs() -> None:
    assert steps_for(examples=20, batch_size=4, epochs=2) == 10
    assert steps_for(examples=21, batch_size=4, epochs=1) == 6  # the last batch wraps
    assert steps_for(examples=3, batch_size=8, epochs=3) == 3
    assert steps_for(examples=1000, batch_size=10, epochs=5, max_steps=50) == 50
    with pytest.raises(SdkConfigError):
        steps_for(examples=0, batch_size=4, epochs=1)


def test_restart_after_the_deadline_abandons_with_the_saved_progress() -> None:
    trainer = FakeTrainer()
    w = tuple(trainer.get_weights())
    saved = Checkpoint(round_id="r1", step=4, cursor=16, weights=w, start_weights=w, pauses=1)
    clock = ManualClock(T0 + 2000)  # rebooted long after the round's deadline
    sched, _ = scheduler(ScriptedDeviceState([(0, idle_plugged_in())]), clock, trainer=trainer)
    result = sched.start(plan(deadline=T0 + 1000), resume=saved).result(WAIT)
    assert result.outcome is Outcome.ABANDONED
    assert result.steps_done == 4
    assert trainer.steps == 0
