"""DP noise: sampler distributions, per-device calibration under dropouts, ring headroom."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedrt.protocol import dp, integer_draws, quantize
from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.prg import KeyedUniforms
from tests.protocol.goodness_of_fit import chi_square_p

KAT = Path(__file__).parent / "data" / "dp_noise_kat.json"


def _keyed(label: str) -> KeyedUniforms:
    """What a device draws its noise from: the AES-CTR PRG under a 256-bit key."""
    return KeyedUniforms(hashlib.sha256(label.encode()).digest())


def _discrete_gaussian_pmf(sigma: float, support: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    half = int(40 * sigma) + 10
    xs = np.arange(-half, half + 1)
    w = np.exp(-(xs.astype(np.float64) ** 2) / (2 * sigma * sigma))
    w /= w.sum()
    return np.asarray(w[support + half], dtype=np.float64)


@pytest.mark.parametrize("sigma", [0.5, 2.0, 7.5, 1000.0])
def test_discrete_gaussian_fits_its_pmf(sigma: float) -> None:
    x = dp.discrete_gaussian(sigma, 200_000, _keyed(f"discrete gaussian {sigma}"))
    assert x.dtype == np.int64
    half = int(8 * sigma) + 3
    support = np.arange(-half, half + 1)
    pmf = _discrete_gaussian_pmf(sigma, support)
    var = float((pmf * support.astype(np.float64) ** 2).sum())
    assert abs(x.mean()) < 5 * math.sqrt(var / x.size)
    # Var of a sample variance is ~2 var^2 / n for a near-Gaussian: 5 of its std.
    assert abs(x.var() - var) < 5 * var * math.sqrt(2 / x.size)
    assert chi_square_p(x, pmf, -half, width=max(1, int(sigma / 8))) > 1e-4


def test_discrete_gaussian_is_far_from_a_wrong_sigma() -> None:
    """The goodness-of-fit test can fail: 5% too much spread is rejected."""
    x = dp.discrete_gaussian(2.1, 200_000, _keyed("wrong sigma"))
    support = np.arange(-20, 21)
    assert chi_square_p(x, _discrete_gaussian_pmf(2.0, support), -20) < 1e-6


@pytest.mark.parametrize("variance", [0.5, 3.0, 400.0, 1e8])
def test_skellam_has_its_mean_and_variance(variance: float) -> None:
    """Small and large mu = variance / 2 (1e8: PTRS Poissons of mean 5e7); the pmf is
    checked where scipy's Skellam pmf is cheap (the Poissons' at every mean:
    test_integer_draws)."""
    x = dp.skellam(variance, 200_000, _keyed(f"skellam {variance}"))
    assert abs(x.mean()) < 5 * math.sqrt(variance / x.size)
    # Var of a sample variance: (2 var^2 + kurtosis excess var) / n; Skellam's excess
    # kurtosis is 1 / var, so 6 of the Gaussian part's std plus a term for small var.
    assert abs(x.var() - variance) < 6 * variance * math.sqrt(2 / x.size) + 6 * math.sqrt(
        variance / x.size
    )
    if variance <= 400:
        mu = variance / 2
        half = int(8 * math.sqrt(variance)) + 3
        support = np.arange(-half, half + 1)
        pmf = np.asarray(stats.skellam.pmf(support, mu, mu), dtype=np.float64)
        assert chi_square_p(x, pmf, -half) > 1e-4


def test_samplers_use_only_the_given_generator() -> None:
    for draw in (
        lambda g: dp.discrete_gaussian(3.0, 1000, g),
        lambda g: dp.skellam(9.0, 1000, g),
        lambda g: dp.gaussian(3.0, 1000, g),
    ):
        np.testing.assert_array_equal(
            draw(np.random.default_rng(5)), draw(np.random.default_rng(5))
        )
    assert dp.discrete_gaussian(0.0, 4, np.random.default_rng(0)).tolist() == [0, 0, 0, 0]
    assert dp.discrete_gaussian(3.0, 0, np.random.default_rng(0)).size == 0


@pytest.mark.parametrize("kind", ["discrete_gaussian", "skellam"])
def test_device_noise_is_a_function_of_its_key(kind: str) -> None:
    """Same 256-bit key, same noise (a device can rebuild its update); another key, other
    noise; across the sampler's chunks too."""
    size = integer_draws.CHUNK + 100
    if kind == "skellam":
        draw = lambda key: dp.skellam(2e6, size, KeyedUniforms(key))  # noqa: E731
    else:
        draw = lambda key: dp.discrete_gaussian(1500.0, size, KeyedUniforms(key))  # noqa: E731
    a = draw(bytes(32))
    np.testing.assert_array_equal(a, draw(bytes(32)))
    b = draw(bytes(31) + b"\x01")
    assert np.mean(a == b) < 0.01  # independent draws of std ~1500 rarely coincide
    assert np.corrcoef(a, b)[0, 1] < 0.05


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(31), bytes(33), bytes(64)])
def test_the_noise_source_refuses_keys_that_are_not_256_bits(key: bytes) -> None:
    with pytest.raises(ParameterError, match="32 bytes"):
        dp.discrete_gaussian(3.0, 10, KeyedUniforms(key))


