"""Reading Keras models: clear errors for unsupported layers, options and topologies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fedrt.model_export.errors import UnsupportedLayer, UnsupportedModel
from fedrt.model_export.keras_plan import SUPPORTED_LAYERS, plan_model


def _seq(input_shape: tuple[int, ...], *layers: Any, dtype: str = "float32") -> Any:
    import keras

    return keras.Sequential([keras.Input(input_shape, dtype=dtype), *layers])


def _layers() -> Any:
    import keras

    return keras.layers


UNSUPPORTED: dict[str, tuple[Callable[[], Any], str]] = {
    "batchnorm": (lambda: _seq((4,), _layers().BatchNormalization()), "BatchNormalization"),
    "gelu": (lambda: _seq((4,), _layers().Dense(3, activation="gelu")), "activation 'gelu'"),
    "dilation": (
        lambda: _seq((8, 8, 1), _layers().Conv2D(2, 3, dilation_rate=2)),
        "dilation_rate",
    ),
    "groups": (lambda: _seq((8, 8, 2), _layers().Conv2D(2, 3, groups=2)), "groups"),
    "overlapping_pool": (
        lambda: _seq((8, 8, 1), _layers().MaxPooling2D(3, strides=2)),
        "must equal pool_size",
    ),
    "depthwise_strides": (
        lambda: _seq((8, 8, 1), _layers().DepthwiseConv2D(3, strides=(1, 2))),
        "unequal strides",
    ),
    "leaky_relu": (lambda: _seq((4,), _layers().ReLU(negative_slope=0.1)), "negative_slope"),
    "relu_max_3": (lambda: _seq((4,), _layers().ReLU(max_value=3.0)), "max_value"),
    "go_backwards": (
        lambda: _seq((5, 3), _layers().LSTM(4, go_backwards=True)),
        "go_backwards",
    ),
    "recurrent_dropout": (
        lambda: _seq((5, 3), _layers().LSTM(4, recurrent_dropout=0.2)),
        "recurrent_dropout",
    ),
    "mask_zero": (
        lambda: _seq((5,), _layers().Embedding(9, 3, mask_zero=True), dtype="int32"),
        "mask_zero",
    ),
    "rms_scaling": (
        lambda: _seq((4,), _layers().LayerNormalization(rms_scaling=True)),
        "rms_scaling",
    ),
    "noise_shape": (
        lambda: _seq((4,), _layers().Dropout(0.5, noise_shape=(None, 1))),
        "noise_shape",
    ),
    "gru_go_backwards": (
        lambda: _seq((5, 3), _layers().GRU(4, go_backwards=True)),
        "go_backwards",
    ),
    "gru_dropout": (lambda: _seq((5, 3), _layers().GRU(4, dropout=0.1)), "dropout"),
    "gru_activation": (
        lambda: _seq((5, 3), _layers().GRU(4, recurrent_activation="gelu")),
        "activation 'gelu'",
    ),
    "simple_rnn": (lambda: _seq((5, 3), _layers().SimpleRNN(4)), "SimpleRNN"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_layers_and_options_name_the_problem(case: str) -> None:
    factory, message = UNSUPPORTED[case]
    with pytest.raises(UnsupportedLayer, match=message) as info:
        plan_model(factory(), "mse")
    assert info.value.supported == tuple(sorted(SUPPORTED_LAYERS))
    assert "Dense" in str(info.value)


def test_branching_functional_model_is_refused() -> None:
    import keras

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, keras.layers.Add()([inputs, hidden]))
    with pytest.raises(UnsupportedModel):
        plan_model(model, "mse")


def test_two_input_model_is_refused() -> None:
    import keras

    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], keras.layers.Dense(2)(a))
    with pytest.raises(UnsupportedModel, match="one input"):
        plan_model(model, "mse")


def test_final_softmax_is_folded_only_into_cross_entropy() -> None:
    model = _seq((4,), _layers().Dense(3, activation="softmax"))
    assert [s.kind for s in plan_model(model, "sparse_ce").steps] == ["dense"]
    assert [s.kind for s in plan_model(model, "mse").steps] == ["dense", "activation"]
    sigmoid = _seq((4,), _layers().Dense(1), _layers().Activation("sigmoid"))
    assert [s.kind for s in plan_model(sigmoid, "binary_ce").steps] == ["dense"]


def test_plan_reads_weights_in_layer_order_and_input_dtype() -> None:
    model = _seq(
        (5,), _layers().Embedding(9, 3, name="emb"), _layers().LSTM(4, name="rnn"), dtype="int32"
    )
    plan = plan_model(model, "mse")
    assert plan.input_dtype == "int32"
    assert plan.input_shape == (5,)
    assert [w.name for w in plan.weights] == [
        "emb_embeddings", "rnn_kernel", "rnn_recurrent_kernel", "rnn_bias"
    ]  # fmt: skip
    assert plan.weights[1].value.shape == (3, 16)


def test_nested_sequential_is_flattened() -> None:
    import keras

    inner = keras.Sequential([keras.layers.Dense(3, name="inner_dense")])
    model = _seq((4,), inner, _layers().Dense(2, name="outer"))
    assert [w.name for w in plan_model(model, "mse").weights] == [
        "inner_dense_kernel", "inner_dense_bias", "outer_kernel", "outer_bias"
    ]  # fmt: skip
