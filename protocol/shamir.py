"""Shamir secret sharing of 127-bit secrets over GF(2**32 - 5), vectorized over secrets.

A 16-byte secret is a little-endian integer below 2**127 (its top bit clear), written in base
p = 2**32 - 5 as four digits (p**4 > 2**127); each digit is shared with its own polynomial of
degree t - 1, so secrecy is perfect digit by digit. 127 bits are above the ~2**126 security of
the X25519 keys these secrets stand for, and make a share exactly 16 bytes: the four digit
evaluations at x = holder index + 1, little-endian u32 each. The prime is below 2**32, so every
product of two field elements fits in uint64 and batches run in numpy. ``split_through`` deals
a polynomial through t - 1 points fixed in advance (shares both sides derive from a pairwise
key, so they need not be sent) and evaluates it where shares must be sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedrt.protocol.errors import ConsistencyError, DecodeError, DuplicateShare, ParameterError
from fedrt.protocol.prg import RandomSource

__all__ = [
    "CHUNKS",
    "PRIME",
    "SECRET_BITS",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "check_shares",
    "field_from_words",
    "new_secret",
    "reconstruct",
    "secrets_from_field",
    "secrets_to_field",
    "share_from_bytes",
    "share_to_bytes",
    "shares_from_bytes",
    "split",
    "split_through",
]

PRIME = 4294967291  # 2**32 - 5, the largest prime below 2**32
SECRET_BYTES = 16
SECRET_BITS = 127
CHUNKS = 4  # base-p digits of a secret: PRIME**4 > 2**127
SHARE_BYTES = CHUNKS * 4

Field = npt.NDArray[np.uint64]
_P = np.uint64(PRIME)
_2_64_MOD_P = np.uint64(2**64 % PRIME)


def new_secret(random: RandomSource) -> bytes:
    """A fresh 16-byte secret: 127 uniform bits, the top bit clear."""
    raw = bytearray(random(SECRET_BYTES))
    raw[-1] &= 0x7F
    return bytes(raw)


def secrets_to_field(secrets: Sequence[bytes]) -> Field:
    """Secrets (16 bytes, value < 2**127) as an (S, CHUNKS) array of base-p digits."""
    if any(len(s) != SECRET_BYTES for s in secrets):
        raise ParameterError(f"secrets must be {SECRET_BYTES} bytes each")
    values = np.empty((len(secrets), CHUNKS), dtype=np.uint64)
    for row, secret in enumerate(secrets):
        number = int.from_bytes(secret, "little")
        if number >> SECRET_BITS:
            raise ParameterError(f"a secret must be below 2**{SECRET_BITS} (top bit clear)")
        for column in range(CHUNKS):
            number, values[row, column] = divmod(number, PRIME)
    return values


def secrets_from_field(values: Field) -> list[bytes]:
    """Inverse of ``secrets_to_field``; a value of 2**127 or more is a bad reconstruction."""
    out = []
    for row in np.asarray(values, dtype=np.uint64).tolist():
        number = 0
        for digit in reversed(row):
            number = number * PRIME + digit
        if number >> SECRET_BITS:
            raise ConsistencyError("reconstructed secret is out of range: inconsistent shares")
        out.append(number.to_bytes(SECRET_BYTES, "little"))
    return out


def field_from_words(data: bytes) -> Field:
    """Field elements from pairs of little-endian u64 words (statistically ~2**-91 close to
    uniform when the words are): how derived shares are read from a keystream."""
    if len(data) % 16:
        raise ParameterError("field_from_words needs 16 bytes per element")
    words = np.frombuffer(data, dtype="<u8").astype(np.uint64).reshape(-1, 2)
    high = words[:, 1] % _P * _2_64_MOD_P % _P
    out: Field = (high + words[:, 0] % _P) % _P
    return out


def _uniform(count: int, random: RandomSource) -> Field:
    """``count`` uniform field elements by rejection sampling 32-bit words (bounded loop)."""
    out = np.empty(0, dtype=np.uint64)
    for _ in range(64):
        words = np.frombuffer(random(4 * (count - out.size + 8)), dtype="<u4").astype(np.uint64)
        out = np.concatenate([out, words[words < _P]])
        if out.size >= count:
            return out[:count]
    raise ParameterError("random source is not uniform: rejection sampling did not finish")


def split(secrets: Field, xs: Sequence[int], threshold: int, random: RandomSource) -> Field:
    """Shares of every secret for every holder: an array (len(xs), S, CHUNKS).

    ``secrets`` is an (S, CHUNKS) array from ``secrets_to_field``; any ``threshold`` of the
    shares reconstruct a secret, fewer reveal nothing about it.
    """
    holders = np.asarray(xs, dtype=np.uint64)
    if not 1 <= threshold <= holders.size:
        raise ParameterError(f"threshold {threshold} not in 1..{holders.size} holders")
    if np.unique(holders).size != holders.size or not ((holders > 0) & (holders < _P)).all():
        raise ParameterError("holder x-coordinates must be distinct and in 1..p-1")
    count, chunks = secrets.shape
    coefficients = _uniform((threshold - 1) * count * chunks, random)
    coefficients = coefficients.reshape(threshold - 1, count, chunks)
    x = holders[:, None, None]
    acc = np.zeros((holders.size, count, chunks), dtype=np.uint64)
    for c in coefficients[::-1]:  # Horner: highest degree first, constant term last
        acc = (acc + c) % _P * x % _P
    return (acc + secrets) % _P


def split_through(
    secrets: Field, fixed_xs: Sequence[int], fixed: Field, xs: Sequence[int]
) -> Field:
    """Shares at ``xs`` of the polynomials through (0, secret) and ``fixed`` at ``fixed_xs``.

    ``secrets`` is (S, CHUNKS); ``fixed`` is (F, S, CHUNKS) with F = t - 1 uniform values, so
    the polynomials have degree t - 1 and are exactly as random as those of ``split``.
    Returns (len(xs), S, CHUNKS).
    """
    base = np.asarray([0, *fixed_xs], dtype=np.uint64)
    targets = np.asarray(xs, dtype=np.uint64)
    if fixed.shape != (len(fixed_xs), *secrets.shape):
        raise ParameterError("fixed values must be (len(fixed_xs), S, chunks)")
    if np.unique(base).size != base.size or np.isin(targets, base).any():
        raise ParameterError("x-coordinates must be distinct, non-zero and not fixed already")
    if not ((targets > 0) & (targets < _P)).all() or not (base < _P).all():
        raise ParameterError("x-coordinates must be in 1..p-1")
    count = base.size
    column = np.arange(count)
    numerator = np.ones((targets.size, count), dtype=np.uint64)
    denominator = np.ones(count, dtype=np.uint64)
    for b in range(count):
        own = column == b
        numerator = numerator * np.where(own, np.uint64(1), (targets[:, None] + _P - base[b]) % _P)
        numerator %= _P
        denominator = denominator * np.where(own, np.uint64(1), (base + _P - base[b]) % _P) % _P
    weights = numerator * _pow_mod(denominator, PRIME - 2)[None, :] % _P
    values = np.concatenate([secrets[None], fixed]) % _P  # (count, S, CHUNKS)
    terms = weights[:, :, None, None] * values[None] % _P
    shares: Field = terms.sum(axis=1, dtype=np.uint64) % _P
    return shares


def _pow_mod(base: Field, exponent: int) -> Field:
    result = np.ones_like(base)
    square = base % _P
    while exponent:
        if exponent & 1:
            result = result * square % _P
        square = square * square % _P
        exponent >>= 1
    return result


def reconstruct(xs: npt.NDArray[np.integer], ys: Field) -> Field:
    """Secrets from exactly t shares each: ``xs`` (S, t) holders, ``ys`` (S, t, CHUNKS).

    All S secrets are interpolated at zero at once; rows may use different holder sets.
    """
    x = np.asarray(xs, dtype=np.uint64)
    if x.ndim != 2 or ys.shape[:2] != x.shape or ys.ndim != 3:
        raise ParameterError("xs must be (S, t) and ys (S, t, chunks)")
    ordered = np.sort(x, axis=1)
    if (ordered[:, 1:] == ordered[:, :-1]).any():
        raise DuplicateShare("two shares of one secret come from the same holder")
    count, t = x.shape
    numerator = np.ones((count, t), dtype=np.uint64)
    denominator = np.ones((count, t), dtype=np.uint64)
    column = np.arange(t)
    for b in range(t):
        xb = x[:, b : b + 1]
        own = column == b
        numerator = numerator * np.where(own, np.uint64(1), xb) % _P
        diff = (xb + _P - x) % _P
        denominator = denominator * np.where(own, np.uint64(1), diff) % _P
    lagrange = numerator * _pow_mod(denominator, PRIME - 2) % _P
    terms = lagrange[:, :, None] * ys % _P
    secrets: Field = terms.sum(axis=1, dtype=np.uint64) % _P
    return secrets


def share_to_bytes(share: Field) -> bytes:
    """Shares (CHUNKS field elements each, flattened) as 16 little-endian bytes apiece."""
    return np.asarray(share, dtype=np.uint64).astype("<u4").tobytes()


def check_shares(data: bytes) -> None:
    """Check a concatenation of shares in one pass: whole shares, elements reduced."""
    if len(data) % SHARE_BYTES:
        raise DecodeError(f"shares are {SHARE_BYTES} bytes each, got {len(data)} bytes")
    if (np.frombuffer(data, dtype="<u4") >= _P).any():
        raise DecodeError("share element is not reduced modulo the prime")


def shares_from_bytes(data: bytes, count: int) -> Field:
    """``count`` concatenated shares as a (count, CHUNKS) array (checked like ``check_shares``)."""
    if len(data) != count * SHARE_BYTES:
        raise DecodeError(f"expected {count} shares of {SHARE_BYTES} bytes")
    check_shares(data)
    return np.frombuffer(data, dtype="<u4").astype(np.uint64).reshape(count, CHUNKS)


def share_from_bytes(data: bytes | memoryview) -> Field:
    """Parse a 16-byte share; elements must be reduced modulo the prime."""
    if len(data) != SHARE_BYTES:
        raise DecodeError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    values = np.frombuffer(data, dtype="<u4").astype(np.uint64)
    if (values >= _P).any():
        raise DecodeError("share element is not reduced modulo the prime")
    return values
