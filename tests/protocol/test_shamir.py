"""Shamir sharing over GF(2**32 - 5): any t shares reconstruct, vectorized over secrets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol import shamir
from fedrt.protocol.errors import ConsistencyError, DecodeError, DuplicateShare, ParameterError
from fedrt.protocol.prg import SeededRandom


@st.composite
def sharings(draw: st.DrawFn) -> tuple[list[bytes], list[int], int, list[list[int]]]:
    secrets = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=5))
    xs = draw(st.lists(st.integers(1, 2**20), min_size=1, max_size=12, unique=True))
    t = draw(st.integers(1, len(xs)))
    picks = [draw(st.permutations(range(len(xs))))[:t] for _ in secrets]
    return secrets, xs, t, picks


@settings(deadline=None, max_examples=100)
@given(sharings(), st.integers(0, 2**32))
def test_any_t_shares_reconstruct_every_secret(
    case: tuple[list[bytes], list[int], int, list[list[int]]], seed: int
) -> None:
    secrets, xs, t, picks = case
    shares = shamir.split(shamir.secrets_to_field(secrets), xs, t, SeededRandom(seed))
    assert shares.shape == (len(xs), len(secrets), shamir.CHUNKS)
    assert (shares < shamir.PRIME).all()
    x = np.array([[xs[p] for p in pick] for pick in picks])
    y = np.stack([shares[pick, s] for s, pick in enumerate(picks)])
    assert shamir.secrets_from_field(shamir.reconstruct(x, y)) == secrets


def test_fewer_than_t_shares_give_a_different_value() -> None:
    secret = [bytes(range(32))]
    shares = shamir.split(shamir.secrets_to_field(secret), [1, 2, 3, 4], 3, SeededRandom(1))
    y = shares[[0, 1], 0][None]
    wrong = shamir.reconstruct(np.array([[1, 2]]), y)
    assert not np.array_equal(wrong, shamir.secrets_to_field(secret))


def test_shares_serialize_to_36_bytes() -> None:
    field = shamir.secrets_to_field([b"\x07" * 32])
    data = shamir.share_to_bytes(field[0])
    assert len(data) == shamir.SHARE_BYTES == 36
    assert np.array_equal(shamir.share_from_bytes(data), field[0])
    assert np.array_equal(shamir.shares_from_bytes(data * 2, 2), np.stack([field[0]] * 2))


def test_bad_inputs_are_rejected() -> None:
    field = shamir.secrets_to_field([bytes(32)])
    with pytest.raises(ParameterError):
        shamir.secrets_to_field([b"short"])
    with pytest.raises(ParameterError):
        shamir.split(field, [1, 1, 2], 2, SeededRandom(0))
    with pytest.raises(ParameterError):
        shamir.split(field, [0, 1], 2, SeededRandom(0))
    with pytest.raises(ParameterError):
        shamir.split(field, [1, 2], 3, SeededRandom(0))
    with pytest.raises(DuplicateShare):
        shamir.reconstruct(np.array([[1, 1]]), np.zeros((1, 2, shamir.CHUNKS), np.uint64))
    with pytest.raises(DecodeError):
        shamir.share_from_bytes(b"\xff" * 36)
    with pytest.raises(DecodeError):
        shamir.check_shares(b"\x00" * 35)
    with pytest.raises(ConsistencyError):
        shamir.secrets_from_field(np.full((1, shamir.CHUNKS), 2**31, dtype=np.uint64))


def test_a_constant_source_cannot_stall_rejection_sampling() -> None:
    with pytest.raises(ParameterError):
        shamir.split(shamir.secrets_to_field([bytes(32)]), [1, 2], 2, lambda n: b"\xff" * n)
