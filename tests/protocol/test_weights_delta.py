"""Version deltas: exact rebuilds, symmetric levels, and typed refusals of bad blobs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol.errors import DecodeError, LengthError, ParameterError
from fedrt.protocol.rotation import padded_size
from fedrt.protocol.weights_delta import (
    DeltaMismatch,
    WrongBase,
    apply_delta,
    encode_delta,
    read_header,
    weights_bytes,
    weights_from_bytes,
    weights_sha256,
)

SEED = bytes(range(32))


def _pair(n: int, scale: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n).astype(np.float32)
    return base, (base + rng.normal(scale=scale, size=n)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), bits=st.integers(2, 16), scale=st.floats(1e-6, 10.0))
def test_apply_rebuilds_exactly_what_encode_commits(n: int, bits: int, scale: float) -> None:
    base, target = _pair(n, scale)
    encoded = encode_delta(base, target, bits=bits, seed=SEED)
    rebuilt = apply_delta(base, encoded.blob)
    assert rebuilt.dtype == np.float32
    assert weights_bytes(rebuilt) == weights_bytes(encoded.result)
    # Each rotated coordinate is off by at most half a step; rotating back keeps the L2 norm.
    step = encoded.header.bound / ((1 << (bits - 1)) - 1)
    error = float(np.linalg.norm(rebuilt.astype(np.float64) - target.astype(np.float64)))
    float32_slack = 1e-6 * float(np.abs(target).max() + 1) * np.sqrt(n)
    assert error <= 0.5 * step * np.sqrt(padded_size(n)) + float32_slack


def test_blob_size_is_the_header_plus_packed_levels() -> None:
    base, target = _pair(53_002)
    blob = encode_delta(base, target, bits=8, seed=SEED).blob
    assert read_header(blob).params == 53_002
    assert len(blob) == 116 + 65_536  # 8 bits for each of 2^16 rotated coordinates


def test_unchanged_weights_stay_exactly_unchanged() -> None:
    base, _ = _pair(1000)
    encoded = encode_delta(base, base, bits=4, seed=SEED)
    assert np.array_equal(encoded.result, base)
    assert np.array_equal(apply_delta(base, encoded.blob), base)


def test_a_delta_applies_to_its_base_only() -> None:
    base, target = _pair(500)
    blob = encode_delta(base, target, bits=8, seed=SEED).blob
    other = base.copy()
    other[7] += np.float32(1e-3)
    with pytest.raises(WrongBase):
        apply_delta(other, blob)
    with pytest.raises(WrongBase):
        apply_delta(base[:-1], blob)


def test_tampered_levels_are_refused() -> None:
    base, target = _pair(500)
    blob = bytearray(encode_delta(base, target, bits=8, seed=SEED).blob)
    blob[-3] ^= 0x10
    with pytest.raises(DeltaMismatch):
        apply_delta(base, bytes(blob))


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda b: b[:50], LengthError),
        (lambda b: b[:-1], LengthError),
        (lambda b: b"XXXX" + b[4:], DecodeError),
        (lambda b: b[:4] + b"\x02" + b[5:], DecodeError),  # format 2
        (lambda b: b[:5] + b"\x01" + b[6:], DecodeError),  # 1 bit
        (lambda b: b[:12] + b"\x00" * 8 + b[20:], DecodeError),  # bound 0
        (lambda b: b[:12] + b"\xff" * 8 + b[20:], DecodeError),  # bound NaN
    ],
)
def test_malformed_blobs_raise_decode_errors(edit, error) -> None:  # type: ignore[no-untyped-def]
    base, target = _pair(300)
    blob = encode_delta(base, target, bits=8, seed=SEED).blob
    with pytest.raises(error):
        apply_delta(base, edit(blob))


def test_out_of_range_level_is_refused() -> None:
    base, target = _pair(300)
    blob = bytearray(encode_delta(base, target, bits=8, seed=SEED).blob)
    blob[116] = 0xFF  # level 255 > 2 * 127
    with pytest.raises(DecodeError, match="out of range"):
        apply_delta(base, bytes(blob))


def test_bad_parameters() -> None:
    base, target = _pair(10)
    with pytest.raises(ParameterError):
        encode_delta(base, target, bits=1, seed=SEED)
    with pytest.raises(ParameterError):
        encode_delta(base, target, bits=8, seed=b"short")
    with pytest.raises(ParameterError):
        encode_delta(base, np.full(10, np.nan, np.float32), bits=8, seed=SEED)
    with pytest.raises(LengthError):
        encode_delta(base, target[:5], bits=8, seed=SEED)


def test_weights_bytes_round_trip_and_hash() -> None:
    base, _ = _pair(33)
    data = weights_bytes(base)
    assert len(data) == 4 * 33
    assert np.array_equal(weights_from_bytes(data, 33), base)
    assert weights_sha256(base) == weights_sha256(weights_from_bytes(data, 33))
    with pytest.raises(LengthError):
        weights_from_bytes(data, 32)
