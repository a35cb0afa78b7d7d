"""Every supported layer and loss: 10 LiteRT train steps equal 10 TF-autodiff steps on Keras.

Small models together cover each layer, option and loss; each is exported once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.model_export import inspect_file
from tests.model_export.conftest import (
    TOLERANCE,
    Exported,
    batches_for,
    export,
    keras_sgd,
    keras_weights,
    litert_sgd,
    max_weight_diff,
)


def dense_stack() -> Any:
    """Dense, relu/tanh/sigmoid/softmax activations, ReLU(6), LayerNorm; a folded Softmax."""
    import keras

    k = keras.layers
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((6,)),
            k.Dense(8, activation="relu"),
            k.Dense(8, activation="tanh"),
            k.Dense(8, activation="sigmoid"),
            k.LayerNormalization(),
            k.Dense(8, bias_initializer="random_normal"),
            k.ReLU(max_value=6.0),
            k.Activation("softmax"),
            k.Dense(8, activation="relu6"),
            k.Dense(3),
            k.Softmax(),
        ]
    )


def conv_stack() -> Any:
    """Conv2D (SAME, relu), rectangular MaxPool with a cropped edge, strided SAME depthwise
    with a depth multiplier, VALID conv. (The zoo CNN covers square max pooling.)"""
    import keras

    k = keras.layers
    keras.utils.set_random_seed(4)
    return keras.Sequential(
        [
            keras.Input((10, 10, 2)),
            k.Conv2D(3, 3, padding="same", activation="relu"),
            k.MaxPooling2D((3, 2)),
            k.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2),
            k.ReLU(6.0),
            k.Conv2D(4, 2, padding="valid"),
            k.Flatten(),
            k.Dense(1, activation="sigmoid"),
        ]
    )


def strided_stack() -> Any:
    """Strided SAME conv, strided rectangular VALID depthwise, rectangular and square
    AvgPool (one cropping), 1x1 conv, GlobalAvgPool, Reshape and Dense on a 3-D tensor."""
    import keras

    k = keras.layers
    keras.utils.set_random_seed(5)
    return keras.Model(*_chain(
        keras.Input((15, 15, 2)),
        [
            k.Conv2D(4, 3, strides=2, padding="same", use_bias=False),
            k.DepthwiseConv2D((2, 3), strides=2, padding="valid", activation="tanh"),
            k.AveragePooling2D((2, 1)),
            k.AveragePooling2D(2),
            k.Conv2D(4, 1, activation="sigmoid"),
            k.GlobalAveragePooling2D(),
            k.Reshape((2, 2)),
            k.Dense(3),
        ],
    ))  # fmt: skip


def wide_conv_stack() -> Any:
    """Convolutions over >= 8 input channels (one-pass im2col), strided SAME and a
    rectangular kernel with unequal strides, VALID (col2im of dilated parts)."""
    import keras

    k = keras.layers
    keras.utils.set_random_seed(8)
    return keras.Sequential(
        [
            keras.Input((9, 9, 8)),
            k.Conv2D(10, 3, strides=2, padding="same", activation="relu"),
            k.Conv2D(3, (3, 2), strides=(2, 1), padding="valid"),
            k.Flatten(),
            k.Dense(2),
        ]
    )


def row_tap_stack() -> Any:
    """Stride-1 convolutions over >= 8 channels on maps large enough for row taps (one
    matmul for all kernel rows): SAME 5x5, whose dx is then a row-tap correlation too,
    and VALID 3x3 with fewer output channels (dx by col2im)."""
    import keras

    k = keras.layers
    keras.utils.set_random_seed(9)
    return keras.Sequential(
        [
            keras.Input((16, 16, 8)),
            k.Conv2D(8, 5, padding="same", activation="tanh"),
            k.Conv2D(12, 5, padding="same", activation="relu"),
            k.Conv2D(3, 3, padding="valid"),
            k.GlobalAveragePooling2D(),
            k.Dense(2),
        ]
    )


def inner_strided_stack() -> Any:
    """Convolutions whose input gradient is taken after the first layer, by the depthwise
    adjoint of im2col: over few channels (one-hot gather) stride 1 and stride 2 SAME on an
    odd map; over 8 channels (sliced patches) stride 1 on a map too small for row taps and
    stride 2 VALID leaving an untouched edge row."""
    import keras

    k = keras.layers
    keras.utils.set_random_seed(10)
    return keras.Sequential(
        [
            keras.Input((11, 11, 3)),
            k.Conv2D(4, 3, padding="same", activation="tanh"),
            k.Conv2D(5, 3, padding="same", activation="sigmoid"),
            k.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            k.Conv2D(8, 3, padding="same", activation="tanh"),
            k.Conv2D(3, 3, strides=2, padding="valid"),
            k.Flatten(),
            k.Dense(2),
        ]
    )


def _chain(inputs: Any, layers: list[Any]) -> tuple[Any, Any]:
    x = inputs
    for layer in layers:
        x = layer(x)
    return inputs, x


def sequence_stack() -> Any:
    """Embedding, LSTM returning sequences, LayerNorm and Dense on [B, T, F]. (GRU:
    ``gru_stack``.)"""
    import keras

    k = keras.layers
    keras.utils.set_random_seed(6)
    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            k.Embedding(7, 4),
            k.LSTM(6, return_sequences=True),
            k.LayerNormalization(epsilon=1e-2),
            k.Dense(7),
        ]
    )


def gru_stack() -> Any:
    """GRU in both conventions: reset_after (bias [2, 3u]) returning sequences, reset
    before the product (bias [3u]) with a relu candidate, and one without bias."""
    import keras

    k = keras.layers
    keras.utils.set_random_seed(7)
    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            k.Embedding(7, 4),
            k.GRU(6, return_sequences=True, bias_initializer="random_normal"),
            k.GRU(5, reset_after=False, activation="relu", return_sequences=True,
                  bias_initializer="random_normal"),
            k.GRU(4, use_bias=False),
            k.Dense(7),
        ]
    )  # fmt: skip


CASES: dict[str, tuple[Callable[[], Any], str, int]] = {
    "dense_stack": (dense_stack, "sparse_ce", 8),
    "conv_stack": (conv_stack, "binary_ce", 4),
    "strided_stack": (strided_stack, "mse", 4),
    "sequence_stack": (sequence_stack, "sparse_ce", 4),
    "gru_stack": (gru_stack, "sparse_ce", 4),
    "wide_conv_stack": (wide_conv_stack, "binary_ce", 4),
    "row_tap_stack": (row_tap_stack, "sparse_ce", 4),
    "inner_strided_stack": (inner_strided_stack, "mse", 4),
}


def _keras_loss(name: str, model: Any) -> Any:
    import keras

    folded = model.layers[-1].__class__.__name__ in ("Softmax",) or (
        model.layers[-1].get_config().get("activation") == "sigmoid"
    )
    if name == "sparse_ce":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=not folded)
    if name == "binary_ce":
        return keras.losses.BinaryCrossentropy(from_logits=not folded)
    return keras.losses.MeanSquaredError()


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest, export_root: Path) -> tuple[str, Exported]:
    factory, loss, batch = CASES[request.param]
    return loss, export(factory, export_root / request.param, batch_size=batch, loss=loss)


def test_every_layer_exports_with_builtin_ops_only(case: tuple[str, Exported]) -> None:
    _, exported = case
    report = inspect_file(exported.directory / "model.tflite")
    assert report.ok, report.problems


def test_litert_steps_match_tensorflow_autodiff(case: tuple[str, Exported]) -> None:
    loss, exported = case
    batches = batches_for(exported.manifest, seed=7, vocab=7)
    model = exported.open()
    assert max_weight_diff(model.get_weights(), keras_weights(exported.keras_model)) == 0.0
    lite = litert_sgd(model, batches)
    ref = keras_sgd(exported.keras_model, batches, _keras_loss(loss, exported.keras_model))
    diff = max_weight_diff(model.get_weights(), keras_weights(exported.keras_model))
    assert diff <= TOLERANCE
    np.testing.assert_allclose(lite, ref, rtol=1e-4, atol=1e-5)
    assert max_weight_diff(model.get_weights(), exported.initial) > 1e-3


def test_infer_matches_keras_on_any_batch_size(case: tuple[str, Exported]) -> None:
    _, exported = case
    model = exported.open()
    x = batches_for(exported.manifest, seed=8, steps=1, vocab=7)[0][0]
    x = np.concatenate([x, x[:3]])  # not the train batch size
    logits = model.infer(x)
    keras_model = exported.keras_model
    keras_model.set_weights([exported.initial[n] for n in keras_weights(keras_model)])
    expected = np.asarray(keras_model(x, training=False))
    last = keras_model.layers[-1]
    if type(last).__name__ == "Softmax" or last.get_config().get("activation") == "sigmoid":
        # The loss absorbed the final softmax/sigmoid: infer returns logits.
        logits = _softmax(logits) if expected.shape[-1] > 1 else 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def _softmax(z: Any) -> Any:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
