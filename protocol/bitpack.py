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

import functools
from math import gcd

import numpy as np
import numpy.typing as npt

from fedrt.protocol.errors import LengthError, ParameterError

__all__ = ["pack", "packed_size", "unpack", "unpack_add", "word_dtype"]

Words = npt.NDArray[np.unsignedinteger]
Index = npt.NDArray[np.intp]
Shifts = npt.NDArray[np.uint64]


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


def unpack(data: bytes | memoryview, bits: int, count: int, *, out: Words | None = None) -> Words:
    """Inverse of ``pack``: ``count`` values of ``bits`` bits, typed ``word_dtype(bits)``.

    Raises ``LengthError`` when ``data`` is not exactly ``packed_size(count, bits)`` bytes
    or when a padding bit is set (so every vector has one encoding). ``out`` (a contiguous
    1-d array of ``count`` such words) receives the values instead of a new array, which
    spares a caller that unpacks many vectors the page faults of fresh memory.
    """
    width, group, dtype = _geometry(bits)
    _check_size(data, bits, count)
    lane = count // group
    rows = group * bits // width
    if out is None:
        out = np.empty(count, dtype=dtype)
    else:
        _check_words(out, count, dtype)
    if lane:
        words = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=rows * lane)
        _unpack_lanes(words.reshape(rows, lane), out[: lane * group].reshape(group, lane), bits)
    out[lane * group :] = _unpack_tail(
        memoryview(data)[rows * lane * (width // 8) :], bits, count - lane * group
    )
    return out


def unpack_add(
    data: bytes | memoryview, bits: int, count: int, total: Words, *, scratch: Words | None = None
) -> None:
    """Add the values ``unpack`` returns to ``total``, modulo 2**W only (W the word width).

    The bits of each word above ``bits`` are left unreduced (they hold neighbouring values'
    bits), so the low ``bits`` bits of every word are the sum modulo 2**bits: whoever sums
    many vectors reduces once, after the last one (``np.bitwise_and``), and each vector costs
    two shifts and two additions of whole groups instead of unpacking it then adding it.
    ``scratch`` (an array like ``total``) holds the shifted words instead of fresh arrays.
    The same ``LengthError`` as ``unpack`` for a wrong size or a set padding bit, before
    ``total`` is touched.
    """
    width, group, dtype = _geometry(bits)
    _check_size(data, bits, count)
    _check_words(total, count, dtype)
    if scratch is not None:
        _check_words(scratch, count, dtype)
    lane = count // group
    rows = group * bits // width
    tail = _unpack_tail(memoryview(data)[rows * lane * (width // 8) :], bits, count - lane * group)
    if lane:
        words = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=rows * lane)
        words = words.reshape(rows, lane)
        body = total[: lane * group].reshape(group, lane)
        # Without the mask, a value's parts may carry a neighbour's bits at bit ``bits`` and
        # above: addition only carries upwards, so the low ``bits`` bits stay exact.
        moves = _add_moves(bits, width)
        if len(moves) > _MAX_MOVES:  # values share words: gather whole groups instead
            low, shift, high, spill = _unpack_plan(bits, width)
            np.add(body, np.right_shift(words[low], shift.astype(dtype)), out=body)
            np.add(body, np.left_shift(words[high], spill.astype(dtype)), out=body)
        for left, values, source, shifts in moves if len(moves) <= _MAX_MOVES else ():
            target = body[values]
            if shifts is not None:
                shifted = np.left_shift if left else np.right_shift
                size = (source.stop - source.start) * lane
                out = None if scratch is None else scratch[:size].reshape(-1, lane)
                np.add(target, shifted(words[source], shifts, out=out), out=target)
            else:
                np.add(target, words[source], out=target)
    np.add(total[lane * group :], tail.astype(dtype), out=total[lane * group :])


_MAX_MOVES = 4  # beyond, per-run calls cost more than gathering two copies of the words
Move = tuple[bool, slice, slice, Words | None]
"""Part of ``unpack_add``: (left shift?, values of a group, word rows, shifts or None for 0)."""


@functools.cache
def _add_moves(bits: int, width: int) -> tuple[Move, ...]:
    """How ``unpack_add`` adds a group: runs of values whose parts lie in consecutive words.

    Value j's low part is word j * bits // width shifted right, its high part (when it
    spills over) the next word shifted left. Consecutive values mostly take consecutive
    words, so a run is one shift and one addition of slices, without gathering rows (for 15
    bits in 16: one run of each kind, plus value 0 added as it is).
    """
    group = width // gcd(bits, width)
    parts: list[tuple[bool, int, int, int]] = []  # (left, value, word, shift)
    for j in range(group):
        word, shift = divmod(j * bits, width)
        parts.append((False, j, word, shift))
        if shift + bits > width:
            parts.append((True, j, word + 1, width - shift))
    moves: list[Move] = []
    for left in (False, True):
        run: list[tuple[bool, int, int, int]] = []
        for part in [p for p in parts if p[0] is left] + [(left, -2, -2, 0)]:
            if run and (part[1] != run[-1][1] + 1 or part[2] != run[-1][2] + 1):
                shifts: Words = np.array([[p[3]] for p in run], dtype=word_dtype(bits))
                values = slice(run[0][1], run[-1][1] + 1)
                source = slice(run[0][2], run[-1][2] + 1)
                moves.append((left, values, source, shifts if shifts.any() else None))
                run = []
            run.append(part)
    return tuple(moves)


def _check_size(data: bytes | memoryview, bits: int, count: int) -> None:
    if len(data) != packed_size(count, bits):
        raise LengthError(
            f"packed vector of {count} x {bits} bits needs {packed_size(count, bits)} bytes, "
            f"got {len(data)}"
        )


def _check_words(out: Words, count: int, dtype: WordType) -> None:
    if out.shape != (count,) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ParameterError(f"out must be a contiguous array of {count} {np.dtype(dtype)}")


@functools.cache
def _unpack_plan(bits: int, width: int) -> tuple[Index, Shifts, Index, Shifts]:
    """Per value j of a group: its low word and right shift, its high word and left shift.

    A value that does not spill into the next word gets a high part shifted to bit
    ``width - 1`` or above, which the final mask clears (so no shift reaches ``width``).
    """
    group = width // gcd(bits, width)
    rows = group * bits // width
    starts = [j * bits for j in range(group)]
    low = np.array([s // width for s in starts], dtype=np.intp)
    shift = np.array([s % width for s in starts], dtype=np.uint64)
    high = np.minimum(low + 1, rows - 1)
    spill = np.minimum(width - shift, width - 1)
    return low, shift[:, None], high, spill[:, None]


def _unpack_lanes(
    words: npt.NDArray[np.unsignedinteger], lanes: npt.NDArray[np.unsignedinteger], bits: int
) -> None:
    # Whole-group array operations (six passes) instead of a few per value: the server
    # unpacks every masked input, so this is on its hot path.
    width = lanes.dtype.itemsize * 8
    if bits == width:
        lanes[...] = words
        return
    dtype = lanes.dtype.type
    low, shift, high, spill = _unpack_plan(bits, width)
    np.right_shift(words[low], shift.astype(dtype), out=lanes)
    upper = words[high]
    np.left_shift(upper, spill.astype(dtype), out=upper)
    np.bitwise_or(lanes, upper, out=lanes)
    np.bitwise_and(lanes, dtype((1 << bits) - 1), out=lanes)


def _unpack_tail(data: memoryview, bits: int, count: int) -> Words:
    # At most a group less one value: one Python integer beats numpy's per-call overhead.
    whole = int.from_bytes(data, "little")
    if whole >> (count * bits):
        raise LengthError("non-zero padding bits after the last packed value")
    mask = (1 << bits) - 1
    return np.array([whole >> (i * bits) & mask for i in range(count)], dtype=np.uint64)
