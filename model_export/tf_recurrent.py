"""LSTM and GRU unrolled over the static time axis, from ops whose gradients are builtins.

Each layer is written out step by step (no WHILE op, whose gradient would need the
TensorList ops LiteRT lacks) with ``tf_ops`` primitives, so TensorFlow's autodiff of the
forward pass converts to builtin ops only. The maths follows Keras 3 exactly (gate order,
bias layout, zero initial state) so Keras weights load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from fedrt.model_export import tf_ops

Tensor = Any


def _project(x: Tensor, kernel: Tensor, bias: Tensor, native: bool) -> list[Tensor]:
    """x [B, T, F] @ kernel (+ bias) for every time step at once, as T tensors [B, G]:
    one large matmul instead of T small ones."""
    steps, features = int(x.shape[1]), int(x.shape[2])
    flat = tf_ops.matmul(tf.reshape(x, [-1, features]), kernel, native)
    projected = tf.reshape(flat, [-1, steps, int(kernel.shape[1])])
    if bias is not None:
        projected = projected + bias
    steps_list: list[Tensor] = tf.unstack(projected, axis=1)
    return steps_list


def _output(outputs: list[Tensor], options: dict[str, Any]) -> Tensor:
    return tf.stack(outputs, axis=1) if options["return_sequences"] else outputs[-1]


def lstm(x: Tensor, params: Sequence[Tensor], options: dict[str, Any], native: bool) -> Tensor:
    """Keras LSTM (gates i, f, c, o; weights kernel, recurrent_kernel[, bias])."""
    kernel, recurrent = params[0], params[1]
    act, gate = options["activation"], options["recurrent_activation"]
    h: Tensor = None
    c: Tensor = None
    outputs = []
    for z in _project(x, kernel, params[2] if len(params) > 2 else None, native):
        # The initial state is zero, so step 0 skips the recurrent product and f * c.
        if h is not None:
            z = z + tf_ops.matmul(h, recurrent, native)
        z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)
        new = tf_ops.activate(gate, z_i, native) * tf_ops.activate(act, z_c, native)
        c = new if c is None else tf_ops.activate(gate, z_f, native) * c + new
        h = tf_ops.activate(gate, z_o, native) * tf_ops.activate(act, c, native)
        outputs.append(h)
    return _output(outputs, options)


def gru(x: Tensor, params: Sequence[Tensor], options: dict[str, Any], native: bool) -> Tensor:
    """Keras GRU (gates z, r, h; weights kernel, recurrent_kernel[, bias]).

    ``reset_after`` (Keras' default) applies the reset gate to the recurrent product and
    has a bias [2, 3*units] (input row, recurrent row); otherwise the reset gate scales
    the state before the candidate's product and the bias is [3*units].
    """
    kernel, recurrent = params[0], params[1]
    units = int(options["units"])
    act, gate = options["activation"], options["recurrent_activation"]
    reset_after = bool(options["reset_after"])
    input_bias: Tensor = None
    recurrent_bias: Tensor = None
    if len(params) > 2:
        if reset_after:
            # UNPACK, whose gradient is PACK (a strided slice's gradient is not a builtin).
            input_bias, recurrent_bias = tf.unstack(params[2], axis=0)
        else:
            input_bias = params[2]
    if not reset_after:
        # Update/reset columns and candidate columns (SPLIT's gradient is CONCATENATION).
        recurrent_zr, recurrent_h = tf.split(recurrent, [2 * units, units], axis=1)
    h: Tensor = None
    outputs = []
    for xz in _project(x, kernel, input_bias, native):
        x_z, x_r, x_h = tf.split(xz, 3, axis=1)
        if reset_after and (h is not None or recurrent_bias is not None):
            # At step 0 the zero state leaves only the recurrent bias of the product.
            if h is None:
                inner = recurrent_bias
            else:
                inner = tf_ops.matmul(h, recurrent, native)
                inner = inner if recurrent_bias is None else inner + recurrent_bias
            i_z, i_r, i_h = tf.split(inner, 3, axis=-1)
            z = tf_ops.activate(gate, x_z + i_z, native)
            r_h = tf_ops.activate(gate, x_r + i_r, native) * i_h
        elif h is None:
            z = tf_ops.activate(gate, x_z, native)
            r_h = None
        else:
            i_z, i_r = tf.split(tf_ops.matmul(h, recurrent_zr, native), 2, axis=1)
            z = tf_ops.activate(gate, x_z + i_z, native)
            r = tf_ops.activate(gate, x_r + i_r, native)
            r_h = tf_ops.matmul(r * h, recurrent_h, native)
        hh = tf_ops.activate(act, x_h if r_h is None else x_h + r_h, native)
        # h = z * h_prev + (1 - z) * hh; at step 0 h_prev is zero.
        h = (1.0 - z) * hh if h is None else z * h + (1.0 - z) * hh
        outputs.append(h)
    return _output(outputs, options)
