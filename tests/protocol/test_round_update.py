"""Plain updates: the streaming FedAvg sum against decoding each update on its own."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol import round_update
from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.round_messages import UpdateSpec


def _vectors(spec: UpdateSpec, deltas: list[np.ndarray], counts: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        round_update.unpack(
            round_update.pack(round_update.encode(d, n, spec, rng, weighted=False), spec.bits),
            spec,
        )
        for d, n in zip(deltas, counts, strict=True)
    ]


def _reference(spec: UpdateSpec, vectors: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Weighted mean of the one-by-one decoded, clipped deltas (what robust paths see)."""
    total, weight = np.zeros(spec.params), 0.0
    for v in vectors:
        delta, count = round_update.decode_one(v, spec)
        w = count / spec.weight_cap
        total += w * round_update.clip(delta, spec.clip_norm)
        weight += w
    return total / weight, weight


@settings(deadline=None, max_examples=30)
@given(
    params=st.integers(1, 600),
    devices=st.integers(1, 6),
    bits=st.sampled_from([4, 8, 12, 16]),
    rotate=st.booleans(),
    scale=st.floats(0.01, 3.0),
)
def test_streaming_sum_equals_the_mean_of_decoded_updates(
    params: int, devices: int, bits: int, rotate: bool, scale: float
) -> None:
    seed = b"round-seed" if rotate else b""
    spec = UpdateSpec(params=params, clip_norm=1.0, bits=bits, weight_cap=50, rotation_seed=seed)
    rng = np.random.default_rng(params)
    deltas = [rng.normal(size=params) * scale / np.sqrt(params) for _ in range(devices)]
    counts = [int(c) for c in rng.integers(1, 80, size=devices)]
    vectors = _vectors(spec, deltas, counts)
    s = round_update.PlainSum(spec)
    for v in vectors:
        s.add(v)
    expected, weight = _reference(spec, vectors)
    assert s.count == devices
    assert s.weight == pytest.approx(weight)
    mean = s.mean()
    assert mean.shape == (params,)
    # The streaming sum clips in the rotated space, which can only clip more, and by at most
    # the norm the padding coordinates' rounding noise adds: a few quantization steps.
    tol = 4 * round_update.step(spec) * np.sqrt(round_update.quant_spec(spec).params)
    assert np.linalg.norm(mean - expected) <= tol + 1e-9
    assert np.linalg.norm(mean) <= spec.clip_norm * (1 + 1e-6)  # float32 scaling


def test_without_rotation_the_sum_matches_and_clips_each_update() -> None:
    spec = UpdateSpec(params=1000, clip_norm=0.5, bits=8, weight_cap=10)
    rng = np.random.default_rng(1)
    deltas = [rng.normal(size=1000) * f for f in (0.001, 0.1)]  # the second needs clipping
    vectors = _vectors(spec, deltas, [4, 10])
    s = round_update.PlainSum(spec)
    assert [s.add(v) for v in vectors] == [0.4, 1.0]
    expected, _ = _reference(spec, vectors)
    # Per-update scaling is float32: 6e-8 relative, far below a step (0.5 * 2 / 255).
    np.testing.assert_allclose(s.mean(), expected, rtol=1e-6, atol=1e-9)


def test_a_bad_vector_is_refused_and_changes_nothing() -> None:
    spec = UpdateSpec(params=100, clip_norm=1.0, bits=8, weight_cap=10)
    good = _vectors(spec, [np.full(100, 0.01)], [5])[0]
    s = round_update.PlainSum(spec)
    s.add(good)
    before = s.mean().copy()
    too_big = good.astype(np.uint32)
    too_big[0] = 256
    zero_count = good.copy()
    zero_count[100:] = 0
    for bad, error in (
        (good[:-1], LengthError),
        (good.astype(np.int64), LengthError),
        (too_big, ParameterError),
        (zero_count, ParameterError),
    ):
        with pytest.raises(error):
            s.add(bad)
    assert s.count == 1
    np.testing.assert_array_equal(s.mean(), before)


def test_an_empty_sum_has_no_mean() -> None:
    with pytest.raises(ParameterError):
        round_update.PlainSum(UpdateSpec(params=3, clip_norm=1.0, bits=8, weight_cap=1)).mean()
