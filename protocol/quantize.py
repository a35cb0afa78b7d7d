"""Quantized updates: L2 clipping, unbiased stochastic rounding to b bits, ring layout, inverse.

A device's vector (``QuantSpec.length`` elements, each in [0, 2**b)) is laid out as
  * ``params`` coordinates ``q_C(w * clip_C(delta))``, with w = min(examples, cap) / cap the
    FedAvg weight and q_r mapping [-r, r] onto 0 .. 2**b - 1 by floor(x + U[0, 1)), which is
    unbiased: E[q] = x;
  * ``count_digits`` coordinates: min(examples, cap) in base 2**b, so the sum of the weights
    is learned exactly;
  * one coordinate per entry of ``scalar_bounds``: a per-device scalar clamped to [-r, r] and
    quantized like a coordinate (decoded as the plain mean over devices).
n such vectors sum to at most n * (2**b - 1) per element, so the sum is exact in Z_(2**k)
with k = b + ceil(log2 n) (``ring_bits``). Decoding a sum gives the weighted mean with an
error below one step 2C / (2**b - 1) per coordinate per device, divided by the weight sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.prg import Uniforms

__all__ = [
    "AggregatedUpdate",
    "QuantSpec",
    "clip_l2",
    "decode_update_sum",
    "dequantize_sum",
    "encode_update",
    "quantize",
    "ring_bits",
    "stochastic_round",
]

Floats = npt.NDArray[np.float64]
Ring = npt.NDArray[np.uint32]


_CHUNK = 1 << 16  # elements per pass of the encoding loop (bounds its temporaries)


def ring_bits(bits: int, clients: int) -> int:
    """Ring bits k = b + ceil(log2 n): a sum of n values below 2**b cannot wrap around."""
    if clients < 1 or not 1 <= bits <= 32:
        raise ParameterError(f"need clients >= 1 and bits in 1..32, got {clients}, {bits}")
    return bits + math.ceil(math.log2(clients))


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantSpec:
    """How a float update becomes ring elements (the same on every device of a round)."""

    params: int
    bits: int
    clip_norm: float
    weight_cap: int = 1
    scalar_bounds: tuple[float, ...] = ()
    # Range [-r, r] each coordinate is quantized over (clamped beyond); None: clip_norm, which
    # no coordinate of a clipped delta can exceed. A rotated update (``protocol.rotation``)
    # needs only a few times clip_norm / sqrt(params), for far finer steps.
    coord_bound: float | None = None

    def __post_init__(self) -> None:
        if self.params < 1 or self.weight_cap < 1:
            raise ParameterError("params and weight_cap must be >= 1")
        if not 1 <= self.bits <= 32:
            raise ParameterError(f"bits must be in 1..32, got {self.bits}")
        bounds = (self.clip_norm, self.bound, *self.scalar_bounds)
        if not all(math.isfinite(b) and b > 0 for b in bounds):
            raise ParameterError("clip_norm and scalar bounds must be finite and > 0")

    @property
    def levels(self) -> int:
        """The largest quantized value, 2**b - 1."""
        return (1 << self.bits) - 1

    @property
    def bound(self) -> float:
        """The per-coordinate quantization range r of [-r, r]."""
        return self.clip_norm if self.coord_bound is None else self.coord_bound

    @property
    def step(self) -> float:
        """One quantization step of a coordinate: its worst-case rounding error."""
        return 2.0 * self.bound / self.levels

    @property
    def count_digits(self) -> int:
        """Base-2**b digits that hold the capped example count."""
        return max(1, math.ceil(self.weight_cap.bit_length() / self.bits))

    @property
    def length(self) -> int:
        """Elements of one device's vector."""
        return self.params + self.count_digits + len(self.scalar_bounds)


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregatedUpdate:
    """What the server learns from a sum: means and totals, never one device's values."""

    mean: Floats  # weighted mean of the clipped deltas
    weight: float  # sum of the FedAvg weights min(examples, cap) / cap
    examples: int  # sum of the capped example counts
    scalars: tuple[float, ...]  # plain mean of each per-device scalar
    contributors: int


def clip_l2(values: npt.NDArray[np.floating], bound: float) -> Floats:
    """``values`` scaled down to L2 norm ``bound`` (returned as float64, unchanged if within)."""
    x = np.asarray(values, dtype=np.float64)
    norm = _norm(x)
    return x * (bound / norm) if norm > bound else x


def clip_l2_in_place(x: Floats, bound: float) -> Floats:
    """``clip_l2`` of a float64 vector, in place (the same values, no copy)."""
    norm = _norm(x)
    if norm > bound:
        x *= bound / norm
    return x


def _norm(x: Floats) -> float:
    # einsum, not linalg.norm: BLAS threads cost milliseconds here on small machines.
    return math.sqrt(float(np.einsum("i,i->", x, x)))


def stochastic_round(scaled: Floats, rng: Uniforms) -> Floats:
    """floor(x + U[0, 1)) in place of ``scaled``: rounds up with probability frac(x)."""
    scaled += rng.random(scaled.size).reshape(scaled.shape)
    return np.floor(scaled, out=scaled)


