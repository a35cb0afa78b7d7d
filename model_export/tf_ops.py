"""Differentiable TensorFlow primitives whose gradients convert to LiteRT builtin ops only.

TensorFlow's own gradients of these ops (ReluGrad, SigmoidGrad, TanhGrad, MaxPoolGrad,
AvgPoolGrad, RsqrtGrad, ...) are Flex ops, so
each primitive here carries a ``tf.custom_gradient`` written in ops the converter maps to
builtins. Every function takes ``native``: when true it is the plain TensorFlow op with
TensorFlow's autodiff, which the tests use as the reference. Shapes must be static wherever a
gradient is taken (train and evaluate have a static batch). Convolutions: ``tf_conv``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

Tensor = Any
Grad = Callable[[Tensor], Any]


def custom_gradient(fn: Callable[..., tuple[Tensor, Grad]]) -> Callable[..., Tensor]:
    """``tf.custom_gradient`` with a type mypy can follow."""
    wrapped: Callable[..., Tensor] = tf.custom_gradient(fn)
    return wrapped


def static_shape(shape: Any) -> list[int]:
    dims = [int(d) if d is not None else -1 for d in shape]
    if -1 in dims:
        raise ValueError(f"gradient needs a static shape, got {dims}")
    return dims


def activate(fn: str, x: Tensor, native: bool) -> Tensor:
    """The activation named ``fn`` (one of ``keras_plan.ACTIVATIONS``)."""
    if fn == "linear":
        return x
    op: Callable[[Tensor, bool], Tensor] = globals()[fn]
    return op(x, native)


def relu(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.nn.relu(x)

    @custom_gradient
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.relu(x)
        # 1 where x > 0: ceil(min(relu(x), 1)) stays in ops XNNPACK runs (GREATER and
        # CAST would split the delegated graph).
        return y, lambda dy: dy * tf.math.ceil(tf.minimum(y, 1.0))

    return op(x)


def relu6(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.nn.relu6(x)

    @custom_gradient
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.relu6(x)

        def grad(dy: Tensor) -> Tensor:
            # 1 where 0 < x < 6, from ops XNNPACK runs (see relu).
            return dy * tf.math.ceil(tf.minimum(y, 1.0)) * tf.math.ceil(tf.minimum(6.0 - y, 1.0))

        return y, grad

    return op(x)


def sigmoid(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.sigmoid(x)

    @custom_gradient
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.sigmoid(x)
        return y, lambda dy: dy * y * (1.0 - y)

    return op(x)


def tanh(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.tanh(x)

    @custom_gradient
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.tanh(x)
        return y, lambda dy: dy * (1.0 - y * y)

    return op(x)


def softmax(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.nn.softmax(x, axis=-1)

    @custom_gradient
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.softmax(x, axis=-1)
        return y, lambda dy: y * (dy - tf.reduce_sum(dy * y, axis=-1, keepdims=True))

    return op(x)


def log_softmax(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.nn.log_softmax(x, axis=-1)

    @custom_gradient
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        shifted = x - tf.reduce_max(x, axis=-1, keepdims=True)
        y = shifted - tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=-1, keepdims=True))
        return y, lambda dy: dy - tf.exp(y) * tf.reduce_sum(dy, axis=-1, keepdims=True)

    return op(x)


def sigmoid_ce(logits: Tensor, labels: Tensor, native: bool) -> Tensor:
    """Elementwise binary cross-entropy from logits, stable for large |logits|."""
    if native:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)

    @custom_gradient
    def op(z: Tensor) -> tuple[Tensor, Grad]:
        loss = tf.maximum(z, 0.0) - z * labels + tf.math.log(1.0 + tf.exp(-tf.abs(z)))
        return loss, lambda dy: dy * (tf.sigmoid(z) - labels)

    return op(logits)


def matmul(a: Tensor, b: Tensor, native: bool) -> Tensor:
    """[N, M] @ [M, K] whose input gradient stays a BATCH_MATMUL.

    TensorFlow's MatMul gradient ``dy @ b^T`` converts to FULLY_CONNECTED with a variable
    weight, which XNNPACK does not take (measured 2.6x slower than a delegated
    BATCH_MATMUL); a rank-3 matmul with ``adj_y`` keeps it delegated.
    """
    if native:
        return tf.matmul(a, b)

    @custom_gradient
    def op(a: Tensor, b: Tensor) -> tuple[Tensor, Grad]:
        def grad(dy: Tensor) -> tuple[Tensor, Tensor]:
            n, m = static_shape(a.shape)
            k = int(b.shape[1])
            da = tf.matmul(tf.reshape(dy, [1, n, k]), tf.reshape(b, [1, m, k]), transpose_b=True)
            return tf.reshape(da, [n, m]), tf.matmul(a, dy, transpose_a=True)

        return tf.matmul(a, b), grad

    return op(a, b)


def _windows(x: Tensor, pool: tuple[int, int]) -> Tensor:
    """[B, Ho*ph, Wo*pw, C] -> [B*Ho*Wo, ph*pw, C] for non-overlapping windows."""
    b, h, w, c = static_shape(x.shape)
    ph, pw = pool
    if ph == pw:
        # SPACE_TO_DEPTH is one fast 4-D op; the general path needs a 6-D transpose.
        t = tf.nn.space_to_depth(x, ph)
    else:
        t = tf.transpose(tf.reshape(x, [b, h // ph, ph, w // pw, pw, c]), [0, 1, 3, 2, 4, 5])
    return tf.reshape(t, [b * (h // ph) * (w // pw), ph * pw, c])


def _unwindows(t: Tensor, like: list[int], pool: tuple[int, int]) -> Tensor:
    """Inverse of ``_windows`` back to the (cropped) input shape ``like``."""
    b, h, w, c = like
    ph, pw = pool
    if ph == pw:
        return tf.nn.depth_to_space(tf.reshape(t, [b, h // ph, w // pw, ph * pw * c]), ph)
    t = tf.reshape(t, [b, h // ph, w // pw, ph, pw, c])
    return tf.reshape(tf.transpose(t, [0, 1, 3, 2, 4, 5]), like)


def _pool_crop(x: Tensor, pool: tuple[int, int]) -> tuple[Tensor, list[int]]:
    shape = static_shape(x.shape)
    rows = shape[1] // pool[0] * pool[0]
    cols = shape[2] // pool[1] * pool[1]
    if rows == shape[1] and cols == shape[2]:
        # The converter keeps a full-size strided slice, which XNNPACK runs as a copy.
        return x, [0, 0]
    return x[:, :rows, :cols, :], [shape[1] - rows, shape[2] - cols]


def _pad_back(dx: Tensor, rest: list[int]) -> Tensor:
    """Zero gradient for the rows/columns ``_pool_crop`` cut off."""
    if not any(rest):
        return dx
    return tf.pad(dx, [[0, 0], [0, rest[0]], [0, rest[1]], [0, 0]])


def max_pool(x: Tensor, pool: tuple[int, int], native: bool) -> Tensor:
    """Max pooling with stride == pool size and no padding (non-overlapping windows)."""
    if native:
        return tf.nn.max_pool2d(x, pool, pool, "VALID")

    @custom_gradient
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.max_pool2d(x, pool, pool, "VALID")

        def grad(dy: Tensor) -> Tensor:
            cropped, rest = _pool_crop(x, pool)
            win = _windows(cropped, pool)
            channels = int(dy.shape[-1])
            top = tf.reshape(y, [-1, 1, channels])
            flat_dy = tf.reshape(dy, [-1, 1, channels])
            # The first maximum in row-major window order takes the gradient, as in
            # TensorFlow's kernel, from elementwise ops XNNPACK runs (ARG_MAX and ONE_HOT
            # measured 10x slower): each maximum gets its rank (size for the first
            # position, 1 for the last), and only the best rank divides to 1. All values
            # are small integers, so the choice is exact. 9 ops over all positions instead of
            # 7-9 per position: the 28x28 CNN's train step 13.7 -> 13.4 ms (p10, 100 steps).
            size = pool[0] * pool[1]
            is_max = 1.0 - tf.math.ceil(tf.minimum(top - win, 1.0))
            rank = np.arange(size, 0, -1, dtype=np.float32).reshape(1, size, 1)
            ranked = is_max * tf.constant(rank)
            best = tf.reduce_max(ranked, axis=1, keepdims=True)
            first = tf.math.floor(ranked / best)
            dx = _unwindows(first * flat_dy, static_shape(cropped.shape), pool)
            return _pad_back(dx, rest)

        return y, grad

    return op(x)


def avg_pool(x: Tensor, pool: tuple[int, int], native: bool) -> Tensor:
    """Average pooling with stride == pool size and no padding (non-overlapping windows)."""
    if native:
        return tf.nn.avg_pool2d(x, pool, pool, "VALID")

    @custom_gradient
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.avg_pool2d(x, pool, pool, "VALID")

        def grad(dy: Tensor) -> Tensor:
            cropped, rest = _pool_crop(x, pool)
            size = pool[0] * pool[1]
            share = tf.reshape(dy, [-1, 1, int(dy.shape[-1])]) / float(size)
            tiled = tf.tile(share, [1, size, 1])
            dx = _unwindows(tiled, static_shape(cropped.shape), pool)
            return _pad_back(dx, rest)

        return y, grad

    return op(x)


def layer_norm(x: Tensor, epsilon: float, native: bool) -> Tensor:
    """Normalization over the last axis (no scale/offset: those are plain ops around it)."""
    if native:
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + epsilon)

    @custom_gradient
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centered = x - mean
        inv = 1.0 / tf.sqrt(tf.reduce_mean(centered * centered, axis=-1, keepdims=True) + epsilon)
        xhat = centered * inv

        def grad(dy: Tensor) -> Tensor:
            mean_dy = tf.reduce_mean(dy, axis=-1, keepdims=True)
            mean_dy_xhat = tf.reduce_mean(dy * xhat, axis=-1, keepdims=True)
            return inv * (dy - mean_dy - xhat * mean_dy_xhat)

        return xhat, grad

    return op(x)


def embedding(ids: Tensor, table: Tensor, native: bool) -> Tensor:
    """Row lookup; the table gradient is a dense UNSORTED_SEGMENT_SUM of dy by id.

    (TensorFlow's gather gradient is sparse IndexedSlices, which the converter cannot map;
    a one_hot(ids)^T @ dy product also works but costs B*T*vocab*dim multiplications.)"""
    if native:
        return tf.gather(table, ids)

    @custom_gradient
    def op(table: Tensor) -> tuple[Tensor, Grad]:
        y = tf.gather(table, ids)

        def grad(dy: Tensor) -> Tensor:
            vocab, dim = static_shape(table.shape)
            flat_ids = tf.reshape(ids, [-1])
            return tf.math.unsorted_segment_sum(tf.reshape(dy, [-1, dim]), flat_ids, vocab)

        return y, grad

    return op(table)


# Constants of a counter-based integer hash (Murmur3/xxHash style multipliers). int32
# multiplication wraps identically in TensorFlow and LiteRT, so both draw the same masks.
_HASH_MUL = (np.int32(-1640531535), np.int32(-2048144777), np.int32(739982445))
_HASH_BITS = 24


def uniform_hash(shape: list[int], seed: int, step: Tensor) -> Tensor:
    """Uniform [0, 1) floats from (seed, step, element index), identical in TF and LiteRT."""
    idx = tf.reshape(tf.range(int(np.prod(shape)), dtype=tf.int32), shape)
    h = idx * _HASH_MUL[0] + (step + np.int32(seed)) * _HASH_MUL[1]
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 15))
    h = h * _HASH_MUL[2]
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13))
    h = h * _HASH_MUL[0]
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))
    scale = float(1 << _HASH_BITS)
    return tf.cast(tf.math.floormod(h, 1 << _HASH_BITS), tf.float32) / scale
