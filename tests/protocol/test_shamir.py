"""Shamir sharing of 127-bit secrets over GF(2**32 - 5): any t shares reconstruct."""

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
    numbers = st.integers(0, 2**127 - 1).map(lambda v: v.to_bytes(16, "little"))
    secrets = draw(st.lists(numbers, min_size=1, max_size=5))
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
    secret = [bytes(range(15)) + b"\x7f"]
    shares = shamir.split(shamir.secrets_to_field(secret), [1, 2, 3, 4], 3, SeededRandom(1))
    y = shares[[0, 1], 0][None]
    wrong = shamir.reconstruct(np.array([[1, 2]]), y)
    assert not np.array_equal(wrong, shamir.secrets_to_field(secret))


def test_shares_serialize_to_16_bytes() -> None:
    field = shamir.secrets_to_field([b"\x07" * 16])
    data = shamir.share_to_bytes(field[0])
    assert len(data) == shamir.SHARE_BYTES == 16
    assert np.array_equal(shamir.share_from_bytes(data), field[0])
    assert np.array_equal(shamir.shares_from_bytes(data * 2, 2), np.stack([field[0]] * 2))


def test_bad_inputs_are_rejected() -> None:
    field = shamir.secrets_to_field([bytes(16)])
    with pytest.raises(ParameterError):
        shamir.secrets_to_field([b"short"])
    with pytest.raises(ParameterError):  # 128 bits: the top bit must be clear
        shamir.secrets_to_field([b"\xff" * 16])
    with pytest.raises(ParameterError):
        shamir.split(field, [1, 1, 2], 2, SeededRandom(0))
    with pytest.raises(ParameterError):
        shamir.split(field, [0, 1], 2, SeededRandom(0))
    with pytest.raises(ParameterError):
        shamir.split(field, [1, 2], 3, SeededRandom(0))
    with pytest.raises(DuplicateShare):
        shamir.reconstruct(np.array([[1, 1]]), np.zeros((1, 2, shamir.CHUNKS), np.uint64))
    with pytest.raises(DecodeError):
        shamir.share_from_bytes(b"\xff" * 16)
    with pytest.raises(DecodeError):
        shamir.check_shares(b"\x00" * 15)
    with pytest.raises(ConsistencyError):  # p**4 - 1 > 2**127 - 1
        shamir.secrets_from_field(np.full((1, shamir.CHUNKS), shamir.PRIME - 1, dtype=np.uint64))


def test_a_constant_source_cannot_stall_rejection_sampling() -> None:
    with pytest.raises(ParameterError):
        shamir.split(shamir.secrets_to_field([bytes(16)]), [1, 2], 2, lambda n: b"\xff" * n)


def test_new_secrets_have_127_bits_and_round_trip() -> None:
    random = SeededRandom(3)
    secrets = [shamir.new_secret(random) for _ in range(50)]
    assert all(s[-1] < 0x80 for s in secrets)
    assert any(s[-1] >= 0x40 for s in secrets)  # bit 126 is used
    assert shamir.secrets_from_field(shamir.secrets_to_field(secrets)) == secrets


@settings(deadline=None, max_examples=60)
@given(st.integers(2, 12), st.integers(0, 2**32), st.data())
def test_split_through_fixed_points_is_a_t_of_n_sharing(
    t: int, seed: int, data: st.DataObject
) -> None:
    random = SeededRandom(seed)
    secrets = [shamir.new_secret(random) for _ in range(2)]
    xs = data.draw(st.lists(st.integers(1, 2**20), min_size=t, max_size=t + 6, unique=True))
    fixed_xs, others = xs[: t - 1], xs[t - 1 :]
    fixed = shamir.field_from_words(random(16 * (t - 1) * 2 * shamir.CHUNKS))
    fixed = fixed.reshape(t - 1, 2, shamir.CHUNKS)
    shares = shamir.split_through(shamir.secrets_to_field(secrets), fixed_xs, fixed, others)
    every = np.concatenate([fixed, shares])  # rows follow xs
    pick = data.draw(st.permutations(range(len(xs))))[:t]
    x = np.array([[xs[p] for p in pick]] * 2)
    y = np.stack([every[pick, s] for s in range(2)])
    assert shamir.secrets_from_field(shamir.reconstruct(x, y)) == secrets
    with pytest.raises(ParameterError):
        shamir.split_through(shamir.secrets_to_field(secrets), fixed_xs, fixed, [0])


def test_field_from_words_reduces_pairs_of_words() -> None:
    data = (2**64 - 1).to_bytes(8, "little") * 2 + bytes(16)
    values = shamir.field_from_words(data)
    assert values.tolist() == [(2**128 - 1) % shamir.PRIME, 0]


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 8), st.integers(0, 6), st.integers(0, 2**32), st.data())
def test_berlekamp_welch_finds_every_wrong_share_it_can(
    t: int, extra: int, seed: int, data: st.DataObject
) -> None:
    m = t + extra
    random = SeededRandom(seed)
    xs = list(range(1, m + 1))
    ys = shamir.split(shamir.secrets_to_field([shamir.new_secret(random)]), xs, t, random)
    values = ys[:, 0, 0].tolist()
    wrong = data.draw(st.sets(st.integers(0, m - 1), max_size=(m - t) // 2))
    for i in wrong:
        values[i] = (values[i] + 1 + i) % shamir.PRIME
    found = shamir.locate_errors(xs, values, t)
    assert found is not None
    assert wrong <= found
    assert len(found) <= (m - t) // 2
    right = [i for i in range(m) if i not in found][:t]
    rest = [i for i in range(m) if i not in right]
    if rest:
        expected = shamir.evaluate([xs[i] for i in right], ys[right, 0], [xs[i] for i in rest])
        assert expected[:, 0].tolist() == ys[rest, 0, 0].tolist()
