"""--speed-spread: seeded log-uniform slowdowns, the slowed trainer, and a run that uses them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from fedrt.errors import UsageError
from fedrt.model_export.manifest import TensorSpec
from fedrt.sdk.trainer import TrainerBackend
from fedrt.simulation.runner import Report, RoundRow, SimConfig
from fedrt.simulation.speed import SlowTrainer, slow_trainer_factory, slowdowns
from tests.support.simulate import simulate_small


def test_slowdowns_are_seeded_and_spread_over_the_range() -> None:
    a = slowdowns(400, 10.0, seed=7)
    assert a == slowdowns(400, 10.0, seed=7)
    assert a != slowdowns(400, 10.0, seed=8)
    assert all(1.0 <= m <= 10.0 for m in a)
    # Log-uniform: about half of the devices are below sqrt(10), not 1/9 of them as with a
    # uniform spread; and both ends of the range are reached.
    below = sum(m < math.sqrt(10.0) for m in a) / len(a)
    assert 0.4 < below < 0.6
    assert min(a) < 1.1
    assert max(a) > 9.0


def test_a_spread_of_one_is_todays_fleet() -> None:
    assert slowdowns(5, 1.0, seed=0) == (1.0,) * 5
    assert slow_trainer_factory(1.0) is None
    assert slow_trainer_factory(2.5) is not None


@pytest.mark.parametrize("bad", [0.5, 0.0, -3.0, math.inf, math.nan])
def test_a_spread_below_one_is_refused(bad: float) -> None:
    with pytest.raises(UsageError):
        slowdowns(3, bad, seed=0)
    with pytest.raises(UsageError):
        SimConfig(speed_spread=bad)


@pytest.mark.parametrize("target", [0.0, 1.5, -0.1])
def test_a_target_accuracy_outside_zero_to_one_is_refused(target: float) -> None:
    with pytest.raises(UsageError):
        SimConfig(target_accuracy=target)
    with pytest.raises(UsageError):
        SimConfig(stop_at_target=True)


class _Steps(TrainerBackend):
    """A backend whose every step takes exactly one tick of the test's clock."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.weights = [np.zeros(2, np.float32)]
        self.closed = False

    batch_size = 2
    x_spec = TensorSpec(name="x", shape=(2, 1), dtype="float32")
    y_spec = TensorSpec(name="y", shape=(2,), dtype="int32")
    weight_specs = (TensorSpec(name="w", shape=(2,), dtype="float32"),)
    supports_mu = False

    def train_step(self, x: Any, y: Any, lr: float, mu: float | None = None) -> float:
        self.clock[0] += 1.0
        self.weights[0] = self.weights[0] + lr
        return 0.5

    def evaluate(self, x: Any, y: Any) -> tuple[float, int]:
        return 0.25, 1

    def infer(self, x: Any) -> Any:
        return np.ones((2, 2), np.float32)

    def get_weights(self) -> list[Any]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        self.weights = [np.asarray(w) for w in weights]

    def close(self) -> None:
        self.closed = True


def test_every_step_is_followed_by_the_extra_time_of_a_slower_device() -> None:
    now = [0.0]
    slept: list[float] = []
    inner = _Steps(now)
    slow = SlowTrainer(inner, 3.5, clock=lambda: now[0], sleep=slept.append)
    x, y = np.zeros((2, 1), np.float32), np.zeros(2, np.int32)
    assert slow.train_step(x, y, 0.1) == 0.5
    assert slow.train_step(x, y, 0.1) == 0.5
    assert slept == [2.5, 2.5]  # (3.5 - 1) x the one-tick step
    np.testing.assert_allclose(slow.get_weights()[0], [0.2, 0.2])
    assert slow.evaluate(x, y) == (0.25, 1)  # evaluation is not slowed
    assert slept == [2.5, 2.5]
    assert slow.batch_size == 2
    assert slow.weight_specs == inner.weight_specs
    slow.close()
    assert inner.closed


