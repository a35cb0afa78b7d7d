"""The tf.Module holding weights in plain tf.Variables and the six exported signatures.

Weights are plain ``tf.Variable``s created from the plan's numpy values, so the converter
emits a ``CALL_ONCE`` initializer for them (Keras 3 variables inside a tf.Module get none).
The forward pass is stateless: ``forward(params, x)`` reads tensors, never layer objects.
Variable names are part of the contract (``weights_file`` finds initial values by them):
each weight is named as in the manifest, its FedProx anchor ``{name}_anchor``, its momentum
velocity ``{name}_velocity``; the dropout step counter is ``step_count`` (int32 [1]).
SCAFFOLD (``scaffold=True``) adds one train input ``correction``: float32 [num_params], the
flat c - c_i in manifest order, added to each gradient before the step (no state).
``read_weights(unused)`` is ``get_weights`` with one ignored input: LiteRT's Java
``Interpreter.runSignature`` refuses an empty input map, so Java cannot run ``get_weights``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from fedrt.model_export import tf_conv, tf_ops, tf_recurrent
from fedrt.model_export.keras_plan import Plan, Step
from fedrt.model_export.manifest import CORRECTION_INPUT, READ_WEIGHTS, READ_WEIGHTS_INPUT

Tensor = Any
LossFn = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor]]


def _dense(x: Tensor, params: Sequence[Tensor], native: bool) -> Tensor:
    kernel = params[0]
    if len(x.shape) == 2:
        y = tf_ops.matmul(x, kernel, native)
    else:
        lead = tf.shape(x)[:-1] if x.shape[0] is None else list(x.shape[:-1])
        flat = tf.reshape(x, [-1, int(x.shape[-1])])
        y = tf.reshape(
            tf_ops.matmul(flat, kernel, native), tf.concat([lead, [kernel.shape[-1]]], 0)
        )
        if x.shape[0] is not None:
            y = tf.ensure_shape(y, [*x.shape[:-1], kernel.shape[-1]])
    return y + params[1] if len(params) > 1 else y


# Activations that commute with max pooling exactly (monotone, and where two inputs tie
# after the activation its gradient is 0 at both, so the pooled gradient matches too).
POOL_COMMUTES = ("relu", "relu6")


def _pool_before_activation(
    steps: list[tuple[Step, tuple[int, int]]],
) -> list[tuple[Step, tuple[int, int]]]:
    """Max pooling moved ahead of the relu before it: the activation and its gradient
    then run on the pooled map (4x smaller for 2x2), with identical values."""
    out = list(steps)
    for k in range(len(out) - 1):
        act, pool = out[k][0], out[k + 1][0]
        if (
            act.kind == "activation"
            and act.options["fn"] in POOL_COMMUTES
            and pool.kind == "max_pool"
        ):
            out[k], out[k + 1] = out[k + 1], out[k]
    return out


class Forward:
    """Applies a plan's steps to tensors; ``training`` turns dropout on."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.slices: list[tuple[int, int]] = []
        start = 0
        for step in plan.steps:
            self.slices.append((start, start + len(step.weights)))
            start += len(step.weights)
        self.order = _pool_before_activation(list(zip(plan.steps, self.slices, strict=True)))

    def __call__(
        self,
        params: Sequence[Tensor],
        x: Tensor,
        *,
        training: bool,
        native: bool,
        step_count: Tensor | None = None,
    ) -> Tensor:
        for step, (lo, hi) in self.order:
            x = self._apply(step, params[lo:hi], x, training, native, step_count)
        return x

    def _apply(
        self,
        step: Step,
        params: Sequence[Tensor],
        x: Tensor,
        training: bool,
        native: bool,
        step_count: Tensor | None,
    ) -> Tensor:
        opts = step.options
        kind = step.kind
        if kind == "dense":
            return _dense(x, params, native)
        if kind in ("conv2d", "depthwise_conv2d"):
            conv = tf_conv.conv2d if kind == "conv2d" else tf_conv.depthwise_conv2d
            y = conv(x, params[0], opts["strides"], opts["padding"], native)
            return y + params[1] if len(params) > 1 else y
        if kind in ("max_pool", "avg_pool"):
            pool = tf_ops.max_pool if kind == "max_pool" else tf_ops.avg_pool
            return pool(x, opts["pool"], native)
        if kind == "activation":
            return tf_ops.activate(opts["fn"], x, native)
        if kind == "global_avg_pool":
            return tf.reduce_mean(x, axis=[1, 2], keepdims=opts["keepdims"])
        if kind == "flatten":
            return tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
        if kind == "reshape":
            return tf.reshape(x, [-1, *opts["target"]])
        if kind == "dropout":
            if not training or opts["rate"] == 0.0:
                return x
            assert step_count is not None, "dropout needs the step counter"
            shape = [int(d) for d in x.shape]
            keep = tf_ops.uniform_hash(shape, opts["seed"], step_count) >= opts["rate"]
            return x * (tf.cast(keep, x.dtype) / (1.0 - opts["rate"]))
        if kind == "layer_norm":
            y = tf_ops.layer_norm(x, opts["epsilon"], native)
            named = dict(zip(opts["params"], params, strict=True))
            if "gamma" in named:
                y = y * named["gamma"]
            return y + named["beta"] if "beta" in named else y
        if kind == "embedding":
            return tf_ops.embedding(x, params[0], native)
        if kind == "lstm":
            return tf_recurrent.lstm(x, params, opts, native)
        if kind == "gru":
            return tf_recurrent.gru(x, params, opts, native)
        raise AssertionError(f"unknown step kind {kind}")


