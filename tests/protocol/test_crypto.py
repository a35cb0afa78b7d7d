"""Crypto recipes: one opaque failure per kind, keys from injected randomness."""

from __future__ import annotations

import pytest

from fedrt.protocol.crypto import (
    agree,
    derive,
    identity_from_seed,
    load_identity_key,
    new_x25519,
    open_sealed,
    seal,
    sign_digest,
    verify_digest,
    x25519_public,
)
from fedrt.protocol.errors import BadSignature, ConsistencyError, DecryptionFailed, ParameterError
from fedrt.protocol.prg import SeededRandom

KEY = b"k" * 32


def test_seal_and_open_round_trip_and_any_change_fails_opaquely() -> None:
    sealed = seal(KEY, b"plaintext", b"aad")
    assert open_sealed(KEY, sealed, b"aad") == b"plaintext"
    for i in range(len(sealed)):
        flipped = bytearray(sealed)
        flipped[i] ^= 0x80
        with pytest.raises(DecryptionFailed):
            open_sealed(KEY, bytes(flipped), b"aad")
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, sealed, b"other aad")
    with pytest.raises(DecryptionFailed):
        open_sealed(b"j" * 32, sealed, b"aad")
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, sealed[:5], b"aad")
    with pytest.raises(ParameterError):
        seal(b"short", b"x", b"")


def test_a_12_byte_tag_is_the_full_tags_prefix_and_is_checked_before_decrypting() -> None:
    full = seal(KEY, b"share bytes", b"aad")
    short = seal(KEY, b"share bytes", b"aad", tag_bytes=12)
    assert short == full[:-4]  # wire format: the truncated tag is the full tag's prefix
    assert open_sealed(KEY, short, b"aad", tag_bytes=12) == b"share bytes"
    for i in range(len(short)):
        flipped = bytearray(short)
        flipped[i] ^= 0x01
        with pytest.raises(DecryptionFailed):
            open_sealed(KEY, bytes(flipped), b"aad", tag_bytes=12)
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, short, b"other", tag_bytes=12)
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, short[:11], b"aad", tag_bytes=12)
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, full, b"aad", tag_bytes=11)


def test_derive_is_rfc_5869_hkdf_sha256() -> None:
    # RFC 5869, appendix A.1 (test case 1).
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = derive(ikm, salt=salt, info=info, length=42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    with pytest.raises(ParameterError):
        derive(ikm, salt=salt, info=info, length=0)


def test_key_agreement_is_symmetric_and_reproducible() -> None:
    a, b = new_x25519(SeededRandom(1)), new_x25519(SeededRandom(2))
    assert agree(a, x25519_public(b)) == agree(b, x25519_public(a))
    assert x25519_public(new_x25519(SeededRandom(1))) == x25519_public(a)
    with pytest.raises(ConsistencyError):
        agree(a, bytes(32))  # the all-zero point has small order
    assert derive(b"s" * 32, salt=b"", info=b"a") != derive(b"s" * 32, salt=b"", info=b"b")


def test_signatures_verify_only_for_the_signer_and_the_digest() -> None:
    signer, other = identity_from_seed(b"a"), identity_from_seed(b"b")
    digest = b"d" * 32
    signature = sign_digest(signer, digest)
    public = load_identity_key(signer.public_key().public_bytes_raw())
    verify_digest(public, signature, digest)
    with pytest.raises(BadSignature):
        verify_digest(public, signature, b"e" * 32)
    with pytest.raises(BadSignature):
        verify_digest(load_identity_key(other.public_key().public_bytes_raw()), signature, digest)
    with pytest.raises(ParameterError):
        load_identity_key(b"short")