def test_known_answers() -> None:
    """A fixed key's first draws of every sampler: a change of a sampler (or of how it
    consumes the stream) must be deliberate, and regenerate tests/protocol/data."""
    doc = json.loads(KAT.read_text(encoding="utf-8"))
    assert doc["format"] == "fedrt-dp-noise-kat/1"
    samplers = {
        "discrete_gaussian": dp.discrete_gaussian,
        "skellam": dp.skellam,
        "poisson": integer_draws.poisson,
        "geometric": integer_draws.geometric,
    }
    assert {case["sampler"] for case in doc["cases"]} == set(samplers)
    for case in doc["cases"]:
        draw = samplers[case["sampler"]]
        want = case["draws"]
        got = draw(case["param"], len(want), KeyedUniforms(bytes.fromhex(doc["key"])))
        assert got.tolist() == want, case


def test_gaussian_has_the_configured_std() -> None:
    x = dp.gaussian(2.5, 100_000, np.random.default_rng(3))
    assert abs(x.std() - 2.5) < 2.5 * 5 / math.sqrt(2 * x.size)
    assert abs(x.mean()) < 5 * 2.5 / math.sqrt(x.size)


@pytest.mark.parametrize("kind", ["discrete_gaussian", "skellam"])
def test_sum_over_surviving_devices_has_at_least_the_target_std(kind: str) -> None:
    """Devices add std target / sqrt(t); any s >= t survivors give target * sqrt(s / t)."""
    target, threshold, devices, runs = 30.0, 40, 64, 8000
    s = dp.device_noise_std(target, threshold)
    rng = np.random.default_rng(11)
    if kind == "skellam":
        noise = dp.skellam(s * s, runs * devices, rng)
    else:
        noise = dp.discrete_gaussian(s, runs * devices, rng)
    per_run = noise.reshape(runs, devices)
    for survivors in (threshold, devices):
        sums = per_run[:, :survivors].sum(axis=1)
        expected = dp.sum_noise_std(s, survivors)
        assert expected == pytest.approx(target * math.sqrt(survivors / threshold))
        assert abs(sums.std() - expected) < expected * 5 / math.sqrt(2 * runs)
        assert abs(sums.mean()) < 5 * expected / math.sqrt(runs)
        # The sum of discrete Gaussians is near-Gaussian: its sd quantiles match N(0, sd^2).
        assert stats.kstest(sums / expected, "norm").pvalue > 1e-4


