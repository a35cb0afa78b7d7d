"""Convolutions' input gradients in LiteRT builtins: col2im, the depthwise adjoint, their pads."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fedrt.model_export.tf_ops import Tensor, static_shape

__all__ = [
    "ONE_HOT_COL2IM_MAX",
    "col2im",
    "conv_pads",
    "depthwise_adjoint",
    "input_grad",
    "same_pads",
]

# Up to this many patch values ([B*Ho*Wo, C*kh*kw], 8 MiB), an im2col convolution's input
# gradient is one matmul into the patches' gradient and the depthwise adjoint of the
# gather (``input_grad``), instead of a matmul, a pad and an add per window offset
# (``col2im``). Train steps, batch 32, 2 threads, best p10 of alternated runs: digits CNN
# (conv2: 147k values, 3x3; 37 ops -> 6) 0.80 -> 0.72 ms; a 16 -> 32 channel 3x3 stride-2
# conv after a first layer on 16x16 (295k values) 4.79 -> 4.23 ms, on 32x32 (1.18 M
# values) 18.99 -> 18.48 ms. Above the bound the patches' gradient and its shifted copy
# (two more patch-sized buffers) weigh more on a device's memory than the time saved.
ONE_HOT_COL2IM_MAX = 1 << 21


def same_pads(size: int, out: int, stride: int, kernel: int) -> tuple[int, int]:
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_pads(
    size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int], padding: str
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Output size and (before, after) pads per spatial axis, as TensorFlow pads."""
    out, pads = [], []
    for n, k, s in zip(size, kernel, strides, strict=True):
        if padding == "SAME":
            o = -(-n // s)
            pads.append(same_pads(n, o, s, k))
        else:
            o = (n - k) // s + 1
            pads.append((0, 0))
        out.append(o)
    return (out[0], out[1]), (pads[0][0], pads[0][1]), (pads[1][0], pads[1][1])


def _flipped_tap_major(kh: int, kw: int, channels: int) -> Tensor:
    """[kh, kw, kh*kw*C, 1]: channel k*C + c is one at tap k of the flipped kernel."""
    taps = np.zeros([kh, kw, kh * kw * channels, 1], np.float32)
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        taps[kh - 1 - i, kw - 1 - j, k * channels : (k + 1) * channels, 0] = 1.0
    return tf.constant(taps)


def input_grad(
    dy: Tensor, w: Tensor, strides: tuple[int, int], padding: str, size: tuple[int, int]
) -> Tensor:
    """dx of an im2col convolution: the patches' gradient put back in place.

    Up to ``ONE_HOT_COL2IM_MAX`` patch values, the patches' gradient is one matmul, laid
    out tap-major ([kh*kw*C_in] as w is stored) so that the taps' sum runs over whole rows
    of C_in values, and the adjoint of the gather is one depthwise convolution by a flipped
    one-hot filter; above it, ``col2im`` (a matmul, pad and add per window offset)."""
    kh, kw, c_in, c_out = static_shape(w.shape)
    b, ho, wo, _ = static_shape(dy.shape)
    (height, width), rows = size, b * ho * wo
    if rows * kh * kw * c_in > ONE_HOT_COL2IM_MAX:
        _, pad_h, pad_w = conv_pads(size, (kh, kw), strides, padding)
        return col2im(dy, w, strides, size, (pad_h, pad_w))
    d_patches = tf.matmul(
        tf.reshape(dy, [1, rows, c_out]),
        tf.reshape(w, [1, kh * kw * c_in, c_out]),
        transpose_b=True,
    )
    d_patches = tf.reshape(d_patches, [b, ho, wo, kh * kw * c_in])
    shifted = depthwise_adjoint(d_patches, _flipped_tap_major(kh, kw, c_in), size, strides, padding)
    return tf.reduce_sum(tf.reshape(shifted, [b, height, width, kh * kw, c_in]), axis=3)


def col2im(
    dy: Tensor,
    w: Tensor,
    strides: tuple[int, int],
    size: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
) -> Tensor:
    """The input gradient of a convolution, one matmul per window offset.

    Each window offset's patch gradient dy @ w[i, j]^T is shifted back into place and summed
    one at a time so only one padded buffer is alive at once. One matmul per offset writes
    each part directly (one matmul for all offsets would materialize [N, kh*kw*C] and copy
    a slice per offset)."""
    kh, kw, c_in, c_out = static_shape(w.shape)
    (pad_h, pad_w), (height, width) = pads, size
    n, out = int(dy.shape[0]), (int(dy.shape[1]), int(dy.shape[2]))
    rows_dy = tf.reshape(dy, [1, -1, c_out])
    taps = tf.unstack(tf.reshape(w, [kh * kw, 1, c_in, c_out]), axis=0)
    rows, cols = (out[0] - 1) * strides[0] + 1, (out[1] - 1) * strides[1] + 1
    full_h, full_w = height + sum(pad_h), width + sum(pad_w)
    acc: Tensor = None
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        part = tf.matmul(rows_dy, taps[k], transpose_b=True)
        part = _dilate(tf.reshape(part, [n, out[0], out[1], c_in]), strides)
        part = tf.pad(
            part,
            [[0, 0], [i, full_h - i - rows], [j, full_w - j - cols], [0, 0]],
        )
        acc = part if acc is None else acc + part
    return acc[:, pad_h[0] : pad_h[0] + height, pad_w[0] : pad_w[0] + width, :]


def _dilate(t: Tensor, strides: tuple[int, int]) -> Tensor:
    """Insert stride-1 zeros between rows and columns (the adjoint of striding).

    Built from 4-D pads and reshapes: LiteRT's PAD takes at most 5 dimensions.
    """
    b, h, w, c = static_shape(t.shape)
    sh, sw = strides
    if sh == 1 and sw == 1:
        return t
    t = tf.reshape(t, [b, h, 1, w * c])
    t = tf.pad(t, [[0, 0], [0, 0], [0, sh - 1], [0, 0]])
    t = tf.reshape(t, [b * h * sh, w, 1, c])
    t = tf.pad(t, [[0, 0], [0, 0], [0, sw - 1], [0, 0]])
    t = tf.reshape(t, [b, h * sh, w * sw, c])
    return t[:, : (h - 1) * sh + 1, : (w - 1) * sw + 1, :]


def depthwise_adjoint(
    dy: Tensor,
    flipped: Tensor,
    size: tuple[int, int],
    strides: tuple[int, int],
    padding: str,
) -> Tensor:
    """The input gradient of a depthwise convolution before its channels are summed.

    ``flipped`` [kh, kw, CH, 1] is the filter, reversed in both spatial axes, flattened to
    one output channel per dy channel; the result is the full correlation of the dilated
    dy with it, [B, *size, CH]."""
    kh, kw = static_shape(flipped.shape)[:2]
    (height, width), ho, wo = size, int(dy.shape[1]), int(dy.shape[2])
    top, left = 0, 0
    if padding == "SAME":
        top = same_pads(height, ho, strides[0], kh)[0]
        left = same_pads(width, wo, strides[1], kw)[0]
    dyd = _dilate(dy, strides)
    pad_h = (kh - 1 - top, height + top - dyd.shape[1])
    pad_w = (kw - 1 - left, width + left - dyd.shape[2])
    dyd = tf.pad(dyd, [[0, 0], [pad_h[0], pad_h[1]], [pad_w[0], pad_w[1]], [0, 0]])
    return tf.nn.depthwise_conv2d(dyd, flipped, [1, 1, 1, 1], "VALID")
