"""JavaTrainer: the SDK driving a Java LiteRT trainer through Chaquopy's `java` module.

The Java side is a stand-in with the Kotlin LiteRtTrainer's ``runSignature(Map, Map,
String)`` contract, running the exported model on the real ai_edge_litert interpreter; the
`java` module is a stand-in whose arrays accept only Chaquopy's one-copy buffer path. So
marshalling (names, shapes, dtypes, order, dynamic batch) is proven on real training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fedrt.model_export.manifest import Manifest
from fedrt.sdk.android_trainer import JavaTrainer, java_trainer_factory
from fedrt.sdk.clock import ManualClock
from fedrt.sdk.errors import ModelError, TrainStepFailed
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.scheduler import Outcome, SchedulerConfig, TrainingPlan, TrainingScheduler
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
from fedrt.sdk.trainer import LiteRtTrainer, TrainerBackend
from tests.sdk.android_support import (
    EMPTY_INPUTS,
    HashMap,
    IllegalArgumentException,
    JavaArray,
    JavaFloatArray,
    StandInLiteRtTrainer,
    java_module,
)

RNG = np.random.default_rng(7)
BATCHES = [
    (RNG.normal(size=(4, 3)).astype(np.float32), RNG.integers(0, 2, size=4).astype(np.int32))
    for _ in range(12)
]


def bridge(exported: Path) -> tuple[JavaTrainer, StandInLiteRtTrainer]:
    manifest = Manifest.load(exported)
    java_side = StandInLiteRtTrainer(str(manifest.verify_model_file(exported)))
    return JavaTrainer(java_side, manifest, java=java_module()), java_side


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_training_through_java_matches_the_python_trainer_exactly(exported_mlp: Path) -> None:
    java, java_side = bridge(exported_mlp)
    python = LiteRtTrainer.open(exported_mlp)
    assert isinstance(java, TrainerBackend)
    assert (java.batch_size, java.x_spec, java.y_spec) == (4, python.x_spec, python.y_spec)
    assert java.weight_specs == python.weight_specs
    assert java.supports_mu
    assert same(java.get_weights(), python.get_weights())
    copies = JavaArray.copies_from_buffer
    losses = []
    for x, y in BATCHES:
        loss = java.train_step(x, y, 0.2, mu=0.01)
        assert loss == python.train_step(x, y, 0.2, mu=0.01)
        losses.append(loss)
    # Every input crossed as one buffer copy: x, y, lr and mu for each step.
    assert JavaArray.copies_from_buffer - copies == 4 * len(BATCHES)
    assert same(java.get_weights(), python.get_weights())
    assert [w.dtype for w in java.get_weights()] == [np.float32] * 4
    assert java_side.calls.count("train") == len(BATCHES)
    x, y = BATCHES[0]
    assert java.evaluate(x, y) == python.evaluate(x, y)
    assert np.array_equal(java.infer(x), python.infer(x))


def test_the_loss_decreases_on_a_learnable_batch(exported_mlp: Path) -> None:
    java, _ = bridge(exported_mlp)
    x = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    y = np.array([0, 1, 0, 1], np.int32)
    first = java.train_step(x, y, 0.1)
    for _ in range(60):
        last = java.train_step(x, y, 0.1)
    assert last < first / 2
    loss, correct = java.evaluate(x, y)
    assert correct == 4
    assert loss < first
    assert list(np.argmax(java.infer(x), axis=1)) == list(y)


def test_infer_takes_any_number_of_rows(exported_mlp: Path) -> None:
    java, _ = bridge(exported_mlp)
    python = LiteRtTrainer.open(exported_mlp)
    x = RNG.normal(size=(7, 3)).astype(np.float32)
    logits = java.infer(x)
    assert logits.shape == (7, 2)
    assert np.array_equal(logits, python.infer(x))


def test_set_weights_round_trips_and_is_what_training_starts_from(exported_mlp: Path) -> None:
    java, _ = bridge(exported_mlp)
    python = LiteRtTrainer.open(exported_mlp)
    new = [RNG.normal(size=s.shape).astype(np.float32) for s in java.weight_specs]
    java.set_weights(new)
    python.set_weights(new)
    assert same(java.get_weights(), new)
    x, y = BATCHES[1]
    assert java.train_step(x, y, 0.1) == python.train_step(x, y, 0.1)
    assert same(java.get_weights(), python.get_weights())


def test_inputs_are_converted_and_made_contiguous(exported_mlp: Path) -> None:
    java, _ = bridge(exported_mlp)
    python = LiteRtTrainer.open(exported_mlp)
    wide = RNG.normal(size=(3, 4)).astype(np.float64)
    x, y = wide.T, [1, 0, 1, 0]  # float64, transposed (not C-contiguous), labels as a list
    assert java.train_step(x, y, 0.1) == python.train_step(x.astype(np.float32), np.array(y), 0.1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.train_step(np.zeros((3, 3), np.float32), np.zeros(4, np.int32), 0.1), "shape"),
        (
            lambda t: t.train_step(np.zeros((4, 3), np.float32), np.zeros(4, np.float32), 0.1),
            "integer",
        ),
        (
            lambda t: t.train_step(
                np.zeros((4, 3), np.float32), np.zeros(4, np.int32), float("nan")
            ),
            "lr",
        ),
        (lambda t: t.evaluate(np.zeros((4, 2), np.float32), np.zeros(4, np.int32)), "shape"),
        (lambda t: t.set_weights(t.get_weights()[:3]), "expected 4"),
        (lambda t: t.set_weights([w.T for w in t.get_weights()]), "hidden_kernel"),
        (lambda t: t.set_weights([w * np.nan for w in t.get_weights()]), "non-finite"),
    ],
)
def test_bad_arguments_never_reach_java_and_change_nothing(
    exported_mlp: Path, call: object, match: str
) -> None:
    java, java_side = bridge(exported_mlp)
    before = java.get_weights()
    calls = len(java_side.calls)
    with pytest.raises(ModelError, match=match):
        call(java)  # type: ignore[operator]
    # (the lambdas read weights to build bad ones; nothing else may reach Java)
    assert set(java_side.calls[calls:]) <= {"read_weights"}
    assert same(java.get_weights(), before)


def test_a_java_exception_in_train_is_a_failed_step(exported_mlp: Path) -> None:
    java, java_side = bridge(exported_mlp)
    x, y = BATCHES[0]
    java_side.fail_next = "train"
    with pytest.raises(TrainStepFailed, match="train failed in the Java trainer"):
        java.train_step(x, y, 0.1)
    java_side.fail_next = "read_weights"
    with pytest.raises(ModelError, match="read_weights failed"):
        java.get_weights()


def test_the_java_side_refuses_an_empty_input_map_like_litert(exported_mlp: Path) -> None:
    """So every test here that reads weights proves Python never sends one."""
    _, java_side = bridge(exported_mlp)
    outputs = HashMap({"hidden_bias": JavaFloatArray(16)})
    with pytest.raises(IllegalArgumentException) as info:
        java_side.runSignature(HashMap(), outputs, "get_weights")
    assert str(info.value) == EMPTY_INPUTS
    assert not np.any(np.frombuffer(outputs["hidden_bias"], np.float32))  # nothing ran


def test_get_and_set_weights_round_trip_through_java(exported_mlp: Path) -> None:
    java, java_side = bridge(exported_mlp)
    python = LiteRtTrainer.open(exported_mlp)
    start = java.get_weights()
    assert same(start, python.get_weights())  # the export's initial weights
    assert [w.shape for w in start] == [s.shape for s in java.weight_specs]
    for x, y in BATCHES[:3]:
        java.train_step(x, y, 0.2)
    trained = java.get_weights()
    assert not same(trained, start)
    java.set_weights(start)
    assert same(java.get_weights(), start)
    java.set_weights(trained)
    assert same(java.get_weights(), trained)
    assert [w.dtype for w in java.get_weights()] == [np.float32] * 4
    assert "read_weights" in java_side.calls
    assert "get_weights" not in java_side.calls


def test_a_model_exported_before_read_weights_is_refused(exported_mlp: Path) -> None:
    _, java_side = bridge(exported_mlp)
    current = Manifest.load(exported_mlp)
    older = dataclasses.replace(
        current, signatures={k: v for k, v in current.signatures.items() if k != "read_weights"}
    )
    java = JavaTrainer(java_side, older, java=java_module())
    with pytest.raises(ModelError, match=r"no read_weights signature.*re-export"):
        java.get_weights()
    assert java_side.calls == []


def test_the_scheduler_trains_a_round_on_the_java_trainer(exported_mlp: Path) -> None:
    """The SDK's own training loop, unchanged, on the bridge (as `Device` runs it on Android)."""
    opened: list[str] = []

    def open_trainer(path: str) -> StandInLiteRtTrainer:
        opened.append(path)
        return StandInLiteRtTrainer(path)

    manifest = Manifest.load(exported_mlp)
    model = manifest.verify_model_file(exported_mlp)
    trainer = java_trainer_factory(open_trainer, java=java_module())(model, manifest)
    assert opened == [str(model)]
    store = ExampleStore.for_model(
        ":memory:", x_spec_shape=(4, 3), x_dtype=np.float32, y_spec_shape=(4,), y_dtype=np.int32
    )
    xs = RNG.normal(size=(24, 3)).astype(np.float32)
    store.extend(list(xs), [int(v) for v in (xs[:, 0] > 0)])
    clock = ManualClock(1_000_000.0)
    sched = TrainingScheduler(
        trainer=trainer,
        store=store,
        device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]),
        clock=clock,
        config=SchedulerConfig(wait_poll_s=5.0),
    )
    start = trainer.get_weights()
    result = sched.start(TrainingPlan(round_id="r", steps=18, lr=0.2, deadline=1_000_100.0)).result(
        timeout=60
    )
    assert result.outcome is Outcome.COMPLETED
    assert result.steps_done == 18
    assert not same(list(result.checkpoint.weights), start)
    assert same(list(result.checkpoint.weights), trainer.get_weights())