def test_noisy_sums_read_back_exactly_from_the_ring() -> None:
    """Devices quantize near the bottom of the range, so noise pushes sums below zero:
    centred decoding of the modular sum gives back the exact signed integer sum."""
    bits, n, dim, threshold = 6, 12, 500, 8
    rng = np.random.default_rng(2)
    noise = dp.distributed_noise(
        noise_multiplier=0.5,
        clip_norm=1.0,
        bound=1.0,
        bits=bits,
        coordinates=dim,
        clients=n,
        threshold=threshold,
    )
    ring = noise.ring
    assert ring.headroom_bits > 0
    vectors = [
        quantize.quantize(np.full(dim, -0.99), bound=1.0, bits=bits, rng=rng) for _ in range(n)
    ]
    draws = [dp.discrete_gaussian(noise.device_std, dim, rng) for _ in range(n)]
    total = np.zeros(dim, dtype=np.uint64)
    for v, z in zip(vectors, draws, strict=True):
        total = (total + dp.add_noise_mod(v, z, ring)) & np.uint64((1 << ring.bits) - 1)
    exact = np.sum([v.astype(np.int64) for v in vectors], axis=0) + np.sum(draws, axis=0)
    assert int(exact.min()) < 0  # the test exercises wrapped negatives
    centered = dp.centered_sum(total, ring)
    np.testing.assert_array_equal(centered, exact)
    floats = dp.dequantize_centered(centered, bound=1.0, bits=bits, contributors=n)
    # Noise of std float_sum_std * sqrt(n / t) on a sum of n values near -0.99.
    spread = noise.float_sum_std * math.sqrt(n / threshold)
    assert abs(float(floats.mean()) + 0.99 * n) < 5 * spread / math.sqrt(dim) + 0.1


@settings(deadline=None, max_examples=60)
@given(
    st.integers(1, 24),
    st.integers(1, 2000),
    st.floats(0, 1e6, allow_nan=False),
    st.integers(1, 1 << 20),
    st.booleans(),
)
def test_noisy_ring_separates_positive_and_negative_sums(
    bits: int, clients: int, sum_std: float, coords: int, sk: bool
) -> None:
    ring = dp.noisy_ring(bits, clients, sum_std=sum_std, coordinates=coords, skellam_noise=sk)
    assert ring.max_sum + 2 * ring.noise_bound < 1 << ring.bits
    assert ring.bits == quantize.ring_bits(bits, clients) + ring.headroom_bits
    assert ring.headroom_bits >= 0
    if sum_std == 0:
        assert ring.headroom_bits == 0


def test_noise_bound_is_a_union_tail_bound() -> None:
    h = dp.noise_bound(10.0, 1000, failure_prob=1e-9)
    assert h == math.ceil(10.0 * math.sqrt(2 * math.log(2 * 1000 / 1e-9)))
    assert dp.noise_bound(10.0, 1000, skellam_noise=True, failure_prob=1e-9) > h
    x = dp.discrete_gaussian(10.0, 500_000, np.random.default_rng(4))
    assert int(np.abs(x).max()) <= dp.noise_bound(10.0, 500_000, failure_prob=1e-3)


def test_rounded_norm_bound_holds_with_probability_beta() -> None:
    dim, c, beta = 256, 20.0, math.exp(-0.5)
    bound = dp.rounded_norm_bound(c, dim, beta)
    assert c < bound < c + math.sqrt(dim)
    rng = np.random.default_rng(9)
    x = rng.normal(size=dim)
    x *= c / np.linalg.norm(x)
    norms = [np.linalg.norm(quantize.stochastic_round(x.copy(), rng)) for _ in range(2000)]
    assert np.mean(np.array(norms) > bound) <= beta


def test_invalid_arguments_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ParameterError):
        dp.discrete_gaussian(-1.0, 3, rng)
    with pytest.raises(ParameterError):
        dp.discrete_gaussian(math.nan, 3, rng)
    with pytest.raises(ParameterError):
        dp.skellam(1.0, -1, rng)
    with pytest.raises(ParameterError):
        dp.device_noise_std(1.0, 0)
    with pytest.raises(ParameterError):
        dp.noise_bound(1.0, 0)
    with pytest.raises(ParameterError):
        dp.distributed_noise(
            noise_multiplier=1.0, clip_norm=1.0, bound=1.0, bits=8, coordinates=4,
            clients=5, threshold=6,
        )  # fmt: skip
    ring = dp.noisy_ring(8, 4, sum_std=3.0, coordinates=4)
    with pytest.raises(LengthError):
        dp.add_noise_mod(np.zeros(3, np.uint32), np.zeros(4, np.int64), ring)
    with pytest.raises(LengthError):
        dp.centered_sum(np.array([1 << ring.bits], dtype=np.uint64), ring)
