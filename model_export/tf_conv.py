"""Convolutions whose forward pass and gradients convert to LiteRT builtins XNNPACK runs.

LiteRT runs CONV_2D and TRANSPOSE_CONV whose filter is a variable (not a constant) on a
slow path, and TensorFlow's filter gradients are Flex ops, so a convolution here is built
from BATCH_MATMULs: row taps (``_row_tap_sum``) or im2col + matmul forward, a matmul over
the gathered inputs for the filter gradient, and row taps or col2im for the input gradient.
``native`` selects TensorFlow's own op and autodiff (the test reference).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fedrt.model_export.tf_conv_input_grad import (
    ONE_HOT_COL2IM_MAX,
    col2im,
    conv_pads,
    depthwise_adjoint,
    input_grad,
    same_pads,
)
from fedrt.model_export.tf_ops import Grad, Tensor, custom_gradient, static_shape

# ONE_HOT_COL2IM_MAX is re-exported: it was defined here before the input gradients moved.
__all__ = ["NARROW_CHANNELS", "ONE_HOT_COL2IM_MAX", "ROW_TAP_EXTRA", "conv2d", "depthwise_conv2d"]

# Inputs with fewer channels than this build im2col in two passes (see ``_patches``);
# with 32 channels one pass was faster (3.7 vs 4.2 ms on 14x14x32, 5x5).
NARROW_CHANNELS = 8
# Row taps computed over every input row cost Ho + kh - 1 rows of products for Ho output
# rows; up to 30% more paid off on 14x14 maps with a 5x5 kernel (18 rows for 14), 50% more
# (4x4 maps, 3x3 kernel) made the 8x8 CNN's train step 0.48 -> 0.65 ms.
ROW_TAP_EXTRA = 1.3


def _window_input(
    x: Tensor,
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    padding: str,
) -> Tensor:
    """``x`` padded as the forward op padded it, cropped to the rows/columns windows touch."""
    _, height, width, _ = static_shape(x.shape)
    if padding == "SAME":
        top, bottom = same_pads(height, out_hw[0], strides[0], kernel[0])
        left, right = same_pads(width, out_hw[1], strides[1], kernel[1])
        x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    rows = (out_hw[0] - 1) * strides[0] + kernel[0]
    cols = (out_hw[1] - 1) * strides[1] + kernel[1]
    return x[:, :rows, :cols, :]


def _patches(
    x: Tensor,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    out: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
) -> Tensor:
    """im2col: [B*Ho*Wo, kh*kw*C] from strided slices (any batch size).

    Each window is flattened before the concatenation, so the large result is never
    reshaped (XNNPACK runs RESHAPE as a copy)."""
    if any(pads[0]) or any(pads[1]):
        x = tf.pad(x, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])
    rows, cols = (out[0] - 1) * strides[0] + 1, (out[1] - 1) * strides[1] + 1
    if int(x.shape[-1]) < NARROW_CHANNELS:
        # Few channels: slicing kh*kw windows copies runs of C floats. Gather the kw column
        # offsets first (runs of C), then the kh row offsets (runs of kw*C): same order.
        # Measured on 28x28x1 with a 5x5 kernel: 1.1 ms instead of 2.8 ms per step.
        wide = [x[:, :, j : j + cols : strides[1], :] for j in range(kernel[1])]
        w_all = tf.concat(wide, axis=-1) if len(wide) > 1 else wide[0]
        windows = [w_all[:, i : i + rows : strides[0]] for i in range(kernel[0])]
    else:
        windows = [
            x[:, i : i + rows : strides[0], j : j + cols : strides[1], :]
            for i in range(kernel[0])
            for j in range(kernel[1])
        ]
    flat = [tf.reshape(t, [-1, int(t.shape[-1])]) for t in windows]
    return tf.concat(flat, axis=1) if len(flat) > 1 else flat[0]


def _matmul_nhwc(p: Tensor, w2: Tensor, out: tuple[int, int]) -> Tensor:
    """[N, K] patches @ [K, C_out] as an NHWC map."""
    return tf.reshape(tf.matmul(p, w2), [-1, out[0], out[1], int(w2.shape[1])])


def _row_taps_fit(c_in: int, c_out: int, kernel: tuple[int, int], out_rows: int) -> bool:
    """Whether a stride-1 convolution takes row taps rather than im2col: C_in is not narrow,
    the row-tap matmul's output (kh * C_out per position) is no wider than a window row
    (kw * C_in), and it multiplies at most ``ROW_TAP_EXTRA`` more rows than im2col."""
    rows = out_rows + kernel[0] - 1
    return (
        c_in >= NARROW_CHANNELS and c_out <= kernel[1] * c_in and rows <= ROW_TAP_EXTRA * out_rows
    )


def _gather_columns(xp: Tensor, kw: int, out_cols: int) -> Tensor:
    """[B, H, Wo, kw * C]: the kw column offsets of the padded ``xp``, ordered (j, c)."""
    wide = [xp[:, :, j : j + out_cols, :] for j in range(kw)]
    return tf.concat(wide, axis=3) if kw > 1 else wide[0]


def _row_tap_sum(gathered: Tensor, w: Tensor, out_rows: int) -> Tensor:
    """VALID stride-1 correlation of ``_gather_columns``' output with ``w`` [kh, kw, C_in,
    C_out].

    Only the kw column offsets are gathered (one concat, kw * C_in channels); one matmul
    multiplies them by every row tap at once ([kw * C_in, kh * C_out]), and the kh row taps
    are summed from slices of its output. On the MNIST CNN's conv2 (14x14x32 -> 64, 5x5,
    batch 32, 2 threads) this took 2.1 ms against 3.0 ms for im2col + matmul: 29% more
    multiplications in a wider, faster matmul, and 15 MiB written instead of 20 MiB + copies.
    """
    kh, kw, c_in, c_out = static_shape(w.shape)
    # [kw * C_in, kh * C_out]: rows ordered (j, c) as gathered, columns (i, o) per row tap.
    taps = tf.reshape(tf.transpose(w, [1, 2, 0, 3]), [kw * c_in, kh * c_out])
    z = tf.matmul(gathered, taps)
    acc: Tensor = None
    for i in range(kh):
        part = z[:, i : i + out_rows, :, i * c_out : (i + 1) * c_out]
        acc = part if acc is None else acc + part
    return acc


def _row_tap_filter_grad(gathered: Tensor, dy: Tensor, kernel: tuple[int, int]) -> Tensor:
    """dw [kh, kw, C_in, C_out] from the forward's gathered columns and dy.

    Row tap i pairs gathered row h + i with dy row h, so dy is shifted instead of the
    columns: dy^T padded to each of the kh offsets (kh * 1.6 MiB on the 28x28 CNN) against
    the transposed columns (5 MiB), one matmul [kh*C_out, N] @ [kw*C_in, N]^T whose second
    operand is packed transposed (rank 3, so it stays a delegated BATCH_MATMUL). The
    transposed im2col it replaces copied 45 MiB per step: 14.1 -> 13.2 ms (p10), with 29%
    more multiplications. Both operands put rows before the batch, so each shift pads runs
    of B * Wo values (with the batch first, runs of Wo: 12.5 -> 11.9 ms)."""
    kh, kw = kernel
    c_in = int(gathered.shape[-1]) // kw
    c_out = int(dy.shape[-1])
    cols_t = tf.reshape(tf.transpose(gathered, [3, 1, 0, 2]), [1, kw * c_in, -1])
    b, ho, wo = (int(d) for d in dy.shape[:3])
    dy_t = tf.reshape(tf.transpose(dy, [3, 1, 0, 2]), [c_out, ho, b * wo])
    shifted = [tf.pad(dy_t, [[0, 0], [i, kh - 1 - i], [0, 0]]) for i in range(kh)]
    stacked = tf.concat(shifted, axis=0) if kh > 1 else shifted[0]
    g = tf.matmul(tf.reshape(stacked, [1, kh * c_out, -1]), cols_t, transpose_b=True)
    # g is [(i, o), (j, c)].
    return tf.transpose(tf.reshape(g, [kh, c_out, kw, c_in]), [0, 2, 3, 1])


def _one_hot_taps(kh: int, kw: int, channels: int) -> Tensor:
    """Depthwise filter [kh, kw, C, kh*kw] whose output channel c*kh*kw + k is tap k of c."""
    taps = np.zeros([kh, kw, channels, kh * kw], np.float32)
    for k in range(kh * kw):
        taps[k // kw, k % kw, :, k] = 1.0
    return tf.constant(taps)


def conv2d(x: Tensor, w: Tensor, strides: tuple[int, int], padding: str, native: bool) -> Tensor:
    """NHWC convolution as matmuls, forward and both gradients.

    Measured on the MNIST-sized CNN (conv2, 14x14x32 -> 64, 5x5, batch 32, one thread):
    forward CONV_2D with a variable filter 21 ms vs im2col + matmul 11 ms; dx as
    TRANSPOSE_CONV 20 ms and dw as a CONV_2D over transposed tensors 21 ms, vs col2im
    ~15 ms and patches^T @ dy 6 ms. col2im for dx was 24% faster and 16 MiB smaller than
    im2col of dy; one matmul per window offset instead of slicing one big product took
    the whole train step from 51.4 to 48.0 ms. Stride-1 convolutions over enough channels
    now take row taps (``_row_tap_conv2d``); the others over few channels with equal
    strides build their patches with one depthwise convolution (``_depthwise_patch_conv2d``);
    the rest slice them (``_patches``): on the digits CNN's conv2 (4x4x32, 3x3) slices beat
    the depthwise gather, whose multiplier-9 grouped convolution XNNPACK runs as a narrow
    igemm (train step 0.72 -> 0.66 ms), while its conv1 (1 channel) was slower sliced (0.66
    -> 0.70 ms). Both take their input gradient from ``input_grad``.
    """
    if native:
        return tf.nn.conv2d(x, w, strides=strides, padding=padding)
    kh, kw, c_in, c_out = static_shape(w.shape)
    height, width = int(x.shape[1]), int(x.shape[2])
    out, pad_h, pad_w = conv_pads((height, width), (kh, kw), strides, padding)
    if strides == (1, 1) and _row_taps_fit(c_in, c_out, (kh, kw), out[0]):
        return _row_tap_conv2d(x, w, out, (pad_h, pad_w))
    if strides[0] == strides[1] and c_in < NARROW_CHANNELS:
        return _depthwise_patch_conv2d(x, w, strides, padding)

    @custom_gradient
    def op(x: Tensor, w: Tensor) -> tuple[Tensor, Grad]:
        patches = _patches(x, (kh, kw), strides, out, (pad_h, pad_w))
        y = _matmul_nhwc(patches, tf.reshape(w, [kh * kw * c_in, c_out]), out)

        def grad(dy: Tensor) -> tuple[Tensor, Tensor]:
            flat_dy = tf.reshape(dy, [-1, c_out])
            dw = tf.reshape(tf.matmul(patches, flat_dy, transpose_a=True), [kh, kw, c_in, c_out])
            return input_grad(dy, w, strides, padding, (height, width)), dw

        return y, grad

    return op(x, w)


def _depthwise_patch_conv2d(x: Tensor, w: Tensor, strides: tuple[int, int], padding: str) -> Tensor:
    """``conv2d`` over few channels with im2col as one depthwise convolution by a constant
    one-hot filter.

    XNNPACK runs it with a static filter, writing the patches once, instead of strided
    slices and concatenations that each copy (TensorFlow's depthwise kernel needs equal
    strides). Measured on the 28x28 CNN's conv1 (1 -> 32 channels, 5x5): train step
    15.2 -> 14.7 ms (min of 120 steps)."""
    kh, kw, c_in, c_out = static_shape(w.shape)
    height, width = int(x.shape[1]), int(x.shape[2])

    @custom_gradient
    def op(x: Tensor, w: Tensor) -> tuple[Tensor, Grad]:
        # [B, Ho, Wo, C * kh * kw], channels ordered (c, i, j): the products are x * 1
        # plus zeros, so the patches are exact.
        patches = tf.nn.depthwise_conv2d(
            x, _one_hot_taps(kh, kw, c_in), [1, strides[0], strides[1], 1], padding
        )
        w2 = tf.reshape(tf.transpose(w, [2, 0, 1, 3]), [c_in * kh * kw, c_out])
        y = tf.matmul(patches, w2)

        def grad(dy: Tensor) -> tuple[Tensor, Tensor]:
            flat = tf.reshape(patches, [-1, c_in * kh * kw])
            flat_dy = tf.reshape(dy, [-1, c_out])
            dw = tf.matmul(flat, flat_dy, transpose_a=True)
            dw = tf.transpose(tf.reshape(dw, [c_in, kh, kw, c_out]), [1, 2, 0, 3])
            return input_grad(dy, w, strides, padding, (height, width)), dw

        return y, grad

    return op(x, w)


def _pad(x: Tensor, pads: tuple[tuple[int, int], tuple[int, int]]) -> Tensor:
    if not any(pads[0]) and not any(pads[1]):
        return x
    return tf.pad(x, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])


def _row_tap_conv2d(
    x: Tensor,
    w: Tensor,
    out: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
) -> Tensor:
    """Stride-1 ``conv2d`` for inputs with enough channels (see ``_row_taps_fit``)."""
    kh, kw, c_in, c_out = static_shape(w.shape)
    height, width = int(x.shape[1]), int(x.shape[2])

    @custom_gradient
    def op(x: Tensor, w: Tensor) -> tuple[Tensor, Grad]:
        gathered = _gather_columns(_pad(x, pads), kw, out[1])
        y = _row_tap_sum(gathered, w, out[0])

        def grad(dy: Tensor) -> tuple[Tensor, Tensor]:
            dw = _row_tap_filter_grad(gathered, dy, (kh, kw))
            if not _row_taps_fit(c_out, c_in, (kh, kw), height):
                return col2im(dy, w, (1, 1), (height, width), pads), dw
            # dx is the VALID correlation of dy, padded by the kernel size less the
            # forward pads, with the flipped filter whose channel axes swap.
            back = (
                (kh - 1 - pads[0][0], kh - 1 - pads[0][1]),
                (kw - 1 - pads[1][0], kw - 1 - pads[1][1]),
            )
            flipped = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2])
            dx = _row_tap_sum(_gather_columns(_pad(dy, back), kw, width), flipped, height)
            return dx, dw

        return y, grad

    return op(x, w)


def depthwise_conv2d(
    x: Tensor, w: Tensor, strides: tuple[int, int], padding: str, native: bool
) -> Tensor:
    """Depthwise convolution with filter [kh, kw, C, M]; both gradients depthwise convs."""
    full = [1, strides[0], strides[1], 1]
    if native:
        return tf.nn.depthwise_conv2d(x, w, full, padding)

    @custom_gradient
    def op(x: Tensor, w: Tensor) -> tuple[Tensor, Grad]:
        y = tf.nn.depthwise_conv2d(x, w, full, padding)

        def grad(dy: Tensor) -> tuple[Tensor, Tensor]:
            b, height, width, chans = static_shape(x.shape)
            kh, kw, _, mult = static_shape(w.shape)
            ho, wo = int(dy.shape[1]), int(dy.shape[2])
            # Input gradient: each input channel sums its M output channels.
            flipped = tf.reshape(tf.reverse(w, [0, 1]), [kh, kw, chans * mult, 1])
            dx = depthwise_adjoint(dy, flipped, (height, width), strides, padding)
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
