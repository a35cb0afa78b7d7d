"""Differentiable TensorFlow primitives whose gradients convert to LiteRT builtin ops only.

TensorFlow's own gradients of these ops (ReluGrad, SigmoidGrad, TanhGrad, Conv2DBackpropFilter,
DepthwiseConv2dNativeBackprop*, MaxPoolGrad, AvgPoolGrad, RsqrtGrad, ...) are Flex ops, so
each primitive here carries a ``tf.custom_gradient`` written in ops the converter maps to
builtins. Every function takes ``native``: when true it is the plain TensorFlow op with
TensorFlow's autodiff, which the tests use as the reference. Shapes must be static wherever a
gradient is taken (train and evaluate have a static batch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

Tensor = Any
Grad = Callable[[Tensor], Any]


def _custom(fn: Callable[..., tuple[Tensor, Grad]]) -> Callable[..., Tensor]:
    """``tf.custom_gradient`` with a type mypy can follow."""
    wrapped: Callable[..., Tensor] = tf.custom_gradient(fn)
    return wrapped


def _static(shape: Any) -> list[int]:
    dims = [int(d) if d is not None else -1 for d in shape]
    if -1 in dims:
        raise ValueError(f"gradient needs a static shape, got {dims}")
    return dims


def relu(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.nn.relu(x)

    @_custom
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.relu(x)
        # 1 where x > 0: ceil(min(relu(x), 1)) stays in ops XNNPACK runs (GREATER and
        # CAST would split the delegated graph).
        return y, lambda dy: dy * tf.math.ceil(tf.minimum(y, 1.0))

    return op(x)


def relu6(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.nn.relu6(x)

    @_custom
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

    @_custom
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.sigmoid(x)
        return y, lambda dy: dy * y * (1.0 - y)

    return op(x)


def tanh(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.tanh(x)

    @_custom
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.tanh(x)
        return y, lambda dy: dy * (1.0 - y * y)

    return op(x)


def softmax(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.nn.softmax(x, axis=-1)

    @_custom
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.softmax(x, axis=-1)
        return y, lambda dy: y * (dy - tf.reduce_sum(dy * y, axis=-1, keepdims=True))

    return op(x)


def log_softmax(x: Tensor, native: bool) -> Tensor:
    if native:
        return tf.nn.log_softmax(x, axis=-1)

    @_custom
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        shifted = x - tf.reduce_max(x, axis=-1, keepdims=True)
        y = shifted - tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=-1, keepdims=True))
        return y, lambda dy: dy - tf.exp(y) * tf.reduce_sum(dy, axis=-1, keepdims=True)

    return op(x)


def sigmoid_ce(logits: Tensor, labels: Tensor, native: bool) -> Tensor:
    """Elementwise binary cross-entropy from logits, stable for large |logits|."""
    if native:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)

    @_custom
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

    @_custom
    def op(a: Tensor, b: Tensor) -> tuple[Tensor, Grad]:
        def grad(dy: Tensor) -> tuple[Tensor, Tensor]:
            n, m = _static(a.shape)
            k = int(b.shape[1])
            da = tf.matmul(tf.reshape(dy, [1, n, k]), tf.reshape(b, [1, m, k]), transpose_b=True)
            return tf.reshape(da, [n, m]), tf.matmul(a, dy, transpose_a=True)

        return tf.matmul(a, b), grad

    return op(a, b)


def _same_pads(size: int, out: int, stride: int, kernel: int) -> tuple[int, int]:
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _window_input(
    x: Tensor,
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    padding: str,
) -> Tensor:
    """``x`` padded as the forward op padded it, cropped to the rows/columns windows touch."""
    _, height, width, _ = _static(x.shape)
    if padding == "SAME":
        top, bottom = _same_pads(height, out_hw[0], strides[0], kernel[0])
        left, right = _same_pads(width, out_hw[1], strides[1], kernel[1])
        x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    rows = (out_hw[0] - 1) * strides[0] + kernel[0]
    cols = (out_hw[1] - 1) * strides[1] + kernel[1]
    return x[:, :rows, :cols, :]


def _conv_pads(
    size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int], padding: str
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Output size and (before, after) pads per spatial axis, as TensorFlow pads."""
    out, pads = [], []
    for n, k, s in zip(size, kernel, strides, strict=True):
        if padding == "SAME":
            o = -(-n // s)
            pads.append(_same_pads(n, o, s, k))
        else:
            o = (n - k) // s + 1
            pads.append((0, 0))
        out.append(o)
    return (out[0], out[1]), (pads[0][0], pads[0][1]), (pads[1][0], pads[1][1])


def _patches(
    x: Tensor,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    out: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
) -> Tensor:
    """im2col: [B, Ho, Wo, kh*kw*C] from strided slices (any batch size)."""
    if any(pads[0]) or any(pads[1]):
        x = tf.pad(x, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])
    rows, cols = (out[0] - 1) * strides[0] + 1, (out[1] - 1) * strides[1] + 1
    windows = [
        x[:, i : i + rows : strides[0], j : j + cols : strides[1], :]
        for i in range(kernel[0])
        for j in range(kernel[1])
    ]
    return tf.concat(windows, axis=-1) if len(windows) > 1 else windows[0]


