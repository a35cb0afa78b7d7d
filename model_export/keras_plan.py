"""Reads a Keras model into a plan: the ordered layer steps and initial weights to re-build.

The exporter never runs Keras layers in the exported graph (Keras 3 variables inside a
``tf.Module`` are not initialized after conversion, and Keras' gradients need Flex ops);
it re-implements each supported layer with ``tf_ops``. This module only reads classes and
configs, so it imports neither keras nor tensorflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.model_export.errors import UnsupportedLayer, UnsupportedModel

ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "softmax", "tanh")
SUPPORTED_LAYERS = (
    "Activation",
    "AveragePooling2D",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Embedding",
    "Flatten",
    "GRU",
    "GlobalAveragePooling2D",
    "InputLayer",
    "LSTM",
    "LayerNormalization",
    "MaxPooling2D",
    "ReLU",
    "Reshape",
    "Softmax",
)
# Activations that a loss absorbs: a trailing one is dropped so the loss sees logits.
FOLDED_BY_LOSS = {"sparse_ce": "softmax", "binary_ce": "sigmoid"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Weight:
    """One trainable tensor: its manifest name and initial value."""

    name: str
    value: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One layer of the plan: a kind understood by ``training_graph`` plus its options."""

    kind: str
    layer: str
    options: dict[str, Any] = field(default_factory=dict)
    weights: tuple[Weight, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Everything the training graph needs, read out of a Keras model."""

    steps: tuple[Step, ...]
    input_shape: tuple[int, ...]
    input_dtype: str

    @property
    def weights(self) -> tuple[Weight, ...]:
        return tuple(w for s in self.steps for w in s.weights)

    @property
    def has_dropout(self) -> bool:
        return any(s.kind == "dropout" for s in self.steps)


def plan_model(model: Any, loss: str) -> Plan:
    """Translate ``model`` (a built Keras Sequential or single-chain functional model)."""
    layers = _chain(model)
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise UnsupportedModel("the model must be built with exactly one input")
    shape = tuple(inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise UnsupportedModel(f"input shape {shape} must be static apart from the batch")
    steps: list[Step] = []
    for layer in layers:
        steps.extend(_steps(layer))
    if not steps:
        raise UnsupportedModel("the model has no layers")
    steps = _fold_output_activation(steps, loss)
    names = [w.name for s in steps for w in s.weights]
    if len(set(names)) != len(names):
        raise UnsupportedModel(f"weight names collide after sanitizing: {names}")
    if not names:
        raise UnsupportedModel("the model has no trainable weights")
    dtype = "int32" if steps[0].kind == "embedding" else "float32"
    return Plan(steps=tuple(steps), input_shape=tuple(int(d) for d in shape), input_dtype=dtype)


def _chain(model: Any) -> list[Any]:
    """The model's layers as one chain; nested Sequential models are flattened."""
    out: list[Any] = []
    for layer in model.layers:
        if type(layer).__name__ == "Sequential":
            out.extend(_chain(layer))
            continue
        out.append(layer)
    if type(model).__name__ != "Sequential":
        previous = model.inputs[0] if getattr(model, "inputs", None) else None
        for layer in out:
            if type(layer).__name__ == "InputLayer":
                continue
            nodes = getattr(layer, "_inbound_nodes", [])
            if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
                raise UnsupportedModel(
                    f"layer {layer.name!r} is not part of a single chain: only Sequential "
                    "and single-input, single-path functional models are supported"
                )
            if previous is not None and nodes[0].input_tensors[0] is not previous:
                raise UnsupportedModel(f"layer {layer.name!r} does not follow the previous one")
            previous = nodes[0].output_tensors[0]
    return out


def weight_name(layer: Any, weight: Any) -> str:
    """The manifest name of one Keras weight: `{layer}_{weight}`, made an identifier."""
    raw = f"{layer.name}_{str(weight.name).rsplit('/', 1)[-1]}"
    return re.sub(r"[^A-Za-z0-9_]", "_", raw)


def _weights(layer: Any, expected: tuple[str, ...]) -> tuple[Weight, ...]:
    found = {str(w.name).rsplit("/", 1)[-1]: w for w in layer.weights}
    if not all(getattr(w, "trainable", True) for w in layer.weights):
        raise _unsupported(layer, "non-trainable weights are not supported")
    missing = [n for n in expected if n not in found]
    if missing or len(found) != len(expected):
        raise _unsupported(layer, f"expected weights {expected}, found {tuple(found)}")
    return tuple(
        Weight(name=weight_name(layer, found[n]), value=np.asarray(found[n].numpy(), np.float32))
        for n in expected
    )


def _unsupported(layer: Any, reason: str) -> UnsupportedLayer:
    return UnsupportedLayer(f"{layer.name} ({type(layer).__name__})", reason, SUPPORTED_LAYERS)


def _activation(layer: Any, value: Any) -> str:
    name = "linear" if value is None else value
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise _unsupported(layer, f"activation {value!r} is not one of {', '.join(ACTIVATIONS)}")
    return name


def _check(layer: Any, config: dict[str, Any], **allowed: Any) -> None:
    for key, value in allowed.items():
        got = config.get(key, value)
        if isinstance(value, tuple):
            got = tuple(got) if isinstance(got, (list, tuple)) else (got,) * len(value)
        if got != value:
            raise _unsupported(layer, f"option {key}={got!r} is not supported (only {value!r})")


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _with_activation(layer: Any, step: Step, config: dict[str, Any]) -> list[Step]:
    act = _activation(layer, config.get("activation"))
    if act == "linear":
        return [step]
    return [step, Step(kind="activation", layer=layer.name, options={"fn": act})]


def _steps(layer: Any) -> list[Step]:
    kind = type(layer).__name__
    config: dict[str, Any] = layer.get_config()
    if kind not in SUPPORTED_LAYERS:
        raise _unsupported(layer, f"{kind} has no builtin-only training graph")
    if config.get("data_format", "channels_last") != "channels_last":
        raise _unsupported(layer, "only data_format='channels_last' is supported")
    if kind == "InputLayer":
        return []
    if kind == "Dense":
        names: tuple[str, ...] = ("kernel", "bias") if config.get("use_bias", True) else ("kernel",)
        _check(layer, config, lora_rank=None)
        step = Step(kind="dense", layer=layer.name, weights=_weights(layer, names))
        return _with_activation(layer, step, config)
    if kind in ("Conv2D", "DepthwiseConv2D"):
        _check(layer, config, dilation_rate=(1, 1), groups=1)
        # Keras 3 names the depthwise filter "kernel"; older releases "depthwise_kernel".
        present = {str(w.name).rsplit("/", 1)[-1] for w in layer.weights}
        main = "depthwise_kernel" if "depthwise_kernel" in present else "kernel"
        names = (main, "bias") if config.get("use_bias", True) else (main,)
        options = {"strides": _pair(config["strides"]), "padding": config["padding"].upper()}
        if options["padding"] not in ("SAME", "VALID"):
            raise _unsupported(layer, f"padding {config['padding']!r} is not supported")
        if kind == "DepthwiseConv2D" and options["strides"][0] != options["strides"][1]:
            # TensorFlow's own kernel refuses them, so no reference could check the gradient.
            raise _unsupported(layer, f"unequal strides {options['strides']} are not supported")
        step_kind = "conv2d" if kind == "Conv2D" else "depthwise_conv2d"
        step = Step(
            kind=step_kind, layer=layer.name, options=options, weights=_weights(layer, names)
        )
        return _with_activation(layer, step, config)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        pool = _pair(config["pool_size"])
        strides = _pair(config.get("strides") or pool)
        if strides != pool:
            raise _unsupported(layer, f"strides {strides} must equal pool_size {pool}")
        padding = config.get("padding", "valid").upper()
        step_kind = "max_pool" if kind == "MaxPooling2D" else "avg_pool"
        return [Step(kind=step_kind, layer=layer.name, options={"pool": pool, "padding": padding})]
    if kind == "GlobalAveragePooling2D":
        keep = bool(config.get("keepdims", False))
        return [Step(kind="global_avg_pool", layer=layer.name, options={"keepdims": keep})]
    if kind == "Flatten":
        return [Step(kind="flatten", layer=layer.name)]
    if kind == "Reshape":
        target = tuple(int(d) for d in config["target_shape"])
        return [Step(kind="reshape", layer=layer.name, options={"target": target})]
    if kind == "ReLU":
        if config.get("negative_slope", 0.0) or config.get("threshold", 0.0):
            raise _unsupported(layer, "negative_slope and threshold must be 0")
        top = config.get("max_value")
        if top not in (None, 6, 6.0):
            raise _unsupported(layer, f"max_value={top!r} is not supported (only None or 6)")
        fn = "relu" if top is None else "relu6"
        return [Step(kind="activation", layer=layer.name, options={"fn": fn})]
    if kind == "Activation":
        fn = _activation(layer, config.get("activation"))
        return (
            []
            if fn == "linear"
            else [Step(kind="activation", layer=layer.name, options={"fn": fn})]
        )
    if kind == "Softmax":
        _check(layer, config, axis=-1)
        return [Step(kind="activation", layer=layer.name, options={"fn": "softmax"})]
    if kind == "Dropout":
        if config.get("noise_shape") is not None:
            raise _unsupported(layer, "noise_shape is not supported")
        rate = float(config["rate"])
        if not 0.0 <= rate < 1.0:
            raise _unsupported(layer, f"rate {rate} must be in [0, 1)")
        seed = int(config.get("seed") or 0)
        return [Step(kind="dropout", layer=layer.name, options={"rate": rate, "seed": seed})]
    if kind == "LayerNormalization":
        axis = config.get("axis", -1)
        if axis not in (-1, [-1]) and axis != [len(layer.input.shape) - 1]:
            raise _unsupported(layer, f"axis={axis!r} is not supported (only the last axis)")
        _check(layer, config, rms_scaling=False)
        names = tuple(
            n
            for n, on in (
                ("gamma", config.get("scale", True)),
                ("beta", config.get("center", True)),
            )
            if on
        )
        options = {"epsilon": float(config.get("epsilon", 1e-3)), "params": names}
        return [
            Step(
                kind="layer_norm", layer=layer.name, options=options, weights=_weights(layer, names)
            )
        ]
    if kind == "Embedding":
        _check(layer, config, mask_zero=False)
        return [Step(kind="embedding", layer=layer.name, weights=_weights(layer, ("embeddings",)))]
    return _recurrent_steps(layer, kind, config)


def _recurrent_steps(layer: Any, kind: str, config: dict[str, Any]) -> list[Step]:
    """LSTM or GRU over the whole sequence from a zero state (what Keras does by default)."""
    _check(
        layer,
        config,
        go_backwards=False,
        stateful=False,
        return_state=False,
        dropout=0.0,
        recurrent_dropout=0.0,
    )
    names = (
        ("kernel", "recurrent_kernel", "bias")
        if config.get("use_bias", True)
        else ("kernel", "recurrent_kernel")
    )
    options: dict[str, Any] = {
        "units": int(config["units"]),
        "return_sequences": bool(config.get("return_sequences", False)),
        "activation": _activation(layer, config.get("activation", "tanh")),
        "recurrent_activation": _activation(layer, config.get("recurrent_activation", "sigmoid")),
    }
    if kind == "GRU":
        options["reset_after"] = bool(config.get("reset_after", True))
    weights = _weights(layer, names)
    return [Step(kind=kind.lower(), layer=layer.name, options=options, weights=weights)]


def _fold_output_activation(steps: list[Step], loss: str) -> list[Step]:
    folded = FOLDED_BY_LOSS.get(loss)
    last = steps[-1]
    if folded and last.kind == "activation" and last.options["fn"] == folded:
        return steps[:-1]
    return steps