def quantize(values: npt.NDArray[np.floating], *, bound: float, bits: int, rng: Uniforms) -> Ring:
    """Values clamped to [-bound, bound], mapped onto 0 .. 2**bits - 1 without bias inside."""
    levels = (1 << bits) - 1
    scaled = np.clip(np.asarray(values, dtype=np.float64), -bound, bound)  # a fresh array
    scaled += bound
    scaled *= levels / (2.0 * bound)
    rounded = stochastic_round(scaled, rng)
    np.clip(rounded, 0, levels, out=rounded)  # float error at the ends only
    return rounded.astype(np.uint32)


def dequantize_sum(
    total: npt.NDArray[np.unsignedinteger], *, bound: float, bits: int, contributors: int
) -> Floats:
    """The sum of the original values from the sum of ``contributors`` quantized ones."""
    levels = (1 << bits) - 1
    sums: Floats = np.array(total, dtype=np.float64)  # the one fresh array: the rest in place
    sums *= 2.0 * bound / levels
    sums -= contributors * bound
    return sums


def encode_update(
    delta: npt.NDArray[np.floating],
    *,
    spec: QuantSpec,
    examples: int,
    rng: Uniforms,
    scalars: Sequence[float] = (),
) -> Ring:
    """The device's ring vector (uint32, each value < 2**b) in the layout of the module."""
    d = np.asarray(delta)
    if d.ndim != 1 or d.size != spec.params:
        raise LengthError(f"delta must be a flat vector of {spec.params} values, got {d.shape}")
    if len(scalars) != len(spec.scalar_bounds):
        raise LengthError(f"expected {len(spec.scalar_bounds)} scalars, got {len(scalars)}")
    if not (np.isfinite(d).all() and all(math.isfinite(s) for s in scalars)):
        raise ParameterError("delta and scalars must be finite")
    if not isinstance(examples, int) or examples < 1:
        raise ParameterError(f"examples must be a positive integer, got {examples!r}")
    count = min(examples, spec.weight_cap)
    out = np.empty(spec.length, dtype=np.uint32)
    norm = _norm(np.asarray(d, dtype=np.float64))
    # One fused affine map: clip to C, weight by count / cap, then [-r, r] -> [0, levels].
    weight = (spec.clip_norm / norm if norm > spec.clip_norm else 1.0) * count / spec.weight_cap
    factor = weight * spec.levels / (2.0 * spec.bound)
    # In chunks: the same values and the same random stream as one pass over the vector
    # (Generator.random draws in order), without three float64 copies of it at once.
    for start in range(0, spec.params, _CHUNK):
        stop = min(start + _CHUNK, spec.params)
        scaled = np.multiply(d[start:stop], factor, dtype=np.float64)
        scaled += spec.levels / 2.0
        rounded = stochastic_round(scaled, rng)
        np.clip(rounded, 0, spec.levels, out=rounded)  # float error at the ends only
        out[start:stop] = rounded
    digits = spec.params + spec.count_digits
    out[spec.params : digits] = [
        (count >> (i * spec.bits)) & spec.levels for i in range(spec.count_digits)
    ]
    for i, (value, bound) in enumerate(zip(scalars, spec.scalar_bounds, strict=True)):
        out[digits + i] = quantize(np.array([value]), bound=bound, bits=spec.bits, rng=rng)[0]
    return out


def decode_update_sum(
    total: npt.NDArray[np.unsignedinteger], *, spec: QuantSpec, contributors: int
) -> AggregatedUpdate:
    """Means and totals from the exact sum of ``contributors`` devices' vectors."""
    t = np.asarray(total)
    if t.ndim != 1 or t.size != spec.length or t.dtype.kind != "u":
        raise LengthError(f"a sum must be {spec.length} unsigned values")
    if contributors < 1 or int(t.max()) > contributors * spec.levels:
        raise ParameterError("the sum exceeds what that many devices can produce")
    digits = spec.params + spec.count_digits
    examples = sum(int(v) << (i * spec.bits) for i, v in enumerate(t[spec.params : digits]))
    if not contributors <= examples <= contributors * spec.weight_cap:
        raise ParameterError(f"example total {examples} impossible for {contributors} devices")
    weight = examples / spec.weight_cap
    weighted = dequantize_sum(
        t[: spec.params], bound=spec.bound, bits=spec.bits, contributors=contributors
    )
    scalars = tuple(
        float(
            dequantize_sum(
                t[digits + i : digits + i + 1], bound=b, bits=spec.bits, contributors=contributors
            )[0]
        )
        / contributors
        for i, b in enumerate(spec.scalar_bounds)
    )
    weighted /= weight  # in place: a fresh array of M floats costs its page faults
    return AggregatedUpdate(
        mean=weighted,
        weight=weight,
        examples=examples,
        scalars=scalars,
        contributors=contributors,
    )
