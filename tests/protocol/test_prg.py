"""AES-256-CTR mask expansion and the seeded random source."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedrt.protocol import prg
from fedrt.protocol.errors import ParameterError
from fedrt.protocol.prg import KeyedUniforms, MaskAccumulator, SeededRandom, expand, keystream

KEY = bytes(range(32))


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_expand_reads_the_keystream_as_little_endian_words(dtype: type) -> None:
    words = expand(KEY, 9, dtype)
    assert words.dtype == dtype
    assert (
        words.tobytes()
        == np.frombuffer(keystream(KEY, 9 * words.itemsize), "<" + np.dtype(dtype).str[1:])
        .astype(dtype)
        .tobytes()
    )
    assert words.flags.writeable


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_masks_added_and_subtracted_cancel_with_wraparound(dtype: type) -> None:
    start = np.arange(1000, dtype=dtype)
    acc = MaskAccumulator(start.copy())
    acc.add(KEY)
    acc.add(b"\x01" * 32, sign=-1)
    assert not np.array_equal(acc.values, start)
    acc.add(b"\x01" * 32)
    acc.add(KEY, sign=-1)
    assert np.array_equal(acc.values, start)
    one = MaskAccumulator(np.zeros(1000, dtype=dtype))
    one.add(KEY)
    assert np.array_equal(one.values, expand(KEY, 1000, dtype))


def test_bad_keys_signs_and_arrays_are_rejected() -> None:
    with pytest.raises(ParameterError):
        expand(b"short", 4)
    with pytest.raises(ParameterError):
        MaskAccumulator(np.zeros(4, np.uint32)).add(KEY, sign=2)
    with pytest.raises(ParameterError):
        MaskAccumulator(np.zeros(4, np.int32))  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        keystream(KEY, 4, iv=b"\x00")


def test_seeded_random_is_a_deterministic_stream() -> None:
    a, b = SeededRandom(5), SeededRandom(5)
    assert a(10) + a(6) == b(16)
    assert SeededRandom(b"x")(16) != SeededRandom(b"y")(16)
    assert SeededRandom(5)(16) != SeededRandom(6)(16)


def test_keyed_uniforms_are_a_deterministic_stream_in_the_unit_interval() -> None:
    key = bytes(range(32))
    whole = KeyedUniforms(key).random(10_000)
    parts = KeyedUniforms(key)
    assert np.array_equal(np.concatenate([parts.random(3), parts.random(9_997)]), whole)
    assert whole.dtype == np.float64
    assert whole.min() >= 0.0
    assert whole.max() < 1.0
    # 53-bit floats from the keystream's little-endian 64-bit words.
    first = int.from_bytes(keystream(key, 8), "little") >> 11
    assert whole[0] == first / 2**53
    # Uniform: 10,000 draws put the mean within 0.02 of 1/2 (about 7 standard deviations).
    assert abs(whole.mean() - 0.5) < 0.02
    assert not np.array_equal(KeyedUniforms(bytes(32)).random(8), whole[:8])
    assert KeyedUniforms(key).random(0).shape == (0,)
    with pytest.raises(ParameterError):
        KeyedUniforms(b"short")
    with pytest.raises(ParameterError):
        KeyedUniforms(key).random(-1)


def _plain_ctr(key: bytes, size: int) -> bytes:
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(size))


@pytest.mark.parametrize("gcm", [True, False])
@pytest.mark.parametrize("size", [0, 1, 16, 31, 32, 33, 48, 49, 1000, 4097, 200_100])
def test_the_zero_counter_keystream_is_plain_ctr_by_either_path(
    size: int, gcm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prg, "_GCM_MIN", 0)  # small sizes through GCM too
    monkeypatch.setattr(prg, "_gcm_is_faster", lambda: gcm)
    key = bytes(range(1, 33))
    assert keystream(key, size) == _plain_ctr(key, size)
    acc = MaskAccumulator(np.zeros(size // 2, dtype=np.uint16))
    acc.add(key)
    assert acc.values.tobytes() == _plain_ctr(key, size // 2 * 2)


def test_past_the_gcm_counter_the_keystream_is_ctr_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prg, "_GCM_MIN", 0)
    monkeypatch.setattr(prg, "_gcm_is_faster", lambda: True)
    monkeypatch.setattr(prg, "_GCM_MAX", 16)  # as if 49 bytes would wrap GCM's 32-bit counter
    assert keystream(KEY, 49) == _plain_ctr(KEY, 49)
    assert keystream(KEY, 48) == _plain_ctr(KEY, 48)


def test_the_speed_probe_answers_once() -> None:
    assert prg._gcm_is_faster() in (True, False)
    assert prg._gcm_is_faster() is prg._gcm_is_faster()
