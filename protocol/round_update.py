"""A round's update encoding: the plan's ``UpdateSpec`` applied through ``protocol.quantize``.

Under SecAgg+ a device sends ``quantize.encode_update`` (clipped delta pre-multiplied by its
FedAvg weight, plus its capped example count in base-2^b digits) and the server decodes the
sum. With a ``rotation_seed`` the clipped delta is first rotated (``protocol.rotation``) and
each coordinate quantized over [-Z C / sqrt(n), Z C / sqrt(n)] (``ROTATED_SIGMAS`` = Z),
which at 8 bits is the difference between a model that learns and one drowned in rounding
noise; the server rotates the decoded mean back.

A plain update (SecAgg off, robust aggregation) is NOT pre-weighted: the server sees
each delta on its own, so it gets full quantization resolution whatever the device's
weight, and the same count digits follow it. Both are bit-packed to ``bits`` per element.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedrt.protocol import bitpack, quantize, rotation
from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.prg import Uniforms
from fedrt.protocol.round_messages import UpdateSpec

Ring = npt.NDArray[np.uint32]
Floats = npt.NDArray[np.float64]


# Coordinates of a rotated vector of norm C are ~N(0, C^2 / n): clamping at 4 sigma touches
# about one in 16,000 of them, and only when the delta's norm is the full clip bound.
ROTATED_SIGMAS = 4.0


def quant_spec(spec: UpdateSpec) -> quantize.QuantSpec:
    if not spec.rotation_seed:
        return quantize.QuantSpec(
            params=spec.params,
            bits=spec.bits,
            clip_norm=spec.clip_norm,
            weight_cap=spec.weight_cap,
        )
    n = rotation.padded_size(spec.params)
    return quantize.QuantSpec(
        params=n,
        bits=spec.bits,
        clip_norm=spec.clip_norm,
        weight_cap=spec.weight_cap,
        coord_bound=min(spec.clip_norm, ROTATED_SIGMAS * spec.clip_norm / math.sqrt(n)),
    )


def _prepare(delta: npt.NDArray[np.floating], spec: UpdateSpec) -> Floats:
    """The clipped delta, rotated when the spec says so (the vector that gets quantized)."""
    d = np.asarray(delta)
    if d.ndim != 1 or d.shape != (spec.params,) or not np.isfinite(d).all():
        raise LengthError(f"delta must be {spec.params} finite values")
    if not spec.rotation_seed:
        return clip(d, spec.clip_norm)
    # Clipped inside the padded buffer the rotation works in: one float64 vector, not two.
    x = rotation.padded(d)
    quantize.clip_l2_in_place(x[: d.size], spec.clip_norm)
    return rotation.rotate_padded(x, spec.rotation_seed)


def _restore(values: Floats, spec: UpdateSpec) -> Floats:
    if not spec.rotation_seed:
        return values
    return rotation.unrotate(values, spec.rotation_seed, spec.params)


def vector_length(spec: UpdateSpec) -> int:
    return quant_spec(spec).length


def ring_bits(spec: UpdateSpec, n_devices: int) -> int:
    """Bits k of the ring in which a sum of ``n_devices`` vectors cannot overflow."""
    return quantize.ring_bits(spec.bits, n_devices)


def step(spec: UpdateSpec) -> float:
    """One quantization step: the worst-case rounding error of a coordinate."""
    return quant_spec(spec).step


def clip(delta: npt.NDArray[np.floating], clip_norm: float) -> Floats:
    """Scale ``delta`` down to L2 norm ``clip_norm`` (unchanged when already within)."""
    return quantize.clip_l2(delta, clip_norm)


def encode(
    delta: npt.NDArray[np.floating],
    n_examples: int,
    spec: UpdateSpec,
    rng: Uniforms,
    *,
    weighted: bool = True,
) -> Ring:
    """The device's vector of ring elements (each < 2^bits); ``weighted`` for SecAgg+."""
    qs = quant_spec(spec)
    prepared = _prepare(delta, spec)
    if weighted:
        return quantize.encode_update(prepared, spec=qs, examples=n_examples, rng=rng)
    # The weighted encoding validates everything; its count digits are reused as they are.
    out = quantize.encode_update(np.zeros(qs.params), spec=qs, examples=n_examples, rng=rng)
    out[: qs.params] = quantize.quantize(prepared, bound=qs.bound, bits=spec.bits, rng=rng)
    return out


