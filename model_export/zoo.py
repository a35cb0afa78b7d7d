"""Reference Keras models (``zoo:NAME``): mlp, cnn (McMahan et al. 2017 style), lstm_lm, gru_lm.

Keras is imported inside the builders, so listing the zoo stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedrt.model_export.errors import UnsupportedModel


def _init(seed: int, index: int) -> Any:
    import keras

    return keras.initializers.GlorotUniform(seed=seed * 1000 + index)


def mlp(input_shape: tuple[int, ...], classes: int, *, hidden: int = 64, seed: int = 0) -> Any:
    """Flatten -> Dense(hidden, relu) -> Dense(classes) logits."""
    import keras

    layers: list[Any] = [keras.Input(shape=input_shape)]
    if len(input_shape) > 1:
        layers.append(keras.layers.Flatten(name="flatten"))
    layers += [
        keras.layers.Dense(
            hidden, activation="relu", kernel_initializer=_init(seed, 0), name="hidden"
        ),
        keras.layers.Dense(classes, kernel_initializer=_init(seed, 1), name="logits"),
    ]
    return keras.Sequential(layers, name="mlp")


def cnn(input_shape: tuple[int, ...], classes: int, *, seed: int = 0) -> Any:
    """Two conv (+2x2 max-pool) blocks and two dense layers, scaled to the input.

    McMahan et al.'s MNIST CNN (5x5 convs of 32 and 64 filters, 512 dense units) at 28x28;
    3x3 kernels and 128 dense units for small inputs such as the 8x8 digits.
    """
    import keras

    if len(input_shape) != 3:
        raise UnsupportedModel(f"cnn needs an input shape H,W,C, got {input_shape}")
    height, width, _ = input_shape
    small = min(height, width) < 16
    kernel = 3 if small else 5
    dense = 128 if small else 512
    layers: list[Any] = [keras.Input(shape=input_shape)]
    size = (height, width)
    for index, filters in enumerate((32, 64)):
        layers.append(
            keras.layers.Conv2D(
                filters,
                kernel,
                padding="same",
                activation="relu",
                kernel_initializer=_init(seed, index),
                name=f"conv{index + 1}",
            )
        )
        if size[0] % 2 == 0 and size[1] % 2 == 0 and min(size) >= 4:
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{index + 1}"))
            size = (size[0] // 2, size[1] // 2)
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(dense, activation="relu", kernel_initializer=_init(seed, 2), name="fc"),
        keras.layers.Dense(classes, kernel_initializer=_init(seed, 3), name="logits"),
    ]
    return keras.Sequential(layers, name="cnn")


RECURRENT_CELLS = ("gru", "lstm")


def lstm_lm(
    input_shape: tuple[int, ...],
    classes: int,
    *,
    embed: int = 32,
    units: int = 64,
    seed: int = 0,
    cell: str = "lstm",
) -> Any:
    """Next-token model: tokens [T] -> Embedding -> LSTM (or GRU) -> Dense(vocab) logits."""
    import keras

    name = f"{cell}_lm"
    if cell not in RECURRENT_CELLS:
        raise UnsupportedModel(f"cell {cell!r} is not one of {', '.join(RECURRENT_CELLS)}")
    if len(input_shape) != 1:
        raise UnsupportedModel(f"{name} needs an input shape (sequence length,), got {input_shape}")
    layer = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="int32"),
            keras.layers.Embedding(
                classes,
                embed,
                embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed),
                name="embed",
            ),
            layer(
                units,
                kernel_initializer=_init(seed, 1),
                recurrent_initializer=keras.initializers.Orthogonal(seed=seed),
                name=cell,
            ),
            keras.layers.Dense(classes, kernel_initializer=_init(seed, 2), name="logits"),
        ],
        name=name,
    )


def gru_lm(
    input_shape: tuple[int, ...], classes: int, *, embed: int = 32, units: int = 64, seed: int = 0
) -> Any:
    """``lstm_lm`` with a GRU (Keras defaults: reset_after, bias [2, 3*units])."""
    return lstm_lm(input_shape, classes, embed=embed, units=units, seed=seed, cell="gru")


ZOO: dict[str, Callable[..., Any]] = {"cnn": cnn, "gru_lm": gru_lm, "lstm_lm": lstm_lm, "mlp": mlp}
