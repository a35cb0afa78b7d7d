"""A device's update as ring elements: clip, weight, quantize, count; and the inverse on a sum.

Layout of one device's vector (length ``vector_length(spec)``), every element in [0, 2^b):

* m coordinates: ``q(w * clip(delta))`` where ``clip`` scales delta to L2 norm <= C,
  ``w = min(n_examples, cap) / cap`` in (0, 1] is the FedAvg weight, and ``q`` maps [-C, C]
  onto 2^b - 1 steps with unbiased stochastic rounding;
* ``count_digits(spec)`` coordinates: ``min(n_examples, cap)`` written in base 2^b, so the
  server learns the SUM of the weights exactly (never one device's count).

Summing n such vectors can never exceed n (2^b - 1) per element, so the sum is exact in the
ring Z_(2^k) with k = b + ceil(log2 n) (``ring_bits``), which is what SecAgg+ works in. The
server divides the de-quantized weighted sum by the exact weight sum: the weighted FedAvg
mean, with an error of at most one quantization step per coordinate.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedrt.protocol import bitpack
from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.round_messages import UpdateSpec

Ring = npt.NDArray[np.uint64]
Floats = npt.NDArray[np.float64]


def count_digits(spec: UpdateSpec) -> int:
    """How many base-2^b digits the capped example count takes."""
    return max(1, math.ceil(spec.weight_cap.bit_length() / spec.bits))


def vector_length(spec: UpdateSpec) -> int:
    return spec.params + count_digits(spec)


def ring_bits(spec: UpdateSpec, n_devices: int) -> int:
    """Bits k of the ring in which a sum of ``n_devices`` vectors cannot overflow."""
    if n_devices < 1:
        raise ParameterError("a sum needs at least one device")
    return spec.bits + max(0, math.ceil(math.log2(n_devices)))


def step(spec: UpdateSpec) -> float:
    """One quantization step: the worst-case rounding error of a coordinate."""
    return 2.0 * spec.clip_norm / ((1 << spec.bits) - 1)


def clip(delta: npt.NDArray[np.floating], clip_norm: float) -> Floats:
    """Scale ``delta`` down to L2 norm ``clip_norm`` (unchanged when already within)."""
    d = np.asarray(delta, dtype=np.float64)
    norm = float(np.linalg.norm(d))
    return d if norm <= clip_norm else d * (clip_norm / norm)


def encode(
    delta: npt.NDArray[np.floating],
    n_examples: int,
    spec: UpdateSpec,
    rng: np.random.Generator,
    *,
    weighted: bool = True,
) -> Ring:
    """The device's vector of ring elements (each < 2^bits) for ``delta`` trained on
    ``n_examples`` examples.

    ``weighted`` (for SecAgg+, where only the sum is seen) pre-multiplies the clipped delta
    by the device's weight; a plain update (SecAgg off) leaves it unweighted so a robust
    rule sees the delta itself, at full quantization resolution.
    """
    d = np.asarray(delta)
    if d.ndim != 1 or d.size != spec.params:
        raise LengthError(f"delta must be a flat vector of {spec.params} values, got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ParameterError("delta contains NaN or infinity")
    if not isinstance(n_examples, int) or n_examples < 1:
        raise ParameterError(f"n_examples must be a positive integer, got {n_examples!r}")
    count = min(n_examples, spec.weight_cap)
    levels = (1 << spec.bits) - 1
    scale = count / spec.weight_cap if weighted else 1.0
    scaled = (clip(d, spec.clip_norm) * scale + spec.clip_norm) * (levels / (2.0 * spec.clip_norm))
    # floor(x + u), u ~ U[0, 1): E[result] = x, so the quantized mean is unbiased.
    rounded = np.floor(scaled + rng.random(scaled.size))
    np.clip(rounded, 0, levels, out=rounded)
    out = np.empty(vector_length(spec), dtype=np.uint64)
    out[: spec.params] = rounded.astype(np.uint64)
    for i in range(count_digits(spec)):
        out[spec.params + i] = (count >> (i * spec.bits)) & levels
    return out


def decode_sum(
    total: npt.NDArray[np.unsignedinteger], spec: UpdateSpec, n_devices: int
) -> tuple[Floats, float]:
    """(weighted mean delta, summed weight) from the exact sum of ``n_devices`` vectors."""
    t = np.asarray(total)
    if t.ndim != 1 or t.size != vector_length(spec) or t.dtype.kind != "u":
        raise LengthError(f"a sum must hold {vector_length(spec)} unsigned values")
    levels = (1 << spec.bits) - 1
    if n_devices < 1 or int(t.max(initial=0)) > n_devices * levels:
        raise ParameterError("the sum exceeds what that many devices can produce")
    counts = sum(int(v) << (i * spec.bits) for i, v in enumerate(t[spec.params :]))
    if counts < n_devices:
        raise ParameterError(f"summed example count {counts} < {n_devices} devices")
    weight = counts / spec.weight_cap
    # Every device added the offset C whatever its weight, so n * C comes off the sum.
    weighted_sum = t[: spec.params].astype(np.float64) * (2.0 * spec.clip_norm / levels)
    weighted_sum -= n_devices * spec.clip_norm
    return weighted_sum / weight, weight


def decode_one(vector: npt.NDArray[np.unsignedinteger], spec: UpdateSpec) -> tuple[Floats, int]:
    """(clipped delta, capped example count) of ONE unweighted vector (a plain update)."""
    v = np.asarray(vector)
    if v.ndim != 1 or v.size != vector_length(spec) or v.dtype.kind != "u":
        raise LengthError(f"an update must hold {vector_length(spec)} unsigned values")
    levels = (1 << spec.bits) - 1
    if int(v.max(initial=0)) > levels:
        raise ParameterError(f"an update value exceeds {spec.bits} bits")
    count = sum(int(x) << (i * spec.bits) for i, x in enumerate(v[spec.params :]))
    if not 1 <= count <= spec.weight_cap:
        raise ParameterError(f"example count {count} outside 1..{spec.weight_cap}")
    delta = v[: spec.params].astype(np.float64) * (2.0 * spec.clip_norm / levels) - spec.clip_norm
    return delta, count


def pack(vector: npt.NDArray[np.unsignedinteger], bits: int) -> bytes:
    """Bit-pack a vector of ring elements (wire form of a plain update)."""
    return bitpack.pack(np.asarray(vector, dtype=np.uint64), bits)


def unpack(data: bytes, spec: UpdateSpec) -> Ring:
    """A plain update from its wire form; ``LengthError`` unless exactly the right size."""
    return bitpack.unpack(data, spec.bits, vector_length(spec)).astype(np.uint64)


__all__ = [
    "clip",
    "count_digits",
    "decode_one",
    "decode_sum",
    "encode",
    "pack",
    "ring_bits",
    "step",
    "unpack",
    "vector_length",
]
