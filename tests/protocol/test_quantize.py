"""Quantized updates: unbiased rounding, exact ring sums, de-quantization within the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.quantize import (
    QuantSpec,
    clip_l2,
    decode_update_sum,
    encode_update,
    quantize,
    ring_bits,
)
from fedrt.protocol.secagg import run_in_memory


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[QuantSpec, list[np.ndarray], list[int], list[float]]:
    bits = draw(st.integers(1, 16))
    params = draw(st.integers(1, 30))
    spec = QuantSpec(
        params=params,
        bits=bits,
        clip_norm=draw(st.floats(0.1, 10.0)),
        weight_cap=draw(st.integers(1, 5000)),
        scalar_bounds=(5.0,),
    )
    n = draw(st.integers(1, 12))
    floats = st.floats(-20.0, 20.0, allow_nan=False)
    deltas = [np.array(draw(st.lists(floats, min_size=params, max_size=params))) for _ in range(n)]
    counts = [draw(st.integers(1, 10_000)) for _ in range(n)]
    scalars = [draw(st.floats(-5.0, 5.0)) for _ in range(n)]
    return spec, deltas, counts, scalars


@settings(deadline=None, max_examples=150)
@given(cohorts(), st.integers(0, 2**32))
def test_quantize_sum_dequantize_stays_within_the_bound(
    case: tuple[QuantSpec, list[np.ndarray], list[int], list[float]], seed: int
) -> None:
    spec, deltas, counts, scalars = case
    rng = np.random.default_rng(seed)
    vectors = [
        encode_update(d, spec=spec, examples=c, rng=rng, scalars=[s])
        for d, c, s in zip(deltas, counts, scalars, strict=True)
    ]
    n = len(vectors)
    assert all(v.dtype == np.uint32 and int(v.max()) <= spec.levels for v in vectors)
    total = np.sum(vectors, axis=0, dtype=np.uint64)
    assert int(total.max()) < 2 ** ring_bits(spec.bits, n)  # no wrap-around in Z_(2^k)
    out = decode_update_sum(total, spec=spec, contributors=n)
    capped = [min(c, spec.weight_cap) for c in counts]
    assert out.examples == sum(capped)
    weights = [c / spec.weight_cap for c in capped]
    exact = sum(w * clip_l2(d, spec.clip_norm) for w, d in zip(weights, deltas, strict=True))
    exact_mean = exact / sum(weights)
    # Each device's rounding moves a coordinate by less than one step.
    bound = n * spec.step / sum(weights) + 1e-9 * (1 + n * spec.clip_norm / sum(weights))
    assert np.max(np.abs(out.mean - exact_mean)) <= bound
    scalar_step = 2 * 5.0 / spec.levels
    assert abs(out.scalars[0] - sum(scalars) / n) <= scalar_step + 1e-9


def test_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(7)
    value = np.full(200_000, 0.3)
    levels = quantize(value, bound=1.0, bits=2, rng=rng)  # 0.3 -> 1.95 steps of 3
    mean = levels.mean() * 2 / 3 - 1
    assert abs(mean - 0.3) < 4 * (2 / 3) * 0.5 / math.sqrt(value.size)
    assert set(np.unique(levels).tolist()) == {1, 2}


def test_layout_clipping_and_count_digits() -> None:
    spec = QuantSpec(params=4, bits=4, clip_norm=1.0, weight_cap=300)
    assert (spec.count_digits, spec.length) == (3, 7)  # 300 needs 9 bits: three 4-bit digits
    vector = encode_update(
        np.array([30.0, 40.0, 0.0, 0.0]), spec=spec, examples=1000, rng=np.random.default_rng(0)
    )
    assert vector[4:].tolist() == [300 & 15, (300 >> 4) & 15, 300 >> 8]
    assert np.linalg.norm(clip_l2(np.array([30.0, 40.0]), 1.0)) == pytest.approx(1.0)
    assert ring_bits(8, 100) == 15
    assert ring_bits(8, 1) == 8


def test_quantized_updates_through_secure_aggregation() -> None:
    spec = QuantSpec(params=50, bits=8, clip_norm=1.0, weight_cap=100)
    rng = np.random.default_rng(3)
    deltas = [rng.normal(0, 0.05, 50) for _ in range(6)]
    vectors = [encode_update(d, spec=spec, examples=100, rng=rng) for d in deltas]
    total = run_in_memory(
        vectors, bits=ring_bits(8, 6), threshold=4, neighbors=5, drop={5: "masked_input"}, seed=1
    )
    out = decode_update_sum(total, spec=spec, contributors=5)
    assert out.examples == 500
    assert np.max(np.abs(out.mean - np.mean(deltas[:5], axis=0))) <= 5 * spec.step / 5 + 1e-12


@pytest.mark.parametrize(
    ("delta", "kwargs", "error"),
    [
        (np.zeros(3), {}, LengthError),
        (np.zeros(4), {"scalars": [1.0]}, LengthError),
        (np.array([0.0, np.nan, 0.0, 0.0]), {}, ParameterError),
        (np.zeros(4), {"examples": 0}, ParameterError),
    ],
)
def test_encode_rejects_bad_updates(
    delta: np.ndarray, kwargs: dict[str, object], error: type[Exception]
) -> None:
    spec = QuantSpec(params=4, bits=8, clip_norm=1.0)
    args: dict[str, object] = {"examples": 1, **kwargs}
    with pytest.raises(error):
        encode_update(delta, spec=spec, rng=np.random.default_rng(0), **args)  # type: ignore[arg-type]


def test_specs_and_impossible_sums_are_rejected() -> None:
    for kwargs in (
        {"bits": 0},
        {"bits": 33},
        {"clip_norm": 0.0},
        {"params": 0},
        {"scalar_bounds": (math.inf,)},
    ):
        with pytest.raises(ParameterError):
            QuantSpec(**{"params": 2, "bits": 8, "clip_norm": 1.0, **kwargs})  # type: ignore[arg-type]
    spec = QuantSpec(params=2, bits=8, clip_norm=1.0, weight_cap=10)
    with pytest.raises(LengthError):
        decode_update_sum(np.zeros(2, np.uint64), spec=spec, contributors=1)
    with pytest.raises(ParameterError):  # more than one device's worth
        decode_update_sum(np.array([300, 0, 1], np.uint64), spec=spec, contributors=1)
    with pytest.raises(ParameterError):  # zero examples from one device
        decode_update_sum(np.array([3, 0, 0], np.uint64), spec=spec, contributors=1)
