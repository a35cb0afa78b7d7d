"""Dropout, FedProx and momentum: LiteRT steps equal a hand-written TF-autodiff reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.model_export import RuntimeInputError, inspect_file
from tests.model_export.conftest import (
    TOLERANCE,
    Exported,
    batches_for,
    constant_bytes,
    export,
    max_weight_diff,
    signature_graphs,
)

MU = 0.5
MOMENTUM = 0.9
LR = 0.05


def dropout_mlp() -> Any:
    import keras

    keras.utils.set_random_seed(9)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3, seed=11),
            keras.layers.Dense(3),
        ]
    )


@pytest.fixture(scope="module")
def prox(export_root: Path) -> Exported:
    return export(dropout_mlp, export_root / "prox", batch_size=8, fedprox=True, momentum=True)


def _reference(exported: Exported, batches: list[Any], reset_after: int) -> dict[str, Any]:
    """Plain TF: autodiff gradients (TensorFlow's own op gradients) and the update rule
    v = momentum*v + g + mu*(w - w_start); w -= lr*v, restarting at ``reset_after``."""
    import tensorflow as tf

    from fedrt.model_export.exporter import ExportOptions, build_module
    from fedrt.model_export.keras_plan import plan_model

    plan = plan_model(exported.keras_model, "sparse_ce")
    module = build_module(plan, ExportOptions(batch_size=8), native=True)
    names = [w.name for w in plan.weights]
    start = [tf.constant(exported.initial[n]) for n in names]
    weights = [tf.Variable(s) for s in start]
    velocity = [tf.zeros_like(s) for s in start]
    for step, (x, y) in enumerate(batches):
        if step == reset_after:
            for w, s in zip(weights, start, strict=True):
                w.assign(s)
            velocity = [tf.zeros_like(s) for s in start]
        with tf.GradientTape() as tape:
            logits = module.forward(
                weights, x, training=True, native=True, step_count=tf.constant(step)
            )
            loss, _ = module.loss_fn(logits, y, True)
        grads = tape.gradient(loss, weights)
        for i, (w, g) in enumerate(zip(weights, grads, strict=True)):
            velocity[i] = MOMENTUM * velocity[i] + g + MU * (w - start[i])
            w.assign_sub(LR * velocity[i])
    return {n: w.numpy() for n, w in zip(names, weights, strict=True)}


def test_prox_momentum_model_has_builtin_ops_and_extra_inputs(prox: Exported) -> None:
    report = inspect_file(prox.directory / "model.tflite")
    assert report.ok, report.problems
    train_inputs = [t.name for t in report.signatures["train"].inputs]
    assert train_inputs == ["lr", "momentum", "mu", "x", "y"]
    assert prox.manifest.options == {
        "dropout": True,
        "fedprox": True,
        "momentum": True,
        "scaffold": False,
    }


def test_set_weights_resets_momentum_without_zeros_stored_in_the_file(prox: Exported) -> None:
    # tf.zeros_like(value) of a static shape is folded into a weight-sized constant of zeros.
    model, graphs = signature_graphs(prox.directory / "model.tflite")
    smallest = min(int(np.prod(w.shape)) * 4 for w in prox.manifest.weights)
    assert constant_bytes(model, graphs["set_weights"]) < smallest


def test_dropout_fedprox_momentum_steps_match_reference(prox: Exported) -> None:
    batches = batches_for(prox.manifest, seed=3, steps=6)
    model = prox.open()
    for step, (x, y) in enumerate(batches):
        if step == 3:
            # A new round: set_weights also resets FedProx's anchor and the velocity.
            model.set_weights(prox.initial)
        model.train(x, y, LR, mu=MU, momentum=MOMENTUM)
    expected = _reference(prox, batches, reset_after=3)
    assert max_weight_diff(model.get_weights(), expected) <= TOLERANCE
    assert max_weight_diff(model.get_weights(), prox.initial) > 1e-3


def test_dropout_is_train_only(prox: Exported) -> None:
    model = prox.open()
    x, y = batches_for(prox.manifest, seed=4, steps=1)[0]
    first = model.evaluate(x, y)
    assert model.evaluate(x, y) == first  # no dropout, no state change
    logits = model.infer(x)
    np.testing.assert_array_equal(model.infer(x), logits)


def test_hash_dropout_masks_are_uniform_and_vary_by_step() -> None:
    import tensorflow as tf

    from fedrt.model_export.tf_ops import uniform_hash

    a = uniform_hash([64, 128], 11, tf.constant(0)).numpy()
    b = uniform_hash([64, 128], 11, tf.constant(1)).numpy()
    assert 0.0 <= a.min() < 0.01
    assert 0.99 < a.max() < 1.0
    assert abs(a.mean() - 0.5) < 0.01
    assert abs(float(np.mean(a >= 0.3)) - 0.7) < 0.02
    assert abs(float(np.corrcoef(a.ravel(), b.ravel())[0, 1])) < 0.05
    assert abs(float(np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1])) < 0.05


def test_train_requires_the_optional_inputs_it_was_exported_with(prox: Exported) -> None:
    model = prox.open()
    x, y = batches_for(prox.manifest, seed=5, steps=1)[0]
    with pytest.raises(RuntimeInputError, match="mu"):
        model.train(x, y, LR)
    assert max_weight_diff(model.get_weights(), prox.initial) == 0.0