def _sparse_ce(logits: Tensor, y: Tensor, native: bool) -> tuple[Tensor, Tensor]:
    classes = int(logits.shape[-1])
    log_p = tf_ops.log_softmax(logits, native)
    loss = -tf.reduce_mean(tf.reduce_sum(tf.one_hot(y, classes) * log_p, axis=-1))
    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
    return loss, tf.reduce_sum(tf.cast(hits, tf.int32))


def _binary_ce(logits: Tensor, y: Tensor, native: bool) -> tuple[Tensor, Tensor]:
    loss = tf.reduce_mean(tf_ops.sigmoid_ce(logits, y, native))
    hits = tf.equal(logits > 0.0, y > 0.5)
    return loss, tf.reduce_sum(tf.cast(hits, tf.int32))


def _mse(logits: Tensor, y: Tensor, native: bool) -> tuple[Tensor, Tensor]:
    err = logits - y
    hits = tf.abs(err) < 0.5
    return tf.reduce_mean(err * err), tf.reduce_sum(tf.cast(hits, tf.int32))


LOSS_FNS: dict[str, LossFn] = {"sparse_ce": _sparse_ce, "binary_ce": _binary_ce, "mse": _mse}


def _hyper(name: str) -> tf.TensorSpec:
    # Shape [1], not 0-d: a 0-d float input segfaults LiteRT 2.3 on aarch64.
    return tf.TensorSpec([1], tf.float32, name=name)


