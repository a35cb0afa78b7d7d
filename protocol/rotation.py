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
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.prg import ZERO_IV

__all__ = ["padded", "padded_size", "rotate", "rotate_padded", "unrotate"]

Floats = npt.NDArray[np.float64]
_DOMAIN = b"fedrt/rotation/v1\n"
_CHUNK = 1 << 16  # keystream words per AES call when flipping signs


def padded_size(n: int) -> int:
    """The power of two the rotation works in (at least ``n``)."""
    if n < 1:
        raise ParameterError(f"cannot rotate {n} values")
    return 1 << (n - 1).bit_length()


def _flip_signs(x: Floats, seed: bytes) -> None:
    """``x *= D`` in place: negate x[i] where bit 0 of keystream word i is set.

    Word i is little-endian uint32 number i of the AES-256-CTR keystream under
    SHA-256(domain + seed), i.e. the low bit of keystream byte 4i. The keystream is made
    in chunks so that no n-word array of signs exists (128 MiB of temporaries at n = 2^22).
    """
    if not seed:
        raise ParameterError("a rotation needs a non-empty seed")
    key = hashlib.sha256(_DOMAIN + seed).digest()
    encryptor = Cipher(algorithms.AES(key), modes.CTR(ZERO_IV)).encryptor()
    zeros = bytes(4 * _CHUNK)
    for start in range(0, x.size, _CHUNK):
        part = x[start : start + _CHUNK]
        stream = encryptor.update(zeros[: 4 * part.size])
        low = np.frombuffer(stream, dtype=np.uint8)[::4]
        np.negative(part, out=part, where=(low & 1).view(np.bool_))


def _hadamard(x: Floats) -> Floats:
    """In-place fast Walsh-Hadamard transform, normalized (orthonormal, its own inverse).

    Each level's butterflies (top, bottom) -> (top + bottom, top - bottom) are done in blocks
    of about ``_CHUNK`` pairs, so the only temporary is one block, not half the vector."""
    n = x.size
    h = 1
    while h < n:
        view = x.reshape(-1, 2, h)
        cols = min(h, _CHUNK)
        rows = max(1, _CHUNK // cols)
        for r in range(0, view.shape[0], rows):
            for c in range(0, h, cols):
                top = view[r : r + rows, 0, c : c + cols]
                bottom = view[r : r + rows, 1, c : c + cols]
                saved = top.copy()
                top += bottom
                np.subtract(saved, bottom, out=bottom)
        h *= 2
    x *= 1.0 / np.sqrt(n)
    return x


def padded(values: npt.NDArray[np.floating]) -> Floats:
    """``values`` as float64, zero-padded to ``padded_size`` (a new array)."""
    v = np.asarray(values)
    if v.ndim != 1:
        raise LengthError("only flat vectors are rotated")
    x = np.zeros(padded_size(v.size), dtype=np.float64)
    x[: v.size] = v
    return x


def rotate_padded(x: Floats, seed: bytes) -> Floats:
    """``rotate`` in place, on a float64 vector already padded to a power of two."""
    if x.ndim != 1 or x.dtype != np.float64 or x.size != padded_size(x.size):
        raise LengthError("rotate_padded takes a float64 vector of power-of-two length")
    _flip_signs(x, seed)
    return _hadamard(x)


def rotate(values: npt.NDArray[np.floating], seed: bytes) -> Floats:
    """``H D x / sqrt(n)`` of ``values`` zero-padded to ``padded_size``."""
    return rotate_padded(padded(values), seed)


def unrotate(rotated: npt.NDArray[np.floating], seed: bytes, size: int) -> Floats:
    """The inverse of ``rotate``: the first ``size`` values of ``D H y / sqrt(n)``."""
    y = np.array(rotated, dtype=np.float64)
    n = padded_size(size)
    if y.ndim != 1 or y.size != n:
        raise LengthError(f"a rotated vector of {size} values has {n} elements, got {y.shape}")
    _hadamard(y)
    _flip_signs(y, seed)
    return y[:size]
