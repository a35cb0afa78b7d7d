"""A round's work trains only on the device's training examples and evaluates only on its
held-out ones; q-FedAvg weighs the update by the loss at the start weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.protocol import qfedavg
from fedrt.protocol import round_messages as rm
from fedrt.sdk.clock import SystemClock
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.round_work import RoundWork, WorkResult
from fedrt.sdk.scheduler import SchedulerConfig, TrainingScheduler
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
from fedrt.sdk.trainer import TrainerBackend
from tests.sdk.fake_trainer import FakeTrainer

SHARE = 0.25


def _store(n: int = 80) -> ExampleStore:
    """Examples whose first feature is their id (ids count from 1)."""
    store = ExampleStore(":memory:", x_shape=(3,), x_dtype=np.float32, y_dtype=np.float32,
                         holdout_seed=bytes(range(16)))  # fmt: skip
    xs = [np.array([i, 0.5, -0.5], np.float32) for i in range(1, n + 1)]
    store.extend(xs, [np.float32(0.01 * i) for i in range(1, n + 1)])
    return store


def _plan(kind: rm.RoundKind, holdout: float, q: float | None = None, lr: float = 1e-3) -> rm.Plan:
    sha = "ab" * 32
    return rm.Plan(
        msg_id=1, task_id="t", round_id=3, kind=kind,
        model=rm.ModelRef(version=1, sha256=sha, url=f"/m/{sha}"),
        training=rm.TrainingConfig(epochs=1, learning_rate=lr),
        update=rm.UpdateSpec(params=4, clip_norm=10.0, bits=8, weight_cap=qfedavg.WEIGHT_CAP),
        secagg=None, report_within=60.0, holdout=holdout, qfedavg_q=q,
    )  # fmt: skip


def _work(store: ExampleStore, plan: rm.Plan, seen: list[ExampleStore], tmp: Path) -> RoundWork:
    def factory(trainer: TrainerBackend, examples: ExampleStore) -> TrainingScheduler:
        seen.append(examples)
        return TrainingScheduler(trainer=trainer, store=examples, clock=SystemClock(),
                                 device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]),
                                 config=SchedulerConfig(wait_poll_s=1.0))  # fmt: skip

    def done(_: WorkResult) -> None:
        raise AssertionError("the test calls the work's steps itself")

    return RoundWork(plan=plan, deadline=4e9, store=store, scheduler_factory=factory,
                     model_dir=tmp, public_key=b"", auth_headers={}, meta_url="",
                     done=done)  # fmt: skip


def _ids(trainer: FakeTrainer) -> set[int]:
    return {int(x) for batch in trainer.batches_seen for x in batch[:, 0]}


def test_training_never_sees_a_held_out_example(tmp_path: Path) -> None:
    store, seen = _store(), list[ExampleStore]()
    held = {i for i in range(1, 81) if i in _first_feature(store.part(SHARE, held_out=True))}
    assert 8 <= len(held) <= 35
    trainer = FakeTrainer(batch=4)
    result = _work(store, _plan(rm.RoundKind.TRAIN, SHARE), seen, tmp_path)._train(trainer, 0)
    assert result.training is not None
    assert len(seen) == 1
    assert len(seen[0]) == 80 - len(held)
    trained = _ids(trainer)
    assert trained == set(range(1, 81)) - held  # one epoch over every training example
    assert result.training.n_examples == 80 - len(held)


def test_evaluation_reads_only_the_held_out_examples(tmp_path: Path) -> None:
    store = _store()
    held = _first_feature(store.part(SHARE, held_out=True))
    work = _work(store, _plan(rm.RoundKind.EVALUATE, SHARE), [], tmp_path)
    n, sums = work._evaluate(_Recording(batch=4))
    assert n == len(held)
    assert set(sums) == {"loss", "accuracy"}
    # At share 0 the old behaviour: every example for both.
    everything = _work(store, _plan(rm.RoundKind.EVALUATE, 0.0), [], tmp_path)
    assert everything._evaluate(FakeTrainer(batch=4))[0] == 80


class _Recording(FakeTrainer):
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        self.batches_seen.append(np.array(x))
        return super().evaluate(x, y)


def _first_feature(store: ExampleStore) -> set[int]:
    return {int(x) for x in store.batch(len(store), 0).x[:, 0]}


def test_evaluation_sees_exactly_the_held_out_ids(tmp_path: Path) -> None:
    store = _store()
    held = _first_feature(store.part(SHARE, held_out=True))
    trainer = _Recording(batch=4)
    _work(store, _plan(rm.RoundKind.EVALUATE, SHARE), [], tmp_path)._evaluate(trainer)
    assert _ids(trainer) == held


def test_qfedavg_sends_its_loss_weighted_delta_and_b_as_the_count(tmp_path: Path) -> None:
    store = _store()
    train = store.part(SHARE, held_out=False)
    trainer = FakeTrainer(batch=4)
    # A small step (the first feature runs to 80) keeps b below H_MAX: no cap involved.
    work = _work(store, _plan(rm.RoundKind.TRAIN, SHARE, q=2.0, lr=1e-5), [], tmp_path)
    # The loss at the start weights (zero) over the training examples, measured in whole
    # batches as the device does (a wrapped last batch counts pro rata): about mean(y^2).
    start_loss = work._mean_loss(FakeTrainer(batch=4), train)
    ys = train.batch(len(train), 0).y.astype(np.float64)
    assert start_loss == pytest.approx(float(np.mean(ys**2)), rel=0.1)
    result = work._train(trainer, 0)
    assert result.training is not None
    weights = np.concatenate([w.reshape(-1) for w in trainer.get_weights()])
    delta = weights.astype(np.float64)  # the start weights are zero
    vector, count = qfedavg.device_update(delta, start_loss, 2.0, 1e-5, qfedavg.WEIGHT_CAP)
    assert result.training.n_examples == count
    np.testing.assert_allclose(result.training.delta, vector, rtol=1e-4, atol=1e-9)
    b = count * qfedavg.H_MAX / qfedavg.WEIGHT_CAP
    assert b == pytest.approx(qfedavg.h_term(start_loss, float(delta @ delta), 2.0, 1e-5), 1e-3)
    assert b < qfedavg.H_MAX
