"""Exact k-bit packing: round trips, exact sizes, one encoding per vector."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol.bitpack import pack, packed_size, unpack, unpack_add, word_dtype
from fedrt.protocol.errors import LengthError, ParameterError


@st.composite
def vectors(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    bits = draw(st.integers(1, 64))
    values = draw(st.lists(st.integers(0, 2**bits - 1), max_size=300))
    return np.array(values, dtype=np.uint64), bits


@settings(deadline=None, max_examples=200)
@given(vectors())
def test_pack_unpack_round_trip_in_exactly_k_bits(case: tuple[np.ndarray, int]) -> None:
    values, bits = case
    data = pack(values, bits)
    assert len(data) == packed_size(values.size, bits) == -(-values.size * bits // 8)
    back = unpack(data, bits, values.size)
    assert back.dtype == word_dtype(bits)
    assert back.tolist() == values.tolist()


def test_word_types_follow_the_bit_width() -> None:
    assert [word_dtype(b) for b in (1, 16, 17, 32, 33, 64)] == [
        np.uint16,
        np.uint16,
        np.uint32,
        np.uint32,
        np.uint64,
        np.uint64,
    ]


def test_a_large_vector_round_trips() -> None:
    values = np.random.default_rng(0).integers(0, 2**15, 100_003, dtype=np.uint64)
    assert np.array_equal(unpack(pack(values, 15), 15, values.size), values)


def test_pack_rejects_values_that_do_not_fit_and_bad_arrays() -> None:
    with pytest.raises(ParameterError):
        pack(np.array([8], dtype=np.uint64), 3)
    with pytest.raises(ParameterError):
        pack(np.array([1.0]), 3)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        pack(np.zeros((2, 2), dtype=np.uint64), 3)
    with pytest.raises(ParameterError):
        pack(np.zeros(2, dtype=np.uint64), 65)


def test_unpack_rejects_wrong_sizes_and_set_padding_bits() -> None:
    data = pack(np.array([1, 2, 3], dtype=np.uint64), 3)  # 9 bits: 2 bytes, 7 padding bits
    with pytest.raises(LengthError):
        unpack(data + b"\x00", 3, 3)
    with pytest.raises(LengthError):
        unpack(data[:1], 3, 3)
    with pytest.raises(LengthError):
        unpack(data[:1] + bytes([data[1] | 0x80]), 3, 3)


@settings(deadline=None, max_examples=100)
@given(vectors())
def test_unpack_into_a_given_array_overwrites_it_with_the_values(
    case: tuple[np.ndarray, int],
) -> None:
    values, bits = case
    out = np.full(values.size, 2**bits - 1 if bits < 64 else 7, dtype=word_dtype(bits))
    back = unpack(pack(values, bits), bits, values.size, out=out)
    assert back is out
    assert out.tolist() == values.tolist()


def test_unpack_rejects_an_out_array_of_the_wrong_shape_type_or_layout() -> None:
    data = pack(np.arange(10, dtype=np.uint16), 12)
    for out in (
        np.empty(9, dtype=np.uint16),
        np.empty(10, dtype=np.uint32),
        np.empty(20, dtype=np.uint16)[::2],
    ):
        with pytest.raises(ParameterError, match="out must be"):
            unpack(data, 12, 10, out=out)


@settings(deadline=None, max_examples=150)
@given(
    bits=st.integers(1, 64),
    count=st.integers(0, 200),
    vectors_=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_unpack_add_sums_packed_vectors_modulo_the_ring_once_reduced(
    bits: int, count: int, vectors_: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    top = 2**bits if bits < 64 else 2**64
    vectors_list = [
        [int(v) for v in rng.integers(0, top, count, dtype=np.uint64, endpoint=False)]
        for _ in range(vectors_)
    ]
    total = np.full(count, 5, dtype=word_dtype(bits))  # a sum already under way
    scratch = np.empty_like(total)
    for i, values in enumerate(vectors_list):
        data = pack(np.array(values, dtype=np.uint64), bits)
        unpack_add(data, bits, count, total, scratch=scratch if i % 2 else None)
    expected = [(5 + sum(column)) % 2**bits for column in zip(*vectors_list, strict=True)]
    assert [int(v) % 2**bits for v in total.tolist()] == (expected if count else [])


def test_unpack_add_rejects_a_bad_vector_and_leaves_the_sum_alone() -> None:
    values = np.arange(21, dtype=np.uint64)  # 15 bits: a group of 16 and a tail of 5
    data = pack(values, 15)
    total = np.ones(21, dtype=np.uint16)
    for bad in (data[:-1], data + b"\x00", data[:-1] + bytes([data[-1] | 0x80])):
        with pytest.raises(LengthError):
            unpack_add(bad, 15, 21, total)
    with pytest.raises(ParameterError, match="out must be"):
        unpack_add(data, 15, 21, np.ones(21, dtype=np.uint32))
    with pytest.raises(ParameterError, match="out must be"):
        unpack_add(data, 15, 21, total, scratch=np.ones(20, dtype=np.uint16))
    assert total.tolist() == [1] * 21
    unpack_add(data, 15, 21, total)
    assert (total & 0x7FFF).tolist() == (values + 1).tolist()  # reduced by the caller
