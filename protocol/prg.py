"""AES-256-CTR pseudo-random generation: mask words and deterministic byte sources.

A mask of m words under a 256-bit key is the AES-256-CTR keystream with an all-zero initial
counter block, read as little-endian words of the ring's word type (uint16, uint32 or uint64,
see ``bitpack.word_dtype``), so the ring arithmetic is plain unsigned wrap-around. Every key
is single-use by construction (derived per round, pair and purpose), so the fixed counter is
safe. ``MaskAccumulator`` adds or subtracts many masks into one vector with natural unsigned
wrap-around, reusing one scratch buffer so a mask costs one AES pass plus one numpy add. That
pass runs through OpenSSL's AES-GCM, which yields the same keystream from the third block on
and is about twice as fast as its CTR mode (see ``_zero_counter_keystream``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from fedrt.protocol.errors import ParameterError

WordType = type[np.uint16] | type[np.uint32] | type[np.uint64]

__all__ = [
    "ZERO_IV",
    "KeyedUniforms",
    "MaskAccumulator",
    "RandomSource",
    "SeededRandom",
    "Uniforms",
    "expand",
    "keystream",
    "system_random",
]

KEY_BYTES = 32
ZERO_IV = bytes(16)
# The mode object only holds the counter block, so one serves every key (building it costs
# a third of setting up a cipher, which a mask pays once per neighbour).
_ZERO_CTR = modes.CTR(ZERO_IV)

# AES-GCM encrypts under the counter blocks IV || 2, IV || 3, ... (a 96-bit IV and a 32-bit
# increment, NIST SP 800-38D 7.1): with a zero IV these are blocks 2, 3, ... of the CTR
# stream from the zero block, and on x86-64 with VAES OpenSSL's GCM (AES and GHASH stitched)
# runs about twice as fast as its CTR. So a zero-counter keystream is its first two blocks by
# CTR and the rest by GCM (its tag is never computed), while that 32-bit counter cannot wrap
# and where GCM is measured faster (``_gcm_is_faster``: not on a CPU that computes GHASH in
# software, a Pi 4 say): the bytes are the same either way, only cheaper.
_GCM_IV = bytes(12)
_CTR_HEAD = 32
_GCM_MAX = (2**32 - 2) * 16  # keystream bytes after the head before the counter would wrap
_GCM_MIN = 4096  # below, a second cipher's setup costs more than GCM saves

RandomSource = Callable[[int], bytes]
"""Where secrets come from: ``source(n)`` returns n uniformly random bytes."""

system_random: RandomSource = os.urandom


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ParameterError(f"PRG keys are {KEY_BYTES} bytes, got {len(key)}")


def keystream(key: bytes, size: int, *, iv: bytes = ZERO_IV) -> bytes:
    """``size`` bytes of AES-256-CTR keystream under ``key`` from counter block ``iv``."""
    _check_key(key)
    if len(iv) != 16 or size < 0:
        raise ParameterError("iv must be 16 bytes and size >= 0")
    if iv == ZERO_IV:
        out = bytearray(size)
        _zero_counter_keystream(key, bytes(size), out)
        return bytes(out)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(bytes(size)) + encryptor.finalize()


@functools.cache
def _gcm_is_faster() -> bool:
    """Whether this machine's OpenSSL makes 64 KiB of keystream faster by GCM than by CTR."""
    key, zeros, out = bytes(range(KEY_BYTES)), bytes(1 << 16), bytearray(1 << 16)

    def best(context: Callable[[], CipherContext]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            context().update_into(zeros, out)
            times.append(time.perf_counter() - start)
        return min(times)

    gcm = best(lambda: Cipher(algorithms.AES(key), modes.GCM(_GCM_IV)).encryptor())
    return gcm < best(lambda: Cipher(algorithms.AES(key), _ZERO_CTR).encryptor())


def _zero_counter_keystream(key: bytes, zeros: bytes, out: bytearray) -> None:
    """Fill ``out`` with the keystream from the zero counter block (``zeros`` as long)."""
    size = len(out)
    if size - _CTR_HEAD > _GCM_MAX or size < _GCM_MIN or not _gcm_is_faster():
        Cipher(algorithms.AES(key), _ZERO_CTR).encryptor().update_into(zeros, out)
        return
    source, target = memoryview(zeros), memoryview(out)
    head = Cipher(algorithms.AES(key), _ZERO_CTR).encryptor()
    head.update_into(source[:_CTR_HEAD], target[:_CTR_HEAD])
    rest = Cipher(algorithms.AES(key), modes.GCM(_GCM_IV)).encryptor()
    rest.update_into(source[_CTR_HEAD:], target[_CTR_HEAD:])


def expand(key: bytes, count: int, dtype: WordType = np.uint32) -> npt.NDArray[np.unsignedinteger]:
    """``count`` pseudo-random words of ``dtype`` from ``key`` (a fresh, writable array)."""
    if count < 0:
        raise ParameterError(f"count must be >= 0, got {count}")
    little = np.dtype(dtype).newbyteorder("<")
    raw = keystream(key, count * little.itemsize)
    return np.frombuffer(raw, dtype=little).astype(dtype, copy=True)


class MaskAccumulator:
    """A vector of ring words to which masks are added or subtracted in place."""

    __slots__ = ("_scratch", "_words", "_zeros", "values")

    def __init__(self, values: npt.NDArray[np.unsignedinteger]) -> None:
        if values.ndim != 1 or values.dtype.type not in (np.uint16, np.uint32, np.uint64):
            raise ParameterError("accumulator values must be a 1-d uint16/32/64 array")
        self.values = values
        nbytes = values.size * values.dtype.itemsize
        self._zeros = bytes(nbytes)
        self._scratch = bytearray(nbytes)
        self._words = np.frombuffer(self._scratch, dtype=values.dtype.newbyteorder("<"))

    def add(self, key: bytes, *, sign: int = 1) -> None:
        """Add (``sign=1``) or subtract (``sign=-1``) the mask expanded from ``key``."""
        _check_key(key)
        _zero_counter_keystream(key, self._zeros, self._scratch)
        words = self._words if self._words.dtype.isnative else self._words.byteswap()
        if sign == 1:
            np.add(self.values, words, out=self.values)
        elif sign == -1:
            np.subtract(self.values, words, out=self.values)
        else:
            raise ParameterError(f"sign must be 1 or -1, got {sign}")


class SeededRandom:
    """A deterministic ``RandomSource``: AES-256-CTR keyed by SHA-256 of the seed.

    For tests, known-answer vectors and reproducible simulations only; devices use
    ``system_random`` (``os.urandom``).
    """

    __slots__ = ("_encryptor",)

    def __init__(self, seed: bytes | int) -> None:
        material = seed if isinstance(seed, bytes) else b"int:%d" % seed
        key = hashlib.sha256(b"fedrt/seeded-random/v1\x00" + material).digest()
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(ZERO_IV)).encryptor()

    def __call__(self, size: int) -> bytes:
        if size < 0:
            raise ParameterError(f"size must be >= 0, got {size}")
        return self._encryptor.update(bytes(size))


class Uniforms(Protocol):
    """A stream of uniform floats in [0, 1): ``numpy.random.Generator`` has this shape."""

    def random(self, size: int, /) -> npt.NDArray[np.float64]: ...


class KeyedUniforms:
    """`Uniforms` from AES-256-CTR under a 256-bit key: 53-bit floats, 8 keystream bytes each.

    What a device's stochastic rounding and DP noise draw from (each under its own per-round
    key, derived from the device's update seed), so that they are as unpredictable as the
    masks and encoding an update does not load ``numpy.random``. Same key, same stream.
    """

    __slots__ = ("_encryptor",)

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._encryptor = Cipher(algorithms.AES(key), _ZERO_CTR).encryptor()

    def random(self, size: int, /) -> npt.NDArray[np.float64]:
        if size < 0:
            raise ParameterError(f"size must be >= 0, got {size}")
        words = np.frombuffer(self._encryptor.update(bytes(8 * size)), dtype="<u8")
        out = (words >> np.uint64(11)).astype(np.float64)
        out *= 1.0 / (1 << 53)
        return out
