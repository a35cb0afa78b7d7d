"""Geometric and Poisson draws from uniforms: exact laws, accurate log-pmf, bounded loops."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from scipy import stats

from fedrt.protocol import integer_draws
from fedrt.protocol.errors import ParameterError
from fedrt.protocol.prg import KeyedUniforms
from tests.protocol.goodness_of_fit import chi_square_p

N = 200_000


def _keyed(label: str) -> KeyedUniforms:
    return KeyedUniforms(hashlib.sha256(label.encode()).digest())


@pytest.mark.parametrize("scale", [0.5, 3.0, 1000.0])
def test_geometric_fits_its_pmf(scale: float) -> None:
    g = integer_draws.geometric(scale, N, _keyed(f"geometric {scale}"))
    q = math.exp(-1.0 / scale)
    support = np.arange(int(40 * scale) + 40)
    pmf = (1 - q) * q ** support.astype(np.float64)
    assert int(g.min()) >= 0
    mean, var = q / (1 - q), q / (1 - q) ** 2
    assert abs(g.mean() - mean) < 5 * math.sqrt(var / N)
    assert chi_square_p(g, pmf, 0, width=max(1, int(scale / 8))) > 1e-4


# Both sides of the switch from table inversion to PTRS at 10, and the large means of
# Skellam noise (a variance of 1e8 is a mean of 5e7 per Poisson).
@pytest.mark.parametrize("mean", [0.3, 5.0, 9.99, 10.0, 37.5, 1e4, 5e7])
def test_poisson_fits_its_pmf(mean: float) -> None:
    x = integer_draws.poisson(mean, N, _keyed(f"poisson {mean}"))
    sd = math.sqrt(mean)
    lo = max(0, int(mean - 10 * sd) - 5)
    support = np.arange(lo, int(mean + 10 * sd) + 30)
    pmf = np.asarray(stats.poisson.pmf(support, mean), dtype=np.float64)
    assert abs(x.mean() - mean) < 5 * sd / math.sqrt(N)
    assert abs(x.var() - mean) < 6 * mean * math.sqrt(2 / N) + 6 * math.sqrt(mean / N)
    assert chi_square_p(x, pmf, lo, width=max(1, int(sd / 8))) > 1e-4


def test_the_fit_test_would_notice_a_normal_approximation() -> None:
    """Poisson(40) draws against the rounded normal of the same mean and variance: refused,
    so the exact-law tests above can fail."""
    mean = 40.0
    x = integer_draws.poisson(mean, N, _keyed("normal approximation"))
    support = np.arange(0, 120)
    cdf = stats.norm.cdf(support + 0.5, mean, math.sqrt(mean))
    rounded_normal = np.diff(np.append(0.0, cdf))
    assert chi_square_p(x, rounded_normal, 0) < 1e-6


@pytest.mark.parametrize("mean", [0.7, 10.0, 150.0, 1e4, 5e7, 1e9])
def test_poisson_log_pmf_is_consistent_and_normalised(mean: float) -> None:
    """Consecutive ratios are exactly mean / (k + 1) and the pmf sums to 1, across the
    switch from log-factorials to Stirling at k = TABLE (no reference needs high precision)."""
    sd = math.sqrt(mean)
    lo = max(0, int(mean - 12 * sd))
    ks = np.arange(lo, int(mean + 12 * sd) + 60)
    logp = integer_draws.poisson_log_pmf(ks, mean)
    step = np.diff(logp) - (math.log(mean) - np.log(ks[1:].astype(np.float64)))
    # The terms of each difference are ~|log p| in size; ~1e-13 absolute near the mode.
    assert float(np.max(np.abs(step) / np.maximum(1.0, np.abs(logp[1:]) * 1e-2))) < 1e-11
    assert math.fsum(np.exp(logp)) == pytest.approx(1.0, abs=1e-12)
    if mean <= 1e4:  # where scipy's direct formula is itself accurate
        ref = stats.poisson.logpmf(ks, mean)
        near = ref > -30
        np.testing.assert_allclose(logp[near], ref[near], rtol=0, atol=1e-10)


def test_same_key_same_draws_across_chunks() -> None:
    size = integer_draws.CHUNK + 17
    for draw in (
        lambda u: integer_draws.poisson(3.0, size, u),
        lambda u: integer_draws.poisson(1e6, size, u),
        lambda u: integer_draws.geometric(2.0, size, u),
    ):
        a, b = draw(_keyed("a")), draw(_keyed("a"))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, draw(_keyed("b")))
    assert integer_draws.poisson(0.0, 3, _keyed("a")).tolist() == [0, 0, 0]
    assert integer_draws.geometric(0.0, 2, _keyed("a")).tolist() == [0, 0]
    assert integer_draws.poisson(5.0, 0, _keyed("a")).size == 0


class _Stuck:
    """A broken generator: always the same value, so PTRS never accepts."""

    def random(self, size: int, /) -> np.ndarray:
        return np.full(size, 0.999)


def test_a_broken_generator_ends_in_an_error_not_a_hang() -> None:
    with pytest.raises(ParameterError, match="converge"):
        integer_draws.poisson(1e4, 10, _Stuck())


@pytest.mark.parametrize(
    "call",
    [
        lambda u: integer_draws.poisson(-1.0, 3, u),
        lambda u: integer_draws.poisson(math.nan, 3, u),
        lambda u: integer_draws.poisson(math.inf, 3, u),
        lambda u: integer_draws.poisson(1.0, -1, u),
        lambda u: integer_draws.geometric(-0.5, 3, u),
        lambda u: integer_draws.geometric(1.0, 2.5, u),
    ],
)
def test_invalid_arguments_are_refused(call: object) -> None:
    with pytest.raises(ParameterError):
        call(_keyed("x"))  # type: ignore[operator]
