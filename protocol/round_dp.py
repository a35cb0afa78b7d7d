"""Differential privacy on a round's update vector: device noise before masking, the clip bit.

With a ``DpSpec`` in the plan's ``UpdateSpec``, a device's SecAgg+ input is its usual
``round_update.encode`` vector (rotated, clipped, stochastically rounded; weight cap 1
under DP) with three changes, all before masking:

* the rounding is redone until the rounded parameters lie within ``rounded_norm`` of the
  middle level (Kairouz et al. 2021, conditional randomized rounding): that bound is the
  sensitivity the noise is calibrated to;
* one more coordinate, 1 if the update was within the clip bound (adaptive clipping,
  Andrew et al. 2021) -- the server learns only how many were;
* integer noise (discrete Gaussian or Skellam) on the parameters and on that bit, of the
  per-device std that makes the sum over ANY ``threshold`` survivors carry the target
  noise (``protocol.dp``), the result taken mod 2^``ring_bits``.

The ring has headroom bits for the noise, so the server reads the sum back centred
(``decode_sum``): the coordinator only ever sees the noisy sum.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from fedrt.protocol import dp, rotation, round_update
from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.prg import Uniforms
from fedrt.protocol.round_plan import DpSpec, UpdateSpec

__all__ = [
    "calibrate",
    "decode_sum",
    "device_vector",
    "float_sum_std",
    "secure_length",
    "secure_ring_bits",
]

Floats = npt.NDArray[np.float64]
Words = npt.NDArray[np.uint64]
# Re-rounding succeeds with probability >= 1 - exp(-1/2) ~ 0.39 per try (``dp.rounded_norm_
# bound``'s beta); 100 tries fail with probability below 1e-21.
_MAX_ROUNDINGS = 100


def secure_length(spec: UpdateSpec) -> int:
    """Ring elements of a device's SecAgg+ input (the update, plus the clip bit if sent)."""
    extra = 1 if spec.dp is not None and spec.dp.unclipped_bit else 0
    return round_update.vector_length(spec) + extra


def secure_ring_bits(spec: UpdateSpec, n_devices: int) -> int:
    """Bits of the SecAgg+ ring: fixed by the plan when noise needs headroom."""
    if spec.dp is not None and spec.dp.ring_bits:
        return spec.dp.ring_bits
    return round_update.ring_bits(spec, n_devices)


def calibrate(
    spec: UpdateSpec,
    *,
    noise_multiplier: float,
    clients: int,
    threshold: int,
    skellam: bool = False,
    unclipped_bit: bool = False,
    bit_sum_std: float = 0.0,
    failure_prob: float = dp.DEFAULT_FAILURE_PROB,
) -> UpdateSpec:
    """``spec`` with the ``DpSpec`` that puts ``noise_multiplier`` times the sensitivity of
    one rounded clipped update on the sum over ``threshold`` or more of ``clients`` devices
    (and ``bit_sum_std`` on the count of unclipped ones), in a ring that holds every sum."""
    qs = round_update.quant_spec(spec)
    if noise_multiplier == 0:
        return replace(spec, dp=DpSpec(unclipped_bit=unclipped_bit))
    coords = qs.params + (1 if unclipped_bit else 0)
    noise = dp.distributed_noise(
        noise_multiplier=noise_multiplier,
        clip_norm=spec.clip_norm,
        bound=qs.bound,
        bits=spec.bits,
        coordinates=coords,
        clients=clients,
        threshold=threshold,
        skellam_noise=skellam,
        failure_prob=failure_prob,
    )
    bit_std = dp.device_noise_std(bit_sum_std, threshold) if unclipped_bit else 0.0
    ring = noise.ring
    if bit_std > noise.device_std:  # the ring must hold the larger of the two noises
        ring = dp.noisy_ring(
            spec.bits,
            clients,
            sum_std=dp.sum_noise_std(bit_std, clients),
            coordinates=coords,
            skellam_noise=skellam,
            failure_prob=failure_prob,
        )
    return replace(
        spec,
        dp=DpSpec(
            noise_std=noise.device_std,
            skellam=skellam,
            ring_bits=ring.bits,
            noise_bound=ring.noise_bound,
            unclipped_bit=unclipped_bit,
            bit_noise_std=bit_std,
            rounded_norm=noise.sensitivity,
        ),
    )


