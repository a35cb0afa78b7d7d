"""Differential-privacy noise: samplers, per-device calibration and the ring headroom it needs.

Central DP adds ``gaussian`` noise of std z * C to the SUM of clipped updates on the trusted
coordinator. Distributed DP (Kairouz et al. 2021, "The Distributed Discrete Gaussian
Mechanism"; Agarwal et al. 2021, "The Skellam Mechanism") has every device add integer
noise to its quantized vector before masking, so the coordinator only ever sees the noisy
sum. Each device adds variance sigma^2 / t, t the SecAgg+ threshold: at least t devices
survive any round that unmasks, so the sum carries at least sigma^2 however many drop
(``device_noise_std``). The noise is signed and the ring unsigned: the sum is read back
centred (``centered_sum``) from a ring with ``headroom_bits`` more bits than a noise-free
sum needs, sized so that no coordinate wraps except with probability ``failure_prob``.

The integer samplers need only uniforms (``prg.Uniforms``): a device passes the AES-256-CTR
``prg.KeyedUniforms`` under a per-round key, so its noise is as unpredictable as its masks
and never loads ``numpy.random``; simulations may pass a ``numpy.random.Generator``. The
central ``gaussian`` takes the coordinator's Generator. Nothing here touches global state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.integer_draws import fill, geometric, poisson
from fedrt.protocol.prg import Uniforms
from fedrt.protocol.quantize import ring_bits

__all__ = [
    "DEFAULT_FAILURE_PROB",
    "DistributedNoise",
    "NoisyRing",
    "add_noise_mod",
    "centered_sum",
    "dequantize_centered",
    "device_noise_std",
    "discrete_gaussian",
    "distributed_noise",
    "gaussian",
    "noise_bound",
    "noisy_ring",
    "rounded_norm_bound",
    "skellam",
    "sum_noise_std",
]

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# Chance that ANY coordinate of a round's sum wraps around the ring: 2^-40 per round is
# far below every other failure (device crashes, network) the round already tolerates.
DEFAULT_FAILURE_PROB = 2.0**-40


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 0:
        raise ParameterError(f"size must be a non-negative integer, got {size!r}")


def _check_std(name: str, value: float, *, allow_zero: bool = True) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ParameterError(f"{name} must be finite and {'>=' if allow_zero else '>'} 0")


def gaussian(sigma: float, size: int, rng: np.random.Generator) -> Floats:
    """Continuous N(0, sigma^2) noise (central DP, added to the float aggregate)."""
    _check_std("sigma", sigma)
    _check_size(size)
    return rng.standard_normal(size) * sigma


def discrete_gaussian(sigma: float, size: int, rng: Uniforms) -> Ints:
    """``size`` draws of the discrete Gaussian N_Z(0, sigma^2): P(x) ∝ exp(-x^2 / 2 sigma^2).

    Canonne, Kamath & Steinke 2020, Algorithm 3, vectorized: a discrete Laplace candidate
    Y of scale t = floor(sigma) + 1 (the difference of two geometric draws) is kept with
    probability exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2)), which is over half the time for
    every sigma (their Prop. 5). The acceptance test is evaluated in float64 rather than
    with the paper's exact rational Bernoulli: the distribution is then exact up to a total
    variation of ~1e-15 per draw (``integer_draws``), which no DP guarantee here can
    resolve, and a million coordinates take a fraction of a second instead of minutes.
    """
    _check_std("sigma", sigma)
    _check_size(size)
    if sigma == 0 or size == 0:
        return np.zeros(size, dtype=np.int64)
    t = float(math.floor(sigma) + 1)
    var2 = 2.0 * sigma * sigma
    shift = sigma * sigma / t

    def draw(n: int) -> Ints:
        y = geometric(t, n, rng)
        y -= geometric(t, n, rng)
        d = np.abs(y) - shift
        kept: Ints = y[rng.random(n) < np.exp(-(d * d) / var2)]
        return kept

    return fill(size, draw)


def skellam(variance: float, size: int, rng: Uniforms) -> Ints:
    """``size`` draws of the symmetric Skellam with the given variance: Poisson(mu) - Poisson(mu)
    with mu = variance / 2, each Poisson drawn exactly (``integer_draws.poisson``). Sums of
    Skellams are Skellam, so the SUM over devices has exactly the distribution the accountant
    assumes (Agarwal et al. 2021)."""
    _check_std("variance", variance)
    _check_size(size)
    mu = variance / 2.0
    diff = poisson(mu, size, rng)
    diff -= poisson(mu, size, rng)
    return diff


def device_noise_std(target_std: float, threshold: int) -> float:
    """Per-device noise std so the sum over ANY ``threshold`` or more devices has at least
    ``target_std``: variances add, and a round that unmasks has >= threshold survivors."""
    _check_std("target_std", target_std)
    if not isinstance(threshold, int) or threshold < 1:
        raise ParameterError(f"threshold must be a positive integer, got {threshold!r}")
    return target_std / math.sqrt(threshold)


def sum_noise_std(device_std: float, contributors: int) -> float:
    """The std of the sum of ``contributors`` devices' independent noise (what a round got)."""
    _check_std("device_std", device_std)
    if contributors < 0:
        raise ParameterError("contributors must be >= 0")
    return device_std * math.sqrt(contributors)


