"""Geometric and Poisson draws from uniform floats alone, by exact methods (no approximations)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from fedrt.protocol.errors import ParameterError
from fedrt.protocol.prg import Uniforms

__all__ = ["fill", "geometric", "poisson", "poisson_log_pmf"]

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# Why uniforms only: device DP noise comes from the AES-256-CTR PRG (``prg.KeyedUniforms``),
# which yields 53-bit uniforms in [0, 1); ``numpy.random.Generator`` has the same ``random``
# method, so simulations can pass theirs. Why exact methods: the DP guarantee is for the
# exact laws. "Exact" up to float64: a 53-bit uniform resolves probabilities to 2^-53 and
# log/exp are within an ulp or two, so a draw is within a total variation of ~1e-15 of its law.

# Outputs per chunk: 64K draws keep every temporary at ~0.5-1 MiB on a device.
CHUNK = 1 << 16
# Every rejection sampler here accepts over 40% of its candidates (the discrete Gaussian
# at small sigma is the worst), so a chunk needs a pass or two; the bound guards against
# a broken generator, not bad luck.
MAX_PASSES = 200
# PTRS is proven for means >= 10 (Hörmann 1993); below, a table inversion.
PTRS_MIN_MEAN = 10.0
# Table inversion covers 0..TABLE-1: for a mean below 10, P(X >= 129) < 1e-80.
TABLE = 129
_LOG_FACTORIALS = np.array([math.lgamma(k + 1.0) for k in range(TABLE)])
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _check(name: str, value: float, size: int) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ParameterError(f"{name} must be finite and >= 0, got {value!r}")
    if not isinstance(size, int) or size < 0:
        raise ParameterError(f"size must be a non-negative integer, got {size!r}")


def fill(size: int, draw: Callable[[int], Ints]) -> Ints:
    """``size`` values from ``draw(n)``, which returns the ACCEPTED values among n
    candidates (in stream order), chunk by chunk with bounded passes per chunk.

    Each batch is sized by the acceptance rate seen so far (+3%), so almost every chunk
    takes one pass and few uniforms are thrown away; the rate is a function of the stream,
    so the same stream still gives the same values."""
    out = np.empty(size, dtype=np.int64)
    filled = 0
    rate = 0.5  # a first guess, about the worst case
    while filled < size:
        end = min(size, filled + CHUNK)
        for _ in range(MAX_PASSES):
            want = end - filled
            n = int(want / rate * 1.03) + 64
            got = draw(n)
            rate = max(got.size / n, 0.1)
            got = got[:want]
            out[filled : filled + got.size] = got
            filled += got.size
            if filled == end:
                break
        else:
            raise ParameterError("rejection sampler did not converge (broken generator?)")
    return out


def _open_uniforms(uniforms: Uniforms, n: int) -> Floats:
    """n uniforms in (0, 1]: 1 - U keeps the 53-bit grid and makes log(U) finite."""
    u = uniforms.random(n)
    np.subtract(1.0, u, out=u)
    return u


def geometric(scale: float, size: int, uniforms: Uniforms) -> Ints:
    """``size`` draws of G >= 0 with P(G >= g) = exp(-g / scale): the failures before the
    first success of trials that succeed with probability 1 - exp(-1 / scale). By
    inversion, floor(-scale * log U) with U in (0, 1]."""
    _check("scale", scale, size)
    out = np.zeros(size, dtype=np.int64)
    if scale == 0:
        return out
    for start in range(0, size, CHUNK):  # no rejection: one uniform per draw
        g = np.log(_open_uniforms(uniforms, min(CHUNK, size - start)))
        g *= -scale
        out[start : start + g.size] = np.floor(g)
    return out


def poisson_log_pmf(k: npt.NDArray[np.integer], mean: float) -> Floats:
    """log P(X = k) for X ~ Poisson(mean > 0), to ~1e-13 absolute for means up to ~1e9.

    Below ``TABLE``: k log(mean) - mean - log k! from exact log-factorials. Above, with
    Stirling's series for log k!, the two large terms combine into -mean * h((k - mean) /
    mean), h(x) = (1 + x) log1p(x) - x, which cancels only at the scale of k - mean.
    """
    kk = np.asarray(k, dtype=np.int64)
    out = np.empty(kk.shape, dtype=np.float64)
    small = kk < TABLE
    ks = kk[small]
    out[small] = ks * math.log(mean) - mean - _LOG_FACTORIALS[ks]
    kf = kk[~small].astype(np.float64)
    x = (kf - mean) / mean
    # Near the mode the two terms of h agree to |x| and log1p's last-ulp error would be
    # multiplied by the mean: sum h's series instead (x^n / (n (n - 1)), alternating;
    # the first term left out is below 1e-20 of h for |x| < 0.01).
    near = np.abs(x) < 0.01
    h = np.zeros_like(x)
    for n in range(10, 1, -1):  # Horner, from the x^10 term down
        h *= x
        h += (-1.0) ** n / (n * (n - 1))
    h *= x * x
    xf = x[~near]
    h[~near] = (1.0 + xf) * np.log1p(xf) - xf
    inv = 1.0 / kf
    inv2 = inv * inv
    # Stirling's correction to k log k - k + log(2 pi k) / 2; the next term, 1/(1680 k^7),
    # is below 1e-18 at k >= 129.
    corr = inv * (1.0 / 12 - inv2 * (1.0 / 360 - inv2 / 1260))
    out[~small] = -mean * h - 0.5 * np.log(kf) - _HALF_LOG_2PI - corr
    return out


def _poisson_inversion(mean: float, size: int, uniforms: Uniforms) -> Ints:
    ks = np.arange(TABLE)
    cdf = np.minimum(np.cumsum(np.exp(poisson_log_pmf(ks, mean))), 1.0)
    cdf[-1] = 1.0  # the mass past the table (< 1e-80) goes to its last entry

    def draw(n: int) -> Ints:
        # side="right": cdf[k - 1] <= U < cdf[k] picks k with probability pmf(k).
        return np.searchsorted(cdf, uniforms.random(n), side="right").astype(np.int64)

    return fill(size, draw)


def _poisson_ptrs(mean: float, size: int, uniforms: Uniforms) -> Ints:
    # Hörmann's constants for the hat (the paper's Table 1 / algorithm PTRS).
    b = 0.931 + 2.53 * math.sqrt(mean)
    a = -0.059 + 0.02483 * b
    log_inv_alpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    v_r = 0.9277 - 3.6224 / (b - 2.0)

    def draw(n: int) -> Ints:
        u = uniforms.random(n) - 0.5
        v = _open_uniforms(uniforms, n)
        us = 0.5 - np.abs(u)
        # u = -0.5 exactly (probability 2^-53) is a point the continuous method never
        # draws: reject it rather than divide by zero.
        valid = us > 0
        us[~valid] = 0.5
        k = np.floor((2.0 * a / us + b) * u + mean + 0.43)
        accept = (us >= 0.07) & (v <= v_r)  # the squeeze: inside the pmf for sure
        slow = valid & ~accept & (k >= 0) & ~((us < 0.013) & (v > us))
        ki = k[slow].astype(np.int64)
        uss = us[slow]
        lhs = np.log(v[slow] / (a / (uss * uss) + b)) + log_inv_alpha
        accept[slow] = lhs <= poisson_log_pmf(ki, mean)
        accepted: Ints = k[accept & valid].astype(np.int64)
        return accepted

    return fill(size, draw)


def poisson(mean: float, size: int, uniforms: Uniforms) -> Ints:
    """``size`` draws of Poisson(``mean``), exactly (no normal approximation): inversion of
    its CDF table below a mean of 10, Hörmann's PTRS transformed rejection above (W. Hörmann
    1993, "The transformed rejection method for generating Poisson random variables"),
    which accepts 75-90% of its candidates."""
    _check("mean", mean, size)
    if mean == 0 or size == 0:
        return np.zeros(size, dtype=np.int64)
    if mean < PTRS_MIN_MEAN:
        return _poisson_inversion(mean, size, uniforms)
    return _poisson_ptrs(mean, size, uniforms)