def test_a_local_training_takes_at_least_its_base_time_times_the_multiple() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    slow = SlowTrainer(_Steps(now), 2.0, base_seconds=5.0, clock=lambda: now[0], sleep=sleep)
    x, y = np.zeros((2, 1), np.float32), np.zeros(2, np.int32)
    for _ in range(3):
        slow.train_step(x, y, 0.1)
    # The first step waits out the floor (5 s x 2, less its own tick); the rest are slowed.
    assert slept == [9.0, 1.0, 1.0]
    assert now[0] == 14.0
    assert slow_trainer_factory(1.0, base_seconds=2.0) is not None  # a floor alone slows


def test_a_multiple_below_one_or_a_negative_base_time_is_refused() -> None:
    with pytest.raises(UsageError):
        SlowTrainer(_Steps([0.0]), 0.9)
    with pytest.raises(UsageError):
        SlowTrainer(_Steps([0.0]), 1.0, base_seconds=-1.0)
    with pytest.raises(UsageError):
        SimConfig(train_seconds=-0.5)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return simulate_small(
        tmp_path_factory.mktemp("sim"),
        per_round=3,
        rounds=2,
        partition="iid",
        seed=5,
        speed_spread=4.0,
        train_seconds=0.25,
        target_accuracy=0.3,
        local_epochs=2,
    )


def test_a_spread_fleet_trains_and_reports_its_speeds(report: Report) -> None:
    assert report.completed
    assert report.config["speed_spread"] == 4.0
    assert report.config["train_seconds"] == 0.25
    # The training deadline leaves room for the slowest device's assumed training time.
    assert report.config["training_s"] == SimConfig(per_round=3).training_deadline_s + 1.0
    multiples = report.config["slowdowns"]
    assert len(multiples) == 4
    assert all(1.0 <= m <= 4.0 for m in multiples)
    assert max(multiples) > 1.0
    assert [round(m, 3) for m in slowdowns(4, 4.0, seed=5)] == multiples
    committed = [r for r in report.rounds if r.status == "committed"]
    assert committed
    assert report.final_accuracy is not None


def test_the_report_says_when_the_target_accuracy_was_first_reached(report: Report) -> None:
    first = next(r for r in report.rounds if r.accuracy is not None and r.accuracy >= 0.3)
    assert report.rounds_to_target == first.round
    assert report.seconds_to_target == first.elapsed_s
    assert report.seconds_to_target is not None
    assert report.seconds_to_target > 0
    elapsed = [r.elapsed_s or 0.0 for r in report.rounds]
    assert elapsed == sorted(elapsed)
    assert None not in [r.elapsed_s for r in report.rounds]
    assert report.to_json()["seconds_to_target"] == report.seconds_to_target


def _row(n: int, accuracy: float | None, elapsed: float) -> RoundRow:
    return RoundRow(
        round=n, status="committed" if accuracy is not None else "failed", accuracy=accuracy,
        loss=None, selected=3, reported=3, dropped=0, bytes_up=1, bytes_down=1, seconds=1.0,
        elapsed_s=elapsed,
    )  # fmt: skip


def test_only_the_first_version_at_the_target_counts_and_none_stays_null() -> None:
    rep = Report(config={})
    rows = [_row(1, 0.5, 3.0), _row(2, None, 6.0), _row(3, 0.91, 9.5), _row(4, 0.95, 12.0)]
    hits = []
    for r in rows:
        rep.rounds.append(r)
        hits.append(rep.reached_target(r, 0.9, commits=False))
    assert hits == [False, False, True, False]
    assert (rep.rounds_to_target, rep.seconds_to_target) == (3, 9.5)
    never = Report(config={})
    assert not any(never.reached_target(r, 0.99, commits=False) for r in rows)
    assert never.to_json()["rounds_to_target"] is None
    assert never.to_json()["seconds_to_target"] is None
    assert not Report(config={}).reached_target(rows[3], None, commits=False)


def test_in_async_mode_the_rounds_to_target_are_commits() -> None:
    rep = Report(config={})
    rep.rounds += [_row(1, 0.5, 3.0), _row(2, None, 6.0), _row(3, 0.91, 9.5)]
    assert rep.reached_target(rep.rounds[2], 0.9, commits=True)
    assert rep.rounds_to_target == 2  # the failed round 2 committed nothing