class TrainingModule(tf.Module):  # type: ignore[misc]  # tensorflow is untyped
    """Weights, optimizer state and the train/evaluate/infer/get/read/set tf.functions."""

    def __init__(
        self,
        plan: Plan,
        *,
        batch_size: int,
        loss: str,
        output_shape: tuple[int, ...],
        fedprox: bool = False,
        momentum: bool = False,
        scaffold: bool = False,
        native: bool = False,
    ) -> None:
        super().__init__(name="fedrt_model")
        self.plan = plan
        self.forward = Forward(plan)
        self.batch_size = batch_size
        self.loss_name = loss
        self.loss_fn = LOSS_FNS[loss]
        self.fedprox = fedprox
        self.momentum = momentum
        self.scaffold = scaffold
        self.native = native
        self.names = [w.name for w in plan.weights]
        self.weights = [tf.Variable(w.value, name=w.name) for w in plan.weights]
        self.anchor = (
            [tf.Variable(w.value, name=f"{w.name}_anchor") for w in plan.weights] if fedprox else []
        )
        self.velocity = (
            [tf.Variable(np.zeros_like(w.value), name=f"{w.name}_velocity") for w in plan.weights]
            if momentum
            else []
        )
        self.step_count = tf.Variable(np.zeros([1], np.int32), name="step_count")
        x_dtype = tf.int32 if plan.input_dtype == "int32" else tf.float32
        x_spec = tf.TensorSpec([batch_size, *plan.input_shape], x_dtype, name="x")
        self.y_spec = (
            tf.TensorSpec([batch_size, *output_shape[:-1]], tf.int32, name="y")
            if loss == "sparse_ce"
            else tf.TensorSpec([batch_size, *output_shape], tf.float32, name="y")
        )
        # Signature input names come from the TensorSpec names of a *args function.
        train_specs = [x_spec, self.y_spec, _hyper("lr")]
        if fedprox:
            train_specs.append(_hyper("mu"))
        if momentum:
            train_specs.append(_hyper("momentum"))
        if scaffold:
            # One flat vector, not one input per weight: the device keeps c - c_i flat.
            size = sum(int(np.size(w.value)) for w in plan.weights)
            train_specs.append(tf.TensorSpec([size], tf.float32, name=CORRECTION_INPUT))
        self.train_inputs = [s.name for s in train_specs]
        self.train = tf.function(self._train, input_signature=train_specs)
        self.evaluate = tf.function(self._evaluate, input_signature=[x_spec, self.y_spec])
        infer_spec = tf.TensorSpec([None, *plan.input_shape], x_dtype, name="x")
        self.infer = tf.function(self._infer, input_signature=[infer_spec])
        self.get_weights = tf.function(self._get_weights, input_signature=[])
        unused = _hyper(READ_WEIGHTS_INPUT.name)
        self.read_weights = tf.function(self._read_weights, input_signature=[unused])
        weight_specs = [tf.TensorSpec(w.value.shape, tf.float32, name=w.name) for w in plan.weights]
        self.set_weights = tf.function(self._set_weights, input_signature=weight_specs)

    def signatures(self) -> dict[str, Any]:
        return {
            "train": self.train.get_concrete_function(),
            "evaluate": self.evaluate.get_concrete_function(),
            "infer": self.infer.get_concrete_function(),
            "get_weights": self.get_weights.get_concrete_function(),
            READ_WEIGHTS: self.read_weights.get_concrete_function(),
            "set_weights": self.set_weights.get_concrete_function(),
        }

    def _train(self, *args: Tensor) -> dict[str, Tensor]:
        inputs = dict(zip(self.train_inputs, args, strict=True))
        lr = inputs["lr"][0]
        with tf.GradientTape() as tape:
            logits = self.forward(
                self.weights,
                inputs["x"],
                training=True,
                native=self.native,
                step_count=self.step_count[0],
            )
            loss, _ = self.loss_fn(logits, inputs["y"], self.native)
        grads = tape.gradient(loss, self.weights)
        at = 0
        for i, (w, g) in enumerate(zip(self.weights, grads, strict=True)):
            if self.scaffold:
                # SCAFFOLD's drift correction (Karimireddy et al. 2020): g + c - c_i.
                size = int(np.prod(w.shape))
                part = inputs[CORRECTION_INPUT][at : at + size]
                g = g + tf.reshape(part, w.shape)
                at += size
            if self.fedprox:
                # Proximal term mu/2 * ||w - w_round_start||^2, differentiated by hand.
                g = g + inputs["mu"][0] * (w - self.anchor[i])
            if self.momentum:
                v = self.velocity[i]
                v.assign(inputs["momentum"][0] * v + g)
                g = v
            w.assign_sub(lr * g)
        self.step_count.assign_add(tf.ones([1], tf.int32))
        return {"loss": loss}

    def _evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        logits = self.forward(self.weights, x, training=False, native=self.native)
        loss, correct = self.loss_fn(logits, y, self.native)
        return {"loss": loss, "correct": correct}

    def _infer(self, x: Tensor) -> dict[str, Tensor]:
        # The same ops as train (e.g. convolutions as matmuls, fast with variable weights);
        # their gradients are never built here, so any batch size works.
        return {"logits": self.forward(self.weights, x, training=False, native=self.native)}

    def _get_weights(self) -> dict[str, Tensor]:
        return {name: tf.identity(w) for name, w in zip(self.names, self.weights, strict=True)}

    def _read_weights(self, unused: Tensor) -> dict[str, Tensor]:
        # The same variable reads as get_weights: the file holds no second copy of the weights.
        del unused
        return self._get_weights()

    def _set_weights(self, *values: Tensor) -> dict[str, Tensor]:
        assigned = []
        for i, value in enumerate(values):
            assigned.append(self.weights[i].assign(value))
            if self.fedprox:
                assigned.append(self.anchor[i].assign(value))
            if self.momentum:
                # value - value is 0 for the finite values set_weights accepts; zeros_like of
                # a static shape would be folded into a weight-sized constant in the file.
                assigned.append(self.velocity[i].assign(value - value))
        # The converter drops every op of a signature without outputs, assignments included;
        # an output that depends on them keeps them.
        with tf.control_dependencies(assigned):
            count = tf.constant(len(values), tf.int32)
        return {"assigned": tf.identity(count)}
