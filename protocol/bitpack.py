"""Exact k-bit packing of unsigned integer vectors, vectorized over lanes.

Layout (normative, it is the wire format of masked inputs): W = 16, 32 or 64 is the
smallest word width holding k bits and g = W / gcd(k, W) values form a group, which fills
g * k / W words. The first G = m // g * g values are cut into g contiguous lanes of G // g
values; value j of each group is taken from lane j, so every shift is one numpy operation
over a whole lane. Group words are stored lane-major (word w of every group, then word
w + 1, ...) little-endian. The r = m - G tail values follow as a plain little-endian bit
string of r * k bits, zero-padded to a byte. The total is exactly ceil(m * k / 8) bytes and
padding bits must be zero.
"""

from __future__ import annotations

from math import gcd

import numpy as np
import numpy.typing as npt

from fedrt.protocol.errors import LengthError, ParameterError

__all__ = ["pack", "packed_size", "unpack", "word_dtype"]

Words = npt.NDArray[np.unsignedinteger]


WordType = type[np.uint16] | type[np.uint32] | type[np.uint64]


def word_dtype(bits: int) -> WordType:
    """The smallest of uint16, uint32 and uint64 that holds ``bits``-bit values."""
    _check_bits(bits)
    return np.uint16 if bits <= 16 else np.uint32 if bits <= 32 else np.uint64


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` values of ``bits`` bits: exactly ``ceil(count * bits / 8)``."""
    _check_bits(bits)
    if count < 0:
        raise ParameterError(f"count must be >= 0, got {count}")
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 64:
        raise ParameterError(f"bits must be in 1..64, got {bits}")


def _geometry(bits: int) -> tuple[int, int, WordType]:
    dtype = word_dtype(bits)
    width = np.dtype(dtype).itemsize * 8
    return width, width // gcd(bits, width), dtype


def pack(values: npt.NDArray[np.unsignedinteger], bits: int, *, check: bool = True) -> bytes:
    """Pack unsigned ``values`` (each < 2**bits) into exactly ``ceil(len * bits / 8)`` bytes.

    With ``check`` a value that does not fit raises ``ParameterError``; callers that have
    already reduced modulo 2**bits pass ``check=False`` to skip the extra pass.
    """
    width, group, dtype = _geometry(bits)
    flat = np.asarray(values)
    if flat.ndim != 1 or flat.dtype.kind != "u":
        raise ParameterError("values must be a 1-d array of unsigned integers")
    if check and flat.size and bits < 64 and int(flat.max()) >> bits:
        raise ParameterError(f"a value does not fit in {bits} bits")
    flat = flat.astype(dtype, copy=False)
    lane = flat.size // group
    body = _pack_lanes(flat[: lane * group].reshape(group, lane), bits, width, dtype)
    tail = _pack_tail(flat[lane * group :], bits)
    return body + tail


def _pack_lanes(
    lanes: npt.NDArray[np.unsignedinteger],
    bits: int,
    width: int,
    dtype: WordType,
) -> bytes:
    group, lane = lanes.shape
    if lane == 0:
        return b""
    out = np.zeros((group * bits // width, lane), dtype=dtype)
    scratch = np.empty(lane, dtype=dtype)
    for j in range(group):
        word, shift = divmod(j * bits, width)
        np.left_shift(lanes[j], dtype(shift), out=scratch)
        np.bitwise_or(out[word], scratch, out=out[word])
        if shift + bits > width:
            np.right_shift(lanes[j], dtype(width - shift), out=scratch)
            np.bitwise_or(out[word + 1], scratch, out=out[word + 1])
    return out.astype(out.dtype.newbyteorder("<"), copy=False).tobytes()


def _pack_tail(tail: Words, bits: int) -> bytes:
    if tail.size == 0:
        return b""
    shifts = np.arange(bits, dtype=np.uint64)
    bitmap = (tail.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)
    return np.packbits(bitmap.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack(data: bytes | memoryview, bits: int, count: int) -> Words:
    """Inverse of ``pack``: ``count`` values of ``bits`` bits, typed ``word_dtype(bits)``.

    Raises ``LengthError`` when ``data`` is not exactly ``packed_size(count, bits)`` bytes
    or when a padding bit is set (so every vector has one encoding).
    """
    width, group, dtype = _geometry(bits)
    if len(data) != packed_size(count, bits):
        raise LengthError(
            f"packed vector of {count} x {bits} bits needs {packed_size(count, bits)} bytes, "
            f"got {len(data)}"
        )
    lane = count // group
    rows = group * bits // width
    out = np.empty(count, dtype=dtype)
    if lane:
        words = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=rows * lane)
        _unpack_lanes(words.reshape(rows, lane), out[: lane * group].reshape(group, lane), bits)
    out[lane * group :] = _unpack_tail(
        memoryview(data)[rows * lane * (width // 8) :], bits, count - lane * group
    )
    return out


def _unpack_lanes(
    words: npt.NDArray[np.unsignedinteger], lanes: npt.NDArray[np.unsignedinteger], bits: int
) -> None:
    dtype = lanes.dtype.type
    width = lanes.dtype.itemsize * 8
    mask = dtype((1 << bits) - 1)
    scratch = np.empty(lanes.shape[1], dtype=dtype)
    for j in range(lanes.shape[0]):
        word, shift = divmod(j * bits, width)
        row = lanes[j]
        np.right_shift(words[word], dtype(shift), out=row)
        if shift + bits > width:
            np.left_shift(words[word + 1], dtype(width - shift), out=scratch)
            np.bitwise_or(row, scratch, out=row)
        if bits < width:
            np.bitwise_and(row, mask, out=row)


def _unpack_tail(data: memoryview, bits: int, count: int) -> Words:
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    bitmap = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if bitmap[count * bits :].any():
        raise LengthError("non-zero padding bits after the last packed value")
    weights = np.uint64(1) << np.arange(bits, dtype=np.uint64)
    planes = bitmap[: count * bits].reshape(count, bits).astype(np.uint64)
    values: Words = (planes * weights).sum(axis=1, dtype=np.uint64)
    return values