def _matmul_nhwc(p: Tensor, w2: Tensor, out: tuple[int, int]) -> Tensor:
    k, c_out = _static(w2.shape)
    y = tf.matmul(tf.reshape(p, [-1, k]), w2)
    return tf.reshape(y, [-1, out[0], out[1], c_out])


def conv2d(x: Tensor, w: Tensor, strides: tuple[int, int], padding: str, native: bool) -> Tensor:
    """NHWC convolution as im2col + matmul, forward and both gradients.

    LiteRT runs CONV_2D and TRANSPOSE_CONV whose filter is a variable (not a constant) on a
    slow path (measured ~4x slower than the same matmul), so all three products are
    BATCH_MATMULs over patches gathered with strided slices.
    """
    if native:
        return tf.nn.conv2d(x, w, strides=strides, padding=padding)
    kh, kw, c_in, c_out = _static(w.shape)
    height, width = int(x.shape[1]), int(x.shape[2])
    out, pad_h, pad_w = _conv_pads((height, width), (kh, kw), strides, padding)

    @_custom
    def op(x: Tensor, w: Tensor) -> tuple[Tensor, Grad]:
        patches = _patches(x, (kh, kw), strides, out, (pad_h, pad_w))
        y = _matmul_nhwc(patches, tf.reshape(w, [kh * kw * c_in, c_out]), out)

        def grad(dy: Tensor) -> tuple[Tensor, Tensor]:
            flat_dy = tf.reshape(dy, [-1, c_out])
            flat_p = tf.reshape(patches, [-1, kh * kw * c_in])
            dw = tf.reshape(tf.matmul(flat_p, flat_dy, transpose_a=True), [kh, kw, c_in, c_out])
            # dx (col2im): patch gradients dy @ w^T, each window offset shifted back into
            # place and summed one at a time so only one padded buffer is alive at once.
            n = int(dy.shape[0])
            dp = tf.matmul(
                tf.reshape(dy, [1, -1, c_out]),
                tf.reshape(w, [1, kh * kw * c_in, c_out]),
                transpose_b=True,
            )
            dp = tf.reshape(dp, [n, out[0], out[1], kh * kw * c_in])
            rows, cols = (out[0] - 1) * strides[0] + 1, (out[1] - 1) * strides[1] + 1
            full_h, full_w = height + sum(pad_h), width + sum(pad_w)
            acc: Tensor = None
            for k in range(kh * kw):
                i, j = divmod(k, kw)
                part = _dilate(dp[..., k * c_in : (k + 1) * c_in], strides)
                part = tf.pad(
                    part,
                    [[0, 0], [i, full_h - i - rows], [j, full_w - j - cols], [0, 0]],
                )
                acc = part if acc is None else acc + part
            dx = acc[:, pad_h[0] : pad_h[0] + height, pad_w[0] : pad_w[0] + width, :]
            return dx, dw

        return y, grad

    return op(x, w)


def _dilate(t: Tensor, strides: tuple[int, int]) -> Tensor:
    """Insert stride-1 zeros between rows and columns (the adjoint of striding).

    Built from 4-D pads and reshapes: LiteRT's PAD takes at most 5 dimensions.
    """
    b, h, w, c = _static(t.shape)
    sh, sw = strides
    if sh == 1 and sw == 1:
        return t
    t = tf.reshape(t, [b, h, 1, w * c])
    t = tf.pad(t, [[0, 0], [0, 0], [0, sh - 1], [0, 0]])
    t = tf.reshape(t, [b * h * sh, w, 1, c])
    t = tf.pad(t, [[0, 0], [0, 0], [0, sw - 1], [0, 0]])
    t = tf.reshape(t, [b, h * sh, w * sw, c])
    return t[:, : (h - 1) * sh + 1, : (w - 1) * sw + 1, :]


