"""A seeded randomized Hadamard rotation, applied to updates before they are quantized.

After ``x -> H D x / sqrt(n)`` (D: random signs, H: the Walsh-Hadamard matrix, n the size
padded to a power of two) every coordinate of a vector of L2 norm C is close to
N(0, C^2 / n), whatever the vector looked like: a few large coordinates are spread over
all of them. Quantizing each coordinate over [-Z C / sqrt(n), Z C / sqrt(n)] instead of
[-C, C] then costs sqrt(n) / Z times less rounding noise for the same bits (Suresh et al.
2017; Kairouz et al. 2021 use it before the integer ring of distributed DP). The rotation
is orthonormal and linear, so the server rotates the SUM back with the same seed.

Signs come from the protocol's AES-CTR PRG keyed by SHA-256 of the round's seed, so every
device and the coordinator derive the same rotation bit for bit on any platform.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.prg import expand

__all__ = ["padded_size", "rotate", "unrotate"]

Floats = npt.NDArray[np.float64]
_DOMAIN = b"fedrt/rotation/v1\n"


def padded_size(n: int) -> int:
    """The power of two the rotation works in (at least ``n``)."""
    if n < 1:
        raise ParameterError(f"cannot rotate {n} values")
    return 1 << (n - 1).bit_length()


def _signs(seed: bytes, n: int) -> Floats:
    if not seed:
        raise ParameterError("a rotation needs a non-empty seed")
    key = hashlib.sha256(_DOMAIN + seed).digest()
    bits = expand(key, n, np.uint32) & np.uint32(1)
    return 1.0 - 2.0 * bits.astype(np.float64)


def _hadamard(x: Floats) -> Floats:
    """In-place fast Walsh-Hadamard transform, normalized (orthonormal, its own inverse)."""
    n = x.size
    h = 1
    while h < n:
        view = x.reshape(-1, 2, h)
        a = view[:, 0, :].copy()
        view[:, 0, :] += view[:, 1, :]
        view[:, 1, :] *= -1.0
        view[:, 1, :] += a
        h *= 2
    x *= 1.0 / np.sqrt(n)
    return x


def rotate(values: npt.NDArray[np.floating], seed: bytes) -> Floats:
    """``H D x / sqrt(n)`` of ``values`` zero-padded to ``padded_size``."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise LengthError("only flat vectors are rotated")
    n = padded_size(v.size)
    x = np.zeros(n, dtype=np.float64)
    x[: v.size] = v
    x *= _signs(seed, n)
    return _hadamard(x)


def unrotate(rotated: npt.NDArray[np.floating], seed: bytes, size: int) -> Floats:
    """The inverse of ``rotate``: the first ``size`` values of ``D H y / sqrt(n)``."""
    y = np.array(rotated, dtype=np.float64)
    n = padded_size(size)
    if y.ndim != 1 or y.size != n:
        raise LengthError(f"a rotated vector of {size} values has {n} elements, got {y.shape}")
    _hadamard(y)
    y *= _signs(seed, n)
    return y[:size]
