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

import functools
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
    "evaluate",
    "field_from_words",
    "locate_errors",
    "new_secret",
    "reconstruct",
    "secrets_from_field",
    "secrets_or_none",
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
    out = secrets_or_none(values)
    if any(secret is None for secret in out):
        raise ConsistencyError("reconstructed secret is out of range: inconsistent shares")
    return [secret for secret in out if secret is not None]


def secrets_or_none(values: Field) -> list[bytes | None]:
    """``secrets_from_field`` row by row, with None where a row is out of range."""
    out: list[bytes | None] = []
    for row in np.asarray(values, dtype=np.uint64).tolist():
        number = 0
        for digit in reversed(row):
            number = number * PRIME + digit
        out.append(None if number >> SECRET_BITS else number.to_bytes(SECRET_BYTES, "little"))
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
    weights = _lagrange_weights(base, targets)
    values = np.concatenate([secrets[None], fixed]) % _P  # (count, S, CHUNKS)
    terms = weights[:, :, None, None] * values[None] % _P
    shares: Field = terms.sum(axis=1, dtype=np.uint64) % _P
    return shares


_TABLE_LIMIT = 1 << 16


@functools.lru_cache(maxsize=8)
def _inverse_table(size: int) -> Field:
    """Inverses of 1..size-1 modulo p (index 0 unused), by inv(i) = -(p // i) inv(p % i)."""
    inverse = [0, 1]
    for i in range(2, size):
        inverse.append((PRIME - PRIME // i) * inverse[PRIME % i] % PRIME)
    return np.array(inverse[:size], dtype=np.uint64)


def _invert(differences: npt.NDArray[np.int64]) -> Field:
    """Inverses modulo p of non-zero integer differences (small ones by table lookup)."""
    span = int(np.abs(differences).max(initial=1))
    if span < _TABLE_LIMIT:
        table = _inverse_table(1 << max(span, 1).bit_length())
        value = table[np.abs(differences)]
        return np.where(differences < 0, (_P - value) % _P, value)
    return _pow_mod((differences % PRIME).astype(np.uint64), PRIME - 2)


def _product(values: Field) -> Field:
    """The product modulo p along the last axis."""
    out = np.ones(values.shape[:-1], dtype=np.uint64)
    for column in np.moveaxis(values, -1, 0):
        out = out * column % _P
    return out


def _lagrange_weights(base: Field, targets: Field) -> Field:
    """w[q, m] with f(targets[q]) = sum_m w[q, m] f(base[m]) for every f of degree < len(base)."""
    to_targets = targets.astype(np.int64)[:, None] - base.astype(np.int64)[None, :]
    among = base.astype(np.int64)[:, None] - base.astype(np.int64)[None, :]
    np.fill_diagonal(among, 1)
    scale = _product(_invert(among))  # 1 / prod_{l != m} (x_m - x_l)
    full = _product((to_targets % PRIME).astype(np.uint64))  # prod_l (x_q - x_l)
    weights: Field = full[:, None] * scale[None, :] % _P * _invert(to_targets) % _P
    return weights


def evaluate(xs: Sequence[int], ys: Field, targets: Sequence[int]) -> Field:
    """The polynomials through shares ``ys`` (len(xs), CHUNKS) at x = ``targets`` (not in xs)."""
    if len(set(xs)) != len(xs) or set(xs) & set(targets):
        raise ParameterError("xs must be distinct and the targets new points")
    weights = _lagrange_weights(np.asarray(xs, dtype=np.uint64), np.asarray(targets, np.uint64))
    out: Field = (weights[:, :, None] * (ys[None] % _P) % _P).sum(axis=1, dtype=np.uint64) % _P
    return out


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
    # lagrange[s, j] = prod_{b != j} x_b / (x_b - x_j): the differences are small integers,
    # inverted by table (``_invert``) instead of one Fermat exponentiation per weight.
    signed = np.asarray(xs, dtype=np.int64)
    differences = signed[:, None, :] - signed[:, :, None]  # [s, j, b] = x_b - x_j
    diagonal = np.arange(t)
    differences[:, diagonal, diagonal] = 1
    others = np.broadcast_to(x[:, None, :] % _P, (count, t, t)).copy()
    others[:, diagonal, diagonal] = 1
    lagrange = _product(others) * _product(_invert(differences)) % _P
    terms = lagrange[:, :, None] * ys % _P
    secrets: Field = terms.sum(axis=1, dtype=np.uint64) % _P
    return secrets


def _solve(rows: list[list[int]], rhs: list[int], unknowns: int) -> list[int] | None:
    """One solution modulo p of a linear system, or None when it is inconsistent."""
    matrix = [[*row, value] for row, value in zip(rows, rhs, strict=True)]
    pivots: list[int] = []
    r = 0
    for c in range(unknowns):
        pivot = next((i for i in range(r, len(matrix)) if matrix[i][c]), None)
        if pivot is None:
            continue
        matrix[r], matrix[pivot] = matrix[pivot], matrix[r]
        inverse = pow(matrix[r][c], PRIME - 2, PRIME)
        matrix[r] = [v * inverse % PRIME for v in matrix[r]]
        for i in range(len(matrix)):
            if i != r and matrix[i][c]:
                factor = matrix[i][c]
                matrix[i] = [
                    (v - factor * w) % PRIME for v, w in zip(matrix[i], matrix[r], strict=True)
                ]
        pivots.append(c)
        r += 1
    if any(row[-1] for row in matrix[r:]):
        return None
    solution = [0] * unknowns  # free variables at zero: any solution will do
    for row, c in zip(matrix, pivots, strict=False):
        solution[c] = row[-1]
    return solution


def locate_errors(xs: Sequence[int], ys: Sequence[int], threshold: int) -> frozenset[int] | None:
    """Positions of shares off the polynomial of degree < ``threshold`` (Berlekamp-Welch).

    ``ys[i]`` is one field element of the share held at ``xs[i]``. With m shares, up to
    (m - threshold) // 2 wrong ones are found: an error locator E (monic, degree e) and Q
    with Q(x_i) = y_i E(x_i) for every i give Q = P E, so every share where E does not vanish
    is right; the positions returned (the roots of E among the xs) include every wrong share
    and perhaps a few right ones. None when more shares are wrong than that.
    """
    m = len(xs)
    for e in range(0, (m - threshold) // 2 + 1):
        rows = [
            [pow(x, k, PRIME) for k in range(threshold + e)]
            + [(PRIME - y) * pow(x, k, PRIME) % PRIME for k in range(e)]
            for x, y in zip(xs, ys, strict=True)
        ]
        rhs = [y * pow(x, e, PRIME) % PRIME for x, y in zip(xs, ys, strict=True)]
        solution = _solve(rows, rhs, threshold + 2 * e)
        if solution is None:
            continue
        locator = [*solution[threshold + e :], 1]
        return frozenset(
            i
            for i, x in enumerate(xs)
            if sum(c * pow(x, k, PRIME) for k, c in enumerate(locator)) % PRIME == 0
        )
    return None


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