def rounded_norm_bound(scaled_norm: float, dim: int, beta: float = math.exp(-0.5)) -> float:
    """L2 norm bound of a stochastically rounded vector of norm ``scaled_norm`` in ``dim``
    coordinates, the sensitivity the integer noise must be calibrated to.

    Kairouz et al. 2021, Theorem 1 ("conditional randomized rounding"): the device re-rounds
    until the rounded norm is at most this bound, which happens with probability >= 1 - beta
    per try; without that retry the worst case is ``scaled_norm + sqrt(dim)``.
    """
    _check_std("scaled_norm", scaled_norm)
    if dim < 1 or not 0 < beta < 1:
        raise ParameterError("need dim >= 1 and beta in (0, 1)")
    c, d = scaled_norm, float(dim)
    tight = c * c + d / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (c + math.sqrt(d) / 2.0)
    return math.sqrt(min((c + math.sqrt(d)) ** 2, tight))


def noise_bound(
    sum_std: float,
    coordinates: int,
    *,
    skellam_noise: bool = False,
    failure_prob: float = DEFAULT_FAILURE_PROB,
) -> int:
    """h such that every coordinate of the summed noise lies in [-h, h] except with
    probability ``failure_prob`` (union bound over ``coordinates``).

    Discrete Gaussians (and their sums) are sigma-sub-Gaussian (Canonne et al. 2020, Prop.
    19): P(|X| > x) <= 2 exp(-x^2 / 2 sigma^2). Skellam is only sub-exponential: Bernstein's
    bound P(|X| > x) <= 2 exp(-x^2 / (2 (v + x / 3))) for Poisson differences.
    """
    _check_std("sum_std", sum_std)
    if coordinates < 1 or not 0 < failure_prob < 1:
        raise ParameterError("need coordinates >= 1 and failure_prob in (0, 1)")
    if sum_std == 0:
        return 0
    log_term = math.log(2.0 * coordinates / failure_prob)
    if skellam_noise:
        a = log_term / 3.0
        x = a + math.sqrt(a * a + 2.0 * sum_std * sum_std * log_term)
    else:
        x = sum_std * math.sqrt(2.0 * log_term)
    return math.ceil(x)


@dataclass(frozen=True, slots=True, kw_only=True)
class NoisyRing:
    """The ring a noisy sum of ``clients`` b-bit vectors is computed in, and how to read it."""

    bits: int  # k: the modulus is 2^k
    max_sum: int  # n * (2^b - 1): the largest noise-free sum of a coordinate
    noise_bound: int  # h: the noise of the sum lies in [-h, h] (w.h.p.)
    headroom_bits: int  # k minus the bits a noise-free sum needs (``quantize.ring_bits``)


def noisy_ring(
    bits: int,
    clients: int,
    *,
    sum_std: float,
    coordinates: int,
    skellam_noise: bool = False,
    failure_prob: float = DEFAULT_FAILURE_PROB,
) -> NoisyRing:
    """The smallest ring in which a noisy sum does not wrap: it must hold [-h, n L + h]."""
    base = ring_bits(bits, clients)
    max_sum = clients * ((1 << bits) - 1)
    h = noise_bound(sum_std, coordinates, skellam_noise=skellam_noise, failure_prob=failure_prob)
    k = max(base, (max_sum + 2 * h).bit_length())  # 2^k > max_sum + 2h: every value distinct
    if k > 62:
        raise ParameterError(f"a {k}-bit ring does not fit the int64 arithmetic used here")
    return NoisyRing(bits=k, max_sum=max_sum, noise_bound=h, headroom_bits=k - base)


