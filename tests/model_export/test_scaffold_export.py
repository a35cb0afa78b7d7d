"""fedrt export --scaffold: one LiteRT step with a correction is w - lr * (g + correction)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.model_export import RuntimeInputError, inspect_file
from tests.model_export.conftest import TOLERANCE, Exported, batches_for, export, max_weight_diff

LR = 0.05


def small_cnn() -> Any:
    import keras

    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


@pytest.fixture(scope="module")
def scaffold(export_root: Path) -> Exported:
    return export(small_cnn, export_root / "scaffold", batch_size=4, scaffold=True)


def _correction(exported: Exported, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    rng = np.random.default_rng(seed)
    return rng.normal(scale=0.5, size=exported.manifest.num_params).astype(np.float32)


def _reference(exported: Exported, x: Any, y: Any, correction: Any) -> dict[str, Any]:
    """TensorFlow autodiff gradients, then w - lr * (g + correction) per weight."""
    import tensorflow as tf

    from fedrt.model_export.exporter import ExportOptions, build_module
    from fedrt.model_export.keras_plan import plan_model

    plan = plan_model(exported.keras_model, "sparse_ce")
    module = build_module(plan, ExportOptions(batch_size=4), native=True)
    names = [w.name for w in plan.weights]
    weights = [tf.Variable(exported.initial[n]) for n in names]
    with tf.GradientTape() as tape:
        logits = module.forward(weights, x, training=True, native=True)
        loss, _ = module.loss_fn(logits, y, True)
    grads = tape.gradient(loss, weights)
    out, at = {}, 0
    for name, w, g in zip(names, weights, grads, strict=True):
        size = int(np.prod(w.shape))
        part = correction[at : at + size].reshape(w.shape)
        out[name] = (w - LR * (g + part)).numpy()
        at += size
    return out


def test_scaffold_model_is_builtin_and_takes_a_flat_correction(scaffold: Exported) -> None:
    report = inspect_file(scaffold.directory / "model.tflite")
    assert report.ok, report.problems
    inputs = {t.name: t for t in report.signatures["train"].inputs}
    assert sorted(inputs) == ["correction", "lr", "x", "y"]
    assert inputs["correction"].shape == (scaffold.manifest.num_params,)
    assert scaffold.manifest.options["scaffold"] is True
    assert scaffold.manifest.signature("train").input("correction") is not None


def test_one_step_with_a_correction_matches_tf_autodiff(scaffold: Exported) -> None:
    x, y = batches_for(scaffold.manifest, seed=7, steps=1)[0]
    correction = _correction(scaffold, seed=8)
    model = scaffold.open()
    model.train(x, y, LR, correction=correction)
    expected = _reference(scaffold, x, y, correction)
    assert max_weight_diff(model.get_weights(), expected) <= TOLERANCE
    # The correction moved the weights: a zero correction lands elsewhere.
    plain = scaffold.open()
    plain.train(x, y, LR, correction=np.zeros_like(correction))
    assert max_weight_diff(plain.get_weights(), expected) > 1e-3
    assert max_weight_diff(plain.get_weights(), _reference(scaffold, x, y, 0 * correction)) <= (
        TOLERANCE
    )


def test_train_refuses_a_missing_or_misshapen_correction(scaffold: Exported) -> None:
    x, y = batches_for(scaffold.manifest, seed=9, steps=1)[0]
    model = scaffold.open()
    with pytest.raises(RuntimeInputError, match="correction"):
        model.train(x, y, LR)
    with pytest.raises(RuntimeInputError, match="correction"):
        model.train(x, y, LR, correction=np.zeros(3, np.float32))
    assert max_weight_diff(model.get_weights(), scaffold.initial) == 0.0
