"""Zoo models: export with builtin ops only and train on LiteRT exactly like TF autodiff."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedrt.cli import main
from fedrt.model_export import inspect_file, zoo
from fedrt.model_export.errors import UnsupportedModel
from tests.model_export.conftest import (
    TOLERANCE,
    Exported,
    batches_for,
    keras_sgd,
    keras_weights,
    litert_sgd,
    max_weight_diff,
)


def _sparse() -> Any:
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("name", ["zoo_mlp", "zoo_cnn", "zoo_lstm_lm", "zoo_gru_lm"])
def test_zoo_model_has_only_builtin_ops_and_initializer(
    name: str, request: pytest.FixtureRequest
) -> None:
    exported: Exported = request.getfixturevalue(name)
    report = inspect_file(exported.directory / "model.tflite")
    assert report.ok, report.problems
    assert report.flex_ops == ()
    assert report.custom_ops == ()
    assert report.has_call_once
    assert report.uninitialized == ()
    assert main(["inspect", str(exported.directory / "model.tflite")]) == 0
    assert sorted(report.signatures) == [
        "evaluate", "get_weights", "infer", "read_weights", "set_weights", "train"
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["zoo_mlp", "zoo_cnn", "zoo_lstm_lm", "zoo_gru_lm"])
def test_zoo_model_trains_like_tensorflow_autodiff(
    name: str, request: pytest.FixtureRequest
) -> None:
    exported: Exported = request.getfixturevalue(name)
    batches = batches_for(exported.manifest, seed=1, vocab=20)
    model = exported.open()
    assert max_weight_diff(model.get_weights(), keras_weights(exported.keras_model)) == 0.0
    lite_losses = litert_sgd(model, batches)
    ref_losses = keras_sgd(exported.keras_model, batches, _sparse())
    assert max_weight_diff(model.get_weights(), keras_weights(exported.keras_model)) <= TOLERANCE
    np.testing.assert_allclose(lite_losses, ref_losses, rtol=1e-4, atol=1e-5)
    assert max_weight_diff(model.get_weights(), exported.initial) > 1e-3  # it did train


def test_cnn_scales_with_the_input_shape() -> None:
    small = zoo.cnn((8, 8, 1), 10)
    large = zoo.cnn((28, 28, 1), 10)
    assert small.layers[0].get_config()["kernel_size"] == (3, 3)
    assert large.layers[0].get_config()["kernel_size"] == (5, 5)
    assert large.count_params() > small.count_params()


def test_zoo_rejects_impossible_input_shapes() -> None:
    with pytest.raises(UnsupportedModel, match="H,W,C"):
        zoo.cnn((8, 8), 10)
    with pytest.raises(UnsupportedModel, match="sequence length"):
        zoo.lstm_lm((4, 4), 10)
    with pytest.raises(UnsupportedModel, match="gru_lm needs"):
        zoo.gru_lm((4, 4), 10)
    with pytest.raises(UnsupportedModel, match="cell 'rnn'"):
        zoo.lstm_lm((4,), 10, cell="rnn")


def test_gru_lm_is_the_language_model_with_a_gru() -> None:
    model = zoo.gru_lm((5,), 30, embed=4, units=6)
    assert [type(layer).__name__ for layer in model.layers] == ["Embedding", "GRU", "Dense"]
    assert model.layers[1].get_config()["reset_after"]
