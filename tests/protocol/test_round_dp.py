"""Device-side DP of update vectors: calibration, bounded contributions, noisy sums read back."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from fedrt.protocol import dp, round_dp, round_update
from fedrt.protocol.errors import LengthError
from fedrt.protocol.prg import KeyedUniforms
from fedrt.protocol.round_codec import decode_from_coordinator, encode_message
from fedrt.protocol.round_errors import MalformedMessage
from fedrt.protocol.round_messages import (
    DpSpec,
    ModelRef,
    Plan,
    RoundKind,
    TrainingConfig,
    UpdateSpec,
)

# 512: a power of two, so the rotation pads nothing and rotating back is exact.
BASE = UpdateSpec(params=512, clip_norm=1.0, bits=8, weight_cap=1, rotation_seed=b"r" * 16)


def _spec(**kw: object) -> UpdateSpec:
    args: dict[str, object] = {"noise_multiplier": 1.0, "clients": 10, "threshold": 6}
    args.update(kw)
    return round_dp.calibrate(BASE, **args)  # type: ignore[arg-type]


def _ring_sum(vectors: list[np.ndarray], spec: UpdateSpec) -> np.ndarray:
    """What SecAgg+ hands the server: the sum mod 2^k (masks cancel)."""
    mask = np.uint64((1 << round_dp.secure_ring_bits(spec, len(vectors))) - 1)
    total = np.zeros(round_dp.secure_length(spec), dtype=np.uint64)
    for v in vectors:
        total = (total + v) & mask
    return total


def test_calibration_puts_the_target_noise_on_the_threshold_sum() -> None:
    spec = _spec(noise_multiplier=1.5)
    d = spec.dp
    assert d is not None
    # Sensitivity: the rounded norm bound of a clipped update in quantization steps.
    assert d.noise_std * math.sqrt(6) == pytest.approx(1.5 * d.rounded_norm)
    qs = round_update.quant_spec(BASE)
    assert d.rounded_norm >= BASE.clip_norm * qs.levels / (2 * qs.bound)
    assert d.ring_bits > round_update.ring_bits(BASE, 10)  # headroom for the noise
    # The ring holds every value of the noisy sum of all 10 with its noise bound.
    assert 10 * qs.levels + 2 * d.noise_bound < 2**d.ring_bits
    assert d.noise_bound >= 6 * d.noise_std * math.sqrt(10)  # >= 6 sigma of the full sum
    only_bit = round_dp.calibrate(BASE, noise_multiplier=0.0, clients=10, threshold=6,
                                  unclipped_bit=True)  # fmt: skip
    assert only_bit.dp == DpSpec(unclipped_bit=True)


def test_plan_carries_the_dp_spec_on_the_wire() -> None:
    plan = Plan(
        msg_id=1,
        task_id="t",
        round_id=2,
        kind=RoundKind.TRAIN,
        model=ModelRef(version=0, sha256="ab" * 32, url="/m"),
        training=TrainingConfig(),
        update=_spec(unclipped_bit=True, bit_sum_std=3.0, skellam=True),
        secagg=None,
        report_within=60.0,
    )
    assert decode_from_coordinator(encode_message(plan)) == plan
    with pytest.raises(MalformedMessage):
        DpSpec(noise_std=1.0)  # noise without a ring to hold it
    with pytest.raises(MalformedMessage):
        DpSpec(noise_std=-1.0, ring_bits=20)


@pytest.mark.parametrize("skellam", [False, True])
def test_summed_noise_has_the_configured_distribution(skellam: bool) -> None:
    """Zero updates: what the decoded sum holds is the devices' noise (plus +-1/2 rounding
    of the middle level), on 512 coordinates x 20 sums."""
    spec = _spec(skellam=skellam)
    d = spec.dp
    assert d is not None
    rng = np.random.default_rng(7)
    step = 2 * round_update.quant_spec(BASE).bound / round_update.quant_spec(BASE).levels
    samples = []
    for n in (6, 8, 10, 6) * 5:  # survivors: the threshold or more
        vectors = [round_dp.device_vector(np.zeros(512), 1, spec, rng) for _ in range(n)]
        mean, weight, bits = round_dp.decode_sum(_ring_sum(vectors, spec), spec, n)
        assert (weight, bits) == (n, None)
        # Back in the quantized (rotated) domain, in units of the expected std.
        rotated = round_update.rotation.rotate(mean * n, spec.rotation_seed)
        expected = math.sqrt(n * (d.noise_std**2 + 0.25)) * step
        samples.append(rotated / expected)
        assert round_dp.float_sum_std(spec, n) >= round_dp.float_sum_std(spec, 6)
    z = np.concatenate(samples)
    assert abs(z.std() - 1.0) < 0.02
    assert abs(z.mean()) < 0.02
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # and not some other spread: 15% off is refused
    assert stats.kstest(z, "norm", args=(0, 1.15)).pvalue < 1e-6


def test_every_contribution_is_clipped_and_rounded_within_the_bound() -> None:
    spec = _spec()
    d = spec.dp
    assert d is not None
    qs = round_update.quant_spec(BASE)
    noiseless = replace(BASE, dp=DpSpec(rounded_norm=d.rounded_norm))
    rng = np.random.default_rng(3)
    for scale in (0.01, 1.0, 1e3):
        delta = rng.normal(size=512) * scale
        v = round_dp.device_vector(delta, 7, noiseless, rng)
        centred = v[: qs.params].astype(np.float64) - qs.levels / 2
        assert np.linalg.norm(centred) <= d.rounded_norm
        mean, weight, _ = round_dp.decode_sum(v, noiseless, 1)
        assert weight == 1.0  # the weight cap of 1: every device counts the same
        assert np.linalg.norm(mean) <= 1.0 + math.sqrt(512) * 2 * qs.bound / qs.levels
        noisy = round_dp.device_vector(delta, 7, spec, rng)
        assert int(noisy.max()) < 2**d.ring_bits


def test_clip_bits_sum_to_the_unclipped_count_with_their_noise() -> None:
    spec = _spec(unclipped_bit=True, bit_sum_std=2.0)
    exact = replace(BASE, dp=DpSpec(unclipped_bit=True))
    rng = np.random.default_rng(11)
    counts = []
    for trial in range(300):
        deltas = [rng.normal(size=512) * (0.01 if i < 5 else 1.0) for i in range(8)]
        vectors = [round_dp.device_vector(x, 1, spec, rng) for x in deltas]
        counts.append(round_dp.decode_sum(_ring_sum(vectors, spec), spec, 8)[2])
        if trial % 20 == 0:
            plain = [round_dp.device_vector(x, 1, exact, rng) for x in deltas]
            assert round_dp.decode_sum(_ring_sum(plain, exact), exact, 8)[2] == 5.0
    c = np.asarray(counts, dtype=np.float64)
    want = 2.0 / math.sqrt(6) * math.sqrt(8)  # per-device share for 6, summed over 8
    assert abs(c.mean() - 5.0) < 4 * want / math.sqrt(300)
    assert abs(c.std() / want - 1.0) < 0.15


def test_without_dp_the_layout_is_unchanged_and_bad_sums_are_refused() -> None:
    assert round_dp.secure_length(BASE) == round_update.vector_length(BASE)
    assert round_dp.secure_ring_bits(BASE, 10) == round_update.ring_bits(BASE, 10)
    spec = _spec()
    with pytest.raises(LengthError):
        round_dp.decode_sum(np.zeros(3, dtype=np.uint64), spec, 2)


@pytest.mark.parametrize("skellam", [False, True])
def test_the_noise_comes_from_its_own_source(skellam: bool) -> None:
    """Rounded from ``rng``, noised from ``noise``: the noisy vector minus the noiseless one
    (same rounding key) is exactly the sampler's draws for the noise key, mod the ring."""
    spec = _spec(skellam=skellam)
    d = spec.dp
    assert d is not None
    noiseless = replace(spec, dp=replace(d, noise_std=0.0))
    delta = np.random.default_rng(4).normal(size=512) * 0.01
    rounding, noise = bytes(32), bytes(range(32))

    def vector(s: UpdateSpec, noise_key: bytes) -> np.ndarray:
        return round_dp.device_vector(
            delta, 1, s, KeyedUniforms(rounding), noise=KeyedUniforms(noise_key)
        )

    plain = vector(noiseless, noise)
    noisy = vector(spec, noise)
    np.testing.assert_array_equal(noisy, vector(spec, noise))  # same keys, same vector
    if skellam:
        want = dp.skellam(d.noise_std**2, 512, KeyedUniforms(noise))
    else:
        want = dp.discrete_gaussian(d.noise_std, 512, KeyedUniforms(noise))
    ring = np.uint64((1 << d.ring_bits) - 1)
    np.testing.assert_array_equal((noisy - plain)[:512] & ring, want.astype(np.uint64) & ring)
    np.testing.assert_array_equal(noisy[512:], plain[512:])  # the count digits: exact
    other = vector(spec, bytes(31) + b"\x07")
    assert np.mean(other == noisy) < 0.1
    np.testing.assert_array_equal(vector(noiseless, bytes(31) + b"\x07"), plain)
