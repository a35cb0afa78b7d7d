"""Shamir secret sharing of 256-bit secrets over GF(2**32 - 5), vectorized over secrets.

A 32-byte secret is read as a little-endian 256-bit integer and cut into nine 31-bit chunks
(the last holds 8 bits); each chunk is shared with its own random polynomial of degree t - 1,
so secrecy is perfect chunk by chunk. The prime is below 2**32, so every product of two field
elements fits in uint64 and whole batches are evaluated and interpolated with numpy. A share
is the nine chunk evaluations at x = holder index + 1, 36 bytes little-endian.
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
    "SECRET_BYTES",
    "SHARE_BYTES",
    "check_shares",
    "reconstruct",
    "secrets_from_field",
    "secrets_to_field",
    "share_from_bytes",
    "share_to_bytes",
    "shares_from_bytes",
    "split",
]

PRIME = 4294967291  # 2**32 - 5, the largest prime below 2**32
SECRET_BYTES = 32
CHUNK_BITS = 31
CHUNKS = -(-SECRET_BYTES * 8 // CHUNK_BITS)
SHARE_BYTES = CHUNKS * 4

Field = npt.NDArray[np.uint64]
_P = np.uint64(PRIME)
_WEIGHTS = np.uint64(1) << np.arange(CHUNK_BITS, dtype=np.uint64)


def secrets_to_field(secrets: Sequence[bytes]) -> Field:
    """Secrets (32 bytes each) as an (S, CHUNKS) array of field elements."""
    if any(len(s) != SECRET_BYTES for s in secrets):
        raise ParameterError(f"secrets must be {SECRET_BYTES} bytes each")
    raw = np.frombuffer(b"".join(secrets), dtype=np.uint8).reshape(len(secrets), SECRET_BYTES)
    bits = np.unpackbits(raw, axis=1, bitorder="little")
    padded = np.zeros((len(secrets), CHUNKS * CHUNK_BITS), dtype=np.uint64)
    padded[:, : SECRET_BYTES * 8] = bits
    chunks = padded.reshape(len(secrets), CHUNKS, CHUNK_BITS) * _WEIGHTS
    values: Field = chunks.sum(axis=2, dtype=np.uint64)
    return values


def secrets_from_field(values: Field) -> list[bytes]:
    """Inverse of ``secrets_to_field``; a chunk too wide for its slot is a bad reconstruction."""
    widths = np.full(CHUNKS, CHUNK_BITS)
    widths[-1] = SECRET_BYTES * 8 - (CHUNKS - 1) * CHUNK_BITS
    if (values >> widths.astype(np.uint64)).any():
        raise ConsistencyError("reconstructed secret is out of range: inconsistent shares")
    planes = (values[:, :, None] >> np.arange(CHUNK_BITS, dtype=np.uint64)) & np.uint64(1)
    bits = planes.reshape(len(values), CHUNKS * CHUNK_BITS)[:, : SECRET_BYTES * 8]
    packed = np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")
    return [row.tobytes() for row in packed]


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
    """Shares (CHUNKS field elements each, flattened) as 36 little-endian bytes apiece."""
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
    """Parse a 36-byte share; elements must be reduced modulo the prime."""
    if len(data) != SHARE_BYTES:
        raise DecodeError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    values = np.frombuffer(data, dtype="<u4").astype(np.uint64)
    if (values >= _P).any():
        raise DecodeError("share element is not reduced modulo the prime")
    return values