def add_noise_mod(
    vector: npt.NDArray[np.unsignedinteger], noise: npt.NDArray[np.integer], ring: NoisyRing
) -> npt.NDArray[np.uint64]:
    """``(vector + noise) mod 2^k`` on the first ``noise.size`` coordinates (the parameters;
    count digits and scalars after them stay exact unless the caller noises them too)."""
    v = np.asarray(vector)
    z = np.asarray(noise)
    if v.ndim != 1 or z.ndim != 1 or z.size > v.size:
        raise LengthError(f"noise of {z.shape} does not fit a vector of {v.shape}")
    out = v.astype(np.int64)
    out[: z.size] += z.astype(np.int64)
    mask = np.int64((1 << ring.bits) - 1)
    return np.bitwise_and(out, mask).astype(np.uint64)  # two's complement: mod 2^k


def centered_sum(total: npt.NDArray[np.unsignedinteger], ring: NoisyRing) -> Ints:
    """The signed integer sum from its residue mod 2^k: residues above max_sum + h are the
    negative values -h .. -1 wrapped around (``noisy_ring`` keeps the two ranges apart)."""
    t = np.asarray(total).astype(np.int64)
    if t.ndim != 1 or (t.size and (int(t.min()) < 0 or int(t.max()) >> ring.bits)):
        raise LengthError(f"a sum must be a flat vector of {ring.bits}-bit residues")
    out: Ints = np.where(t > ring.max_sum + ring.noise_bound, t - (1 << ring.bits), t)
    return out


def dequantize_centered(
    centered: npt.NDArray[np.integer], *, bound: float, bits: int, contributors: int
) -> Floats:
    """The float sum of ``contributors`` values quantized over [-bound, bound] (noise
    included, scaled the same way: integer noise std s is float std s * 2 bound / (2^b-1))."""
    levels = (1 << bits) - 1
    sums: Floats = np.asarray(centered, dtype=np.float64) * (2.0 * bound / levels)
    return sums - contributors * bound


@dataclass(frozen=True, slots=True, kw_only=True)
class DistributedNoise:
    """One round's distributed-DP calibration, in ring units unless the name says float."""

    scale: float  # ring units per float unit: (2^b - 1) / (2 bound)
    sensitivity: float  # L2 bound of one device's rounded vector (``rounded_norm_bound``)
    sum_std: float  # noise std of the sum over the worst case (threshold) survivors
    device_std: float  # what each device adds
    ring: NoisyRing
    float_sum_std: float  # sum_std / scale: the std the decoded float SUM carries (at t)


def distributed_noise(
    *,
    noise_multiplier: float,
    clip_norm: float,
    bound: float,
    bits: int,
    coordinates: int,
    clients: int,
    threshold: int,
    skellam_noise: bool = False,
    failure_prob: float = DEFAULT_FAILURE_PROB,
) -> DistributedNoise:
    """Per-device noise so the sum over >= ``threshold`` of ``clients`` devices carries
    ``noise_multiplier`` times the sensitivity of a rounded clipped update, and the ring it
    needs. Quantization to [-bound, bound] over 2^b levels scales a norm-C update to norm
    C * scale; stochastic rounding adds up to the ``rounded_norm_bound`` excess."""
    _check_std("noise_multiplier", noise_multiplier)
    _check_std("clip_norm", clip_norm, allow_zero=False)
    _check_std("bound", bound, allow_zero=False)
    if not 1 <= threshold <= clients:
        raise ParameterError(f"threshold must be in 1..clients, got {threshold} of {clients}")
    scale = float(((1 << bits) - 1) / (2.0 * bound))
    sensitivity = rounded_norm_bound(clip_norm * scale, coordinates)
    sum_std = noise_multiplier * sensitivity
    device_std = device_noise_std(sum_std, threshold)
    # The ring must hold the LARGEST noise a round can see: all clients surviving.
    ring = noisy_ring(
        bits,
        clients,
        sum_std=sum_noise_std(device_std, clients),
        coordinates=coordinates,
        skellam_noise=skellam_noise,
        failure_prob=failure_prob,
    )
    return DistributedNoise(
        scale=scale,
        sensitivity=sensitivity,
        sum_std=sum_std,
        device_std=device_std,
        ring=ring,
        float_sum_std=sum_std / scale,
    )
