"""The seeded randomized Hadamard rotation and its use in round updates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol import round_update
from fedrt.protocol.errors import LengthError, ParameterError
from fedrt.protocol.rotation import padded_size, rotate, unrotate
from fedrt.protocol.round_messages import UpdateSpec


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 3000), st.binary(min_size=1, max_size=32))
def test_unrotate_inverts_rotate_and_keeps_the_norm(n: int, seed: bytes) -> None:
    x = np.random.default_rng(n).normal(size=n)
    r = rotate(x, seed)
    assert r.size == padded_size(n)
    assert np.isclose(np.linalg.norm(r), np.linalg.norm(x))
    np.testing.assert_allclose(unrotate(r, seed, n), x, atol=1e-12)


def test_rotation_is_deterministic_and_depends_on_the_seed() -> None:
    x = np.arange(10.0)
    np.testing.assert_array_equal(rotate(x, b"a"), rotate(x, b"a"))
    assert not np.allclose(rotate(x, b"a"), rotate(x, b"b"))
    # Pinned: devices of every architecture must derive the same rotation.
    pinned = [-0.707106781187, -4.949747468306, -4.949747468306, 4.949747468306,
              4.949747468306, 3.535533905933, 2.12132034356, -4.949747468306]  # fmt: skip
    np.testing.assert_allclose(rotate(np.arange(8.0), b"fedrt"), pinned, atol=1e-11)


def test_a_spike_is_spread_over_every_coordinate() -> None:
    x = np.zeros(1000)
    x[123] = 5.0
    r = rotate(x, b"seed")
    np.testing.assert_allclose(np.abs(r), 5.0 / np.sqrt(1024))


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(ParameterError):
        rotate(np.ones(3), b"")
    with pytest.raises(LengthError):
        unrotate(np.ones(3), b"s", 3)
    with pytest.raises(ParameterError):
        padded_size(0)


def _spec(rotated: bool) -> UpdateSpec:
    return UpdateSpec(
        params=5000,
        clip_norm=2.0,
        bits=8,
        weight_cap=1,
        rotation_seed=b"round-seed" if rotated else b"",
    )


def test_rotated_quantization_is_far_finer_at_eight_bits() -> None:
    rng = np.random.default_rng(0)
    delta = rng.normal(size=5000) * 0.01  # norm ~0.7, well inside the clip bound

    def error(rotated: bool) -> float:
        spec = _spec(rotated)
        vec = round_update.encode(delta, 1, spec, np.random.default_rng(1))
        mean, weight = round_update.decode_sum(vec.astype(np.uint32), spec, 1)
        assert weight == 1.0
        return float(np.linalg.norm(mean - delta) / np.linalg.norm(delta))

    plain, rotated = error(False), error(True)
    assert rotated < 0.1
    assert rotated < plain / 10


def test_rotated_sum_of_devices_decodes_to_their_mean() -> None:
    spec = _spec(True)
    rng = np.random.default_rng(2)
    deltas = [rng.normal(size=5000) * 0.01 for _ in range(8)]
    total = sum(
        round_update.encode(d, 1, spec, np.random.default_rng(i)).astype(np.uint64)
        for i, d in enumerate(deltas)
    )
    mean, weight = round_update.decode_sum(np.asarray(total, np.uint64), spec, 8)
    assert weight == 8.0
    expected = np.mean(deltas, axis=0)
    assert np.linalg.norm(mean - expected) / np.linalg.norm(expected) < 0.05