def decode_sum(
    total: npt.NDArray[np.unsignedinteger], spec: UpdateSpec, n_devices: int
) -> tuple[Floats, float]:
    """(weighted mean delta, summed weight) from the exact sum of ``n_devices`` vectors."""
    agg = quantize.decode_update_sum(total, spec=quant_spec(spec), contributors=n_devices)
    return _restore(agg.mean, spec), agg.weight


def decode_one(vector: npt.NDArray[np.unsignedinteger], spec: UpdateSpec) -> tuple[Floats, int]:
    """(clipped delta, capped example count) of ONE unweighted vector (a plain update)."""
    v = np.asarray(vector)
    qs = quant_spec(spec)
    count = _checked_count(v, qs)
    delta = quantize.dequantize_sum(v[: qs.params], bound=qs.bound, bits=spec.bits, contributors=1)
    return _restore(delta, spec), count


def _checked_count(v: npt.NDArray[np.generic], qs: quantize.QuantSpec) -> int:
    """The capped example count of one plain vector, after checking its shape and range."""
    if v.ndim != 1 or v.size != qs.length or v.dtype.kind != "u":
        raise LengthError(f"an update must hold {qs.length} unsigned values")
    if int(v.max(initial=0)) > qs.levels:
        raise ParameterError(f"an update value exceeds {qs.bits} bits")
    digits = v[qs.params : qs.params + qs.count_digits]
    count = sum(int(x) << (i * qs.bits) for i, x in enumerate(digits))
    if not 1 <= count <= qs.weight_cap:
        raise ParameterError(f"example count {count} outside 1..{qs.weight_cap}")
    return count


class PlainSum:
    """A running FedAvg sum of plain updates: memory of ONE update whatever the cohort size.

    Each vector is added where it was quantized (rotated, when the spec rotates): the
    rotation is linear, so the mean is rotated back once in ``mean`` instead of once per
    update. The server's clip is enforced there too, on the norm of the dequantized rotated
    vector, which bounds the norm of the delta it stands for (rotating back is orthonormal
    and drops padding). Per update that is one pass to centre the levels, one dot product,
    one scale and one add, all in two preallocated buffers. The per-update buffer is float32
    (half the memory traffic, which is what these passes cost): centred levels are exact in
    it, scaling rounds at 6e-8 relative, far below a quantization step, and the sum itself
    is float64.
    """

    def __init__(self, spec: UpdateSpec) -> None:
        self.spec = spec
        self._qs = quant_spec(spec)
        self._total: Floats = np.zeros(self._qs.params)
        self._scratch: npt.NDArray[np.float32] = np.empty(self._qs.params, np.float32)
        self.weight = 0.0  # sum of the FedAvg weights min(examples, cap) / cap
        self.count = 0
        # Each update's norm before the clip, for the round's norm-outlier count.
        self.norms: list[float] = []

    def add(self, vector: npt.NDArray[np.unsignedinteger]) -> float:
        """Add one unpacked plain update; its weight. Raises before changing anything."""
        v = np.asarray(vector)
        qs = self._qs
        examples = _checked_count(v, qs)
        x = self._scratch
        # (level - levels / 2) * step is the dequantized coordinate (``dequantize_sum``).
        np.subtract(v[: qs.params], np.float32(qs.levels / 2.0), out=x, dtype=np.float32)
        # einsum, not a BLAS dot: BLAS threads cost milliseconds on small, busy machines.
        norm = qs.step * math.sqrt(float(np.einsum("i,i->", x, x)))
        weight = examples / qs.weight_cap
        clip = qs.clip_norm / norm if norm > qs.clip_norm else 1.0
        np.multiply(x, np.float32(weight * clip * qs.step), out=x)
        np.add(self._total, x, out=self._total)
        self.weight += weight
        self.count += 1
        self.norms.append(norm)
        return weight

    def mean(self) -> Floats:
        """The weighted mean of the clipped deltas added so far (in the model's coordinates)."""
        if self.count == 0:
            raise ParameterError("no update has been added")
        return _restore(self._total / self.weight, self.spec)


def pack(vector: npt.NDArray[np.unsignedinteger], bits: int) -> bytes:
    """Bit-pack a vector of ring elements (wire form of a plain update)."""
    return bitpack.pack(np.asarray(vector), bits)


def unpack(data: bytes, spec: UpdateSpec) -> npt.NDArray[np.unsignedinteger]:
    """A plain update from its wire form; ``LengthError`` unless exactly the right size."""
    return bitpack.unpack(data, spec.bits, vector_length(spec))


__all__ = [
    "PlainSum",
    "clip",
    "decode_one",
    "decode_sum",
    "encode",
    "pack",
    "quant_spec",
    "ring_bits",
    "step",
    "unpack",
    "vector_length",
]
