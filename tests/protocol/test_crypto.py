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