def depthwise_conv2d(
    x: Tensor, w: Tensor, strides: tuple[int, int], padding: str, native: bool
) -> Tensor:
    """Depthwise convolution with filter [kh, kw, C, M]; both gradients depthwise convs."""
    full = [1, strides[0], strides[1], 1]
    if native:
        return tf.nn.depthwise_conv2d(x, w, full, padding)

    @_custom
    def op(x: Tensor, w: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.depthwise_conv2d(x, w, full, padding)

        def grad(dy: Tensor) -> tuple[Tensor, Tensor]:
            b, height, width, chans = _static(x.shape)
            kh, kw, _, mult = _static(w.shape)
            ho, wo = int(dy.shape[1]), int(dy.shape[2])
            # Input gradient: full correlation of the dilated dy with the flipped filter,
            # then each input channel sums its M output channels.
            top, left = 0, 0
            if padding == "SAME":
                top = _same_pads(height, ho, strides[0], kh)[0]
                left = _same_pads(width, wo, strides[1], kw)[0]
            dyd = _dilate(dy, strides)
            pad_h = (kh - 1 - top, height + top - dyd.shape[1])
            pad_w = (kw - 1 - left, width + left - dyd.shape[2])
            dyd = tf.pad(dyd, [[0, 0], [pad_h[0], pad_h[1]], [pad_w[0], pad_w[1]], [0, 0]])
            flipped = tf.reshape(tf.reverse(w, [0, 1]), [kh, kw, chans * mult, 1])
            dx = tf.nn.depthwise_conv2d(dyd, flipped, [1, 1, 1, 1], "VALID")
            dx = tf.reduce_sum(tf.reshape(dx, [b, height, width, chans, mult]), axis=4)
            # Filter gradient: channels and batch fold into one depthwise axis (C*B) and the
            # output map acts as a dilated filter over the padded input.
            xw = _window_input(x, (ho, wo), (kh, kw), strides, padding)
            xt = tf.reshape(tf.transpose(xw, [1, 2, 3, 0]), [1, xw.shape[1], xw.shape[2], -1])
            dyt = tf.transpose(tf.reshape(dy, [b, ho, wo, chans, mult]), [1, 2, 3, 0, 4])
            dyt = tf.reshape(dyt, [ho, wo, chans * b, mult])
            dw = tf.nn.depthwise_conv2d(xt, dyt, [1, 1, 1, 1], "VALID", dilations=list(strides))
            dw = tf.reduce_sum(tf.reshape(dw, [kh, kw, chans, b, mult]), axis=3)
            return dx, dw

        return y, grad

    return op(x, w)


def _windows(x: Tensor, pool: tuple[int, int]) -> Tensor:
    """[B, Ho*ph, Wo*pw, C] -> [B*Ho*Wo, ph*pw, C] for non-overlapping windows."""
    b, h, w, c = _static(x.shape)
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
    shape = _static(x.shape)
    rows = shape[1] // pool[0] * pool[0]
    cols = shape[2] // pool[1] * pool[1]
    return x[:, :rows, :cols, :], [shape[1] - rows, shape[2] - cols]


def max_pool(x: Tensor, pool: tuple[int, int], native: bool) -> Tensor:
    """Max pooling with stride == pool size and no padding (non-overlapping windows)."""
    if native:
        return tf.nn.max_pool2d(x, pool, pool, "VALID")

    @_custom
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.max_pool2d(x, pool, pool, "VALID")

        def grad(dy: Tensor) -> Tensor:
            # The first maximum of each window takes the gradient, as TensorFlow's kernel does.
            cropped, rest = _pool_crop(x, pool)
            win = _windows(cropped, pool)
            channels = int(dy.shape[-1])
            top = tf.reshape(y, [-1, 1, channels])
            flat_dy = tf.reshape(dy, [-1, 1, channels])
            # The first maximum in row-major window order takes the gradient, as in
            # TensorFlow's kernel. Built from elementwise ops XNNPACK runs (ARG_MAX and
            # ONE_HOT measured 10x slower here): is_max = 1 - ceil(min(max - v, 1)).
            taken = None
            parts = []
            for k in range(pool[0] * pool[1]):
                is_max = 1.0 - tf.math.ceil(tf.minimum(top - win[:, k : k + 1, :], 1.0))
                first = is_max if taken is None else is_max * (1.0 - taken)
                taken = first if taken is None else taken + first
                parts.append(first * flat_dy)
            dx = _unwindows(tf.concat(parts, axis=1), _static(cropped.shape), pool)
            return tf.pad(dx, [[0, 0], [0, rest[0]], [0, rest[1]], [0, 0]])

        return y, grad

    return op(x)


def avg_pool(x: Tensor, pool: tuple[int, int], native: bool) -> Tensor:
    """Average pooling with stride == pool size and no padding (non-overlapping windows)."""
    if native:
        return tf.nn.avg_pool2d(x, pool, pool, "VALID")

    @_custom
    def op(x: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.avg_pool2d(x, pool, pool, "VALID")

        def grad(dy: Tensor) -> Tensor:
            cropped, rest = _pool_crop(x, pool)
            size = pool[0] * pool[1]
            share = tf.reshape(dy, [-1, 1, int(dy.shape[-1])]) / float(size)
            tiled = tf.tile(share, [1, size, 1])
            dx = _unwindows(tiled, _static(cropped.shape), pool)
            return tf.pad(dx, [[0, 0], [0, rest[0]], [0, rest[1]], [0, 0]])

        return y, grad

    return op(x)


def layer_norm(x: Tensor, epsilon: float, native: bool) -> Tensor:
    """Normalization over the last axis (no scale/offset: those are plain ops around it)."""
    if native:
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + epsilon)

    @_custom
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

    @_custom
    def op(table: Tensor) -> tuple[Tensor, Grad]:
        y = tf.gather(table, ids)

        def grad(dy: Tensor) -> Tensor:
            vocab, dim = _static(table.shape)
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