def _noise(std: float, size: int, skellam: bool, rng: Uniforms) -> npt.NDArray[np.int64]:
    if skellam:
        return dp.skellam(std * std, size, rng)
    return dp.discrete_gaussian(std, size, rng)


def device_vector(
    delta: npt.NDArray[np.floating],
    n_examples: int,
    spec: UpdateSpec,
    rng: Uniforms,
    *,
    noise: Uniforms | None = None,
) -> Words:
    """A device's SecAgg+ input under ``spec.dp`` (see the module docstring): rounded with
    ``rng``, noised from ``noise`` (default: ``rng``). A device passes two
    ``prg.KeyedUniforms`` under separate keys, so its noise does not depend on how many
    roundings the norm bound took and nothing here loads ``numpy.random``."""
    noise = rng if noise is None else noise
    d = spec.dp
    vector = round_update.encode(delta, n_examples, spec, rng)
    if d is None:
        return vector.astype(np.uint64)
    qs = round_update.quant_spec(spec)
    middle = qs.levels / 2.0
    for _ in range(_MAX_ROUNDINGS):
        if not d.rounded_norm:
            break
        centred = vector[: qs.params].astype(np.float64) - middle
        if math.sqrt(float(centred @ centred)) <= d.rounded_norm:
            break
        vector = round_update.encode(delta, n_examples, spec, rng)
    else:
        raise ParameterError("no rounding within the norm bound (bound too tight?)")
    out = vector.astype(np.int64)
    if d.unclipped_bit:
        norm = float(np.linalg.norm(np.asarray(delta, dtype=np.float64)))
        out = np.append(out, np.int64(norm <= spec.clip_norm))
    if d.noise_std:
        out[: qs.params] += _noise(d.noise_std, qs.params, d.skellam, noise)
    if d.unclipped_bit and d.bit_noise_std:
        out[-1] += _noise(d.bit_noise_std, 1, d.skellam, noise)[0]
    bits = secure_ring_bits(spec, 1)
    if bits < 64:
        out &= np.int64((1 << bits) - 1)  # two's complement: the residue mod 2^bits
    words: Words = out.astype(np.uint64)
    return words


def decode_sum(
    total: npt.NDArray[np.unsignedinteger], spec: UpdateSpec, n_devices: int
) -> tuple[Floats, float, float | None]:
    """(mean delta, summed weight, summed clip bits or None) from the SecAgg+ sum of
    ``n_devices`` inputs made by ``device_vector``; noisy sums are read back centred."""
    d = spec.dp
    t = np.asarray(total)
    if t.ndim != 1 or t.size != secure_length(spec) or t.dtype.kind != "u":
        raise LengthError(f"a sum must be {secure_length(spec)} unsigned values")
    bits_total: float | None = None
    if d is not None and d.unclipped_bit:
        t, last = t[:-1], t[-1:]
        bits_total = float(last[0])
    if d is None or not d.ring_bits:
        mean, weight = round_update.decode_sum(t, spec, n_devices)
        return mean, weight, bits_total
    qs = round_update.quant_spec(spec)
    ring = dp.NoisyRing(
        bits=d.ring_bits,
        max_sum=n_devices * qs.levels,
        noise_bound=d.noise_bound,
        headroom_bits=0,
    )
    if d.unclipped_bit:
        bits_total = float(dp.centered_sum(np.asarray(total)[-1:], ring)[0])
    digits = t[qs.params : qs.params + qs.count_digits]
    examples = sum(int(v) << (i * qs.bits) for i, v in enumerate(digits))
    if not n_devices <= examples <= n_devices * qs.weight_cap:
        raise ParameterError(f"example total {examples} impossible for {n_devices} devices")
    weight = examples / qs.weight_cap
    sums = dp.dequantize_centered(
        dp.centered_sum(t[: qs.params], ring), bound=qs.bound, bits=qs.bits, contributors=n_devices
    )
    mean = sums / weight
    if spec.rotation_seed:
        mean = rotation.unrotate(mean, spec.rotation_seed, spec.params)
    return mean, weight, bits_total


def float_sum_std(spec: UpdateSpec, n_devices: int) -> float:
    """Std of the noise the decoded float SUM of ``n_devices`` updates carries (0: none)."""
    if spec.dp is None or not spec.dp.noise_std:
        return 0.0
    qs = round_update.quant_spec(spec)
    step = 2.0 * qs.bound / qs.levels
    return dp.sum_noise_std(spec.dp.noise_std, n_devices) * step
