"""A device's personal layers on disk (FedPer) and local fine-tuning before evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.model_export.manifest import TensorSpec
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_message, encode_message
from fedrt.protocol.round_errors import MalformedMessage
from fedrt.sdk.errors import ModelError
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.personal_layers import (
    PersonalLayers,
    finetune,
    personalize,
    personalized_sums,
    shared_delta,
)
from tests.sdk.fake_trainer import FakeTrainer

SPECS = (
    TensorSpec(name="hidden_kernel", shape=(2, 3), dtype="float32"),
    TensorSpec(name="hidden_bias", shape=(3,), dtype="float32"),
    TensorSpec(name="logits_kernel", shape=(3, 2), dtype="float32"),
    TensorSpec(name="logits_bias", shape=(2,), dtype="float32"),
)
PERSONAL = ("logits_kernel", "logits_bias")


def global_model(value: float) -> list[np.ndarray]:
    return [np.full(s.shape, value, np.float32) for s in SPECS]


def test_first_global_model_seeds_the_personal_layers_and_they_survive_a_restart(
    tmp_path: Path,
) -> None:
    mine = PersonalLayers(tmp_path, "task-a", PERSONAL)
    merged = mine.merge(global_model(1.0), SPECS)
    assert all(np.array_equal(m, g) for m, g in zip(merged, global_model(1.0), strict=True))
    # Local training changes this device's copy; the next global model's personal tensors
    # (different values) do not replace it, its shared tensors do come through.
    trained = [w + 0.5 for w in merged]
    mine.keep(trained, SPECS)
    again = PersonalLayers(tmp_path, "task-a", PERSONAL)  # a fresh process
    merged = again.merge(global_model(7.0), SPECS)
    assert np.array_equal(merged[0], np.full((2, 3), 7.0))
    assert np.array_equal(merged[1], np.full((3,), 7.0))
    assert np.array_equal(merged[2], np.full((3, 2), 1.5))
    assert np.array_equal(merged[3], np.full((2,), 1.5))
    # Another task's layers are its own.
    other = PersonalLayers(tmp_path, "task-b", PERSONAL).merge(global_model(3.0), SPECS)
    assert np.array_equal(other[3], np.full((2,), 3.0))


def test_a_new_shape_starts_again_from_the_global_model(tmp_path: Path) -> None:
    mine = PersonalLayers(tmp_path, "t", PERSONAL)
    mine.keep([w + 1 for w in global_model(0.0)], SPECS)
    wider = (*SPECS[:2], TensorSpec(name="logits_kernel", shape=(3, 4), dtype="float32"),
             TensorSpec(name="logits_bias", shape=(4,), dtype="float32"))  # fmt: skip
    fresh = [np.full(s.shape, 2.0, np.float32) for s in wider]
    merged = mine.merge(fresh, wider)
    assert np.array_equal(merged[2], np.full((3, 4), 2.0))
    assert np.array_equal(merged[3], np.full((4,), 2.0))
    assert PersonalLayers(tmp_path, "t", PERSONAL).load()["logits_bias"].shape == (4,)


def test_an_unreadable_file_starts_again_and_unknown_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "t.npz").write_bytes(b"not a zip")
    merged = PersonalLayers(tmp_path, "t", PERSONAL).merge(global_model(4.0), SPECS)
    assert np.array_equal(merged[3], np.full((2,), 4.0))
    with pytest.raises(ModelError, match="not in the model"):
        PersonalLayers(tmp_path, "t", ("fc_bias",)).merge(global_model(0.0), SPECS)


def test_the_update_leaves_the_personal_tensors_out() -> None:
    start = global_model(1.0)
    trained = [w + i + 1 for i, w in enumerate(start)]
    delta = shared_delta(trained, start, SPECS, PERSONAL)
    assert delta.shape == (9,)  # 2x3 + 3, not the 6 + 2 personal coordinates
    assert np.array_equal(delta, np.array([1.0] * 6 + [2.0] * 3, np.float32))


def _store(n: int) -> ExampleStore:
    store = ExampleStore(":memory:", x_shape=(3,), x_dtype=np.float32, y_dtype=np.float32)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    store.extend(list(x), list(x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3))
    return store


def test_finetune_takes_k_steps_on_the_devices_examples_and_stops_when_cancelled() -> None:
    store, trainer = _store(10), FakeTrainer(batch=4)
    assert finetune(trainer, store.batch, steps=5, lr=0.1) == 5
    assert trainer.steps == 5
    # In order, wrapping: the third batch is examples 9, 10, 1, 2.
    x = store.batch(10).x
    assert np.array_equal(trainer.batches_seen[2], np.concatenate([x[8:], x[:2]]))
    calls = iter([False, False, True])
    assert finetune(FakeTrainer(batch=4), store.batch, steps=5, lr=0.1,
                    cancelled=lambda: next(calls)) == 2  # fmt: skip


def _plan(personal: tuple[str, ...], steps: int) -> rm.Plan:
    sha = "cd" * 32
    return rm.Plan(
        msg_id=1,
        task_id="t",
        round_id=2,
        kind=rm.RoundKind.EVALUATE,
        model=rm.ModelRef(version=1, sha256=sha, url=f"/m/{sha}"),
        training=rm.TrainingConfig(learning_rate=0.05),
        update=rm.UpdateSpec(params=4, clip_norm=1.0, bits=8, weight_cap=10),
        secagg=None,
        report_within=10.0,
        personal_layers=personal,
        finetune_steps=steps,
    )


def test_personalize_puts_the_devices_layers_over_the_global_model_then_finetunes(
    tmp_path: Path,
) -> None:
    store = _store(12)
    trainer = FakeTrainer(batch=4)
    mine = PersonalLayers(tmp_path, "t", ("b",))
    mine.save({"b": np.array([0.3], np.float32)})
    personalize(trainer, mine, store.batch, finetune_steps=0, lr=0.05)
    assert trainer.steps == 0
    assert np.array_equal(trainer.get_weights()[1], np.array([0.3], np.float32))
    loss_before = trainer.evaluate(*_xy(store))[0]
    personalize(trainer, PersonalLayers(tmp_path, "t", ()), store.batch, finetune_steps=20, lr=0.05)
    assert trainer.steps == 20
    assert trainer.evaluate(*_xy(store))[0] < loss_before
    sums = personalized_sums({"loss": 3.0, "accuracy": 7.0})
    assert sums == {"personalized_loss": 3.0, "personalized_accuracy": 7.0}


def _xy(store: ExampleStore) -> tuple[np.ndarray, np.ndarray]:
    b = store.batch(4)
    return b.x, b.y


def test_the_plan_carries_personal_layers_and_refuses_bad_ones() -> None:
    plan = _plan(PERSONAL, 5)
    assert decode_message(encode_message(plan)) == plan
    plain = _plan((), 0)
    assert decode_message(encode_message(plain)) == plain
    assert len(encode_message(plain)) < len(encode_message(plan))
    with pytest.raises(MalformedMessage, match="twice"):
        _plan(("a", "a"), 0)
    with pytest.raises(MalformedMessage, match="1 to 256"):
        _plan(("",), 0)
