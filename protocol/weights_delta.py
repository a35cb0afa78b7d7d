"""Model-version deltas for the downlink: rotated, quantized, bit-packed; rebuilt bit for bit.

The coordinator encodes the change from version v to v + 1 (``encode_delta``) and commits
``apply_delta(v, delta)``, not its own float weights, so the version it signs IS what every
device rebuilds. Rebuilding uses only element-wise IEEE float64 arithmetic (sign flips,
Hadamard butterflies, one multiply by a stored step, one add, one rounding to float32): no
reductions, no BLAS, no fused multiply-add, hence the same bits on x86_64 and aarch64.

Quantization is symmetric around zero (an unchanged coordinate stays exactly unchanged)
and uses round-to-nearest: the error of one version is corrected by the next version's
delta, which starts from the committed weights, so there is nothing to keep unbiased.

Blob layout (little-endian)::

    magic "FRWD" | format u8 = 1 | bits u8 | reserved u16 = 0 | params u32 | bound f64
    | rotation seed (32 bytes) | sha256 of the base weights | sha256 of the result weights
    | 2**ceil(log2 params) levels, each ``bits`` wide (``bitpack``)

Weights are the flattened float32 vector in manifest order; their sha256 is over its
little-endian bytes (``weights_sha256``). A delta applies to exactly one base: another base
raises ``WrongBase``; a rebuilt vector whose hash differs raises ``DeltaMismatch``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.protocol import bitpack
from fedrt.protocol.errors import ConsistencyError, DecodeError, LengthError, ParameterError
from fedrt.protocol.rotation import padded_size, rotate, unrotate

__all__ = [
    "DeltaHeader",
    "DeltaMismatch",
    "EncodedDelta",
    "WrongBase",
    "apply_delta",
    "encode_delta",
    "read_header",
    "weights_bytes",
    "weights_from_bytes",
    "weights_sha256",
]

Weights = npt.NDArray[np.float32]
MAGIC = b"FRWD"
FORMAT = 1
_HEAD = struct.Struct("<4sBBHId32s32s32s")
MIN_BITS, MAX_BITS = 2, 16


class WrongBase(ConsistencyError):
    """The delta was made for other base weights than the ones it is applied to."""


class DeltaMismatch(ConsistencyError):
    """The rebuilt weights do not hash to what the delta (or the signed version) says."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeltaHeader:
    bits: int
    params: int
    bound: float
    seed: bytes
    base_sha256: str
    result_sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedDelta:
    """A delta's blob and the weights it rebuilds (what the coordinator commits)."""

    blob: bytes
    result: Weights
    header: DeltaHeader


def weights_bytes(weights: npt.NDArray[np.floating]) -> bytes:
    """The flat float32 little-endian bytes that weight blobs and hashes are made of."""
    return np.ascontiguousarray(weights, dtype="<f4").reshape(-1).tobytes()


def weights_from_bytes(data: bytes, params: int) -> Weights:
    if len(data) != 4 * params:
        raise LengthError(
            f"a weights blob of {params} values has {4 * params} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def weights_sha256(weights: npt.NDArray[np.floating]) -> str:
    return hashlib.sha256(weights_bytes(weights)).hexdigest()


def _half(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ParameterError(f"delta bits must lie in {MIN_BITS}..{MAX_BITS}, got {bits!r}")


def _rebuild(base: Weights, levels: npt.NDArray[np.unsignedinteger], h: DeltaHeader) -> Weights:
    half = _half(h.bits)
    step = h.bound / half
    deq = (levels.astype(np.int64) - half).astype(np.float64)
    deq *= step
    change = unrotate(deq, h.seed, h.params)
    out = base.astype(np.float64)
    out += change
    return out.astype(np.float32)


def encode_delta(
    base: npt.NDArray[np.floating], target: npt.NDArray[np.floating], *, bits: int, seed: bytes
) -> EncodedDelta:
    """The delta from ``base`` towards ``target`` and the weights it rebuilds exactly."""
    _check_bits(bits)
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise ParameterError("a delta's rotation seed is 32 bytes")
    b = np.ascontiguousarray(base, dtype=np.float32).reshape(-1)
    t = np.asarray(target, dtype=np.float32).reshape(-1)
    if b.size != t.size or b.size < 1 or b.size >= 1 << 32:
        raise LengthError(f"base has {b.size} values, target {t.size}")
    if not (np.isfinite(b).all() and np.isfinite(t).all()):
        raise ParameterError("weights must be finite")
    rotated = rotate(t.astype(np.float64) - b.astype(np.float64), seed)
    half = _half(bits)
    peak = float(np.max(np.abs(rotated)))
    bound = peak if peak > 0 else 1.0
    scaled = rotated * (half / bound)
    levels = (np.clip(np.rint(scaled), -half, half) + half).astype(np.uint32)
    base_sha = weights_sha256(b)
    header = DeltaHeader(
        bits=bits, params=b.size, bound=bound, seed=seed, base_sha256=base_sha, result_sha256=""
    )
    result = _rebuild(b, levels, header)
    header = dataclasses.replace(header, result_sha256=weights_sha256(result))
    head = _HEAD.pack(
        MAGIC, FORMAT, bits, 0, b.size, bound, seed, bytes.fromhex(base_sha),
        bytes.fromhex(header.result_sha256),
    )  # fmt: skip
    return EncodedDelta(blob=head + bitpack.pack(levels, bits), result=result, header=header)


def read_header(blob: bytes) -> DeltaHeader:
    """The header of a delta blob, checked against its length; ``DecodeError`` if malformed."""
    if len(blob) < _HEAD.size:
        raise LengthError("a delta is shorter than its header")
    magic, fmt, bits, reserved, params, bound, seed, base, result = _HEAD.unpack_from(blob)
    if magic != MAGIC or fmt != FORMAT or reserved != 0:
        raise DecodeError("not a fedrt weights delta of format 1")
    if not MIN_BITS <= bits <= MAX_BITS or params < 1:
        raise DecodeError(f"delta with bits {bits}, params {params}")
    if not (np.isfinite(bound) and bound > 0):
        raise DecodeError("delta with a bound that is not finite and > 0")
    if len(blob) != _HEAD.size + bitpack.packed_size(padded_size(params), bits):
        raise LengthError(f"a delta of {params} values at {bits} bits has another length")
    return DeltaHeader(bits=bits, params=params, bound=bound, seed=seed,
                       base_sha256=base.hex(), result_sha256=result.hex())  # fmt: skip


def apply_delta(base: npt.NDArray[np.floating], blob: bytes) -> Weights:
    """The weights ``blob`` rebuilds from ``base``: ``WrongBase`` if it was made for other
    weights, ``DeltaMismatch`` if the result does not hash to what it says."""
    header = read_header(blob)
    b = np.ascontiguousarray(base, dtype=np.float32).reshape(-1)
    if b.size != header.params:
        raise WrongBase(f"delta for {header.params} values applied to {b.size}")
    if weights_sha256(b) != header.base_sha256:
        raise WrongBase("delta made for other base weights")
    levels = bitpack.unpack(memoryview(blob)[_HEAD.size :], header.bits, padded_size(header.params))
    if int(levels.max()) > 2 * _half(header.bits):
        raise DecodeError("delta level out of range")
    result = _rebuild(b, levels, header)
    if weights_sha256(result) != header.result_sha256:
        raise DeltaMismatch("rebuilt weights do not hash to the delta's result")
    return result
