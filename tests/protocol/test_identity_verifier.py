"""The coordinator's Ed25519 check: libsodium first, always OpenSSL's decision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol.crypto import (
    SIGNATURE_BYTES,
    IdentityVerifier,
    identity_from_seed,
    load_identity_key,
    sign_digest,
    verify_digest,
)
from fedrt.protocol.errors import BadSignature

pytest.importorskip("nacl.bindings")  # the coordinator extra; without it nothing is faster

KAT = Path(__file__).parent / "data" / "secagg_kat.json"
ORDER = 2**252 + 27742317777372353535851937790883648493  # L, the prime group order
IDENTITY = b"\x01" + bytes(31)  # the neutral point: small order
NONCANONICAL_IDENTITY = (2**255 - 18).to_bytes(32, "little")  # y = p + 1
DIGEST = bytes(range(32))


def _decision(check: IdentityVerifier | bytes, signature: bytes, digest: bytes) -> bool:
    try:
        if isinstance(check, IdentityVerifier):
            check.verify(signature, digest)
        else:
            verify_digest(load_identity_key(check), signature, digest)
    except BadSignature:
        return False
    return True


def _both(public: bytes, signature: bytes, digest: bytes = DIGEST) -> tuple[bool, bool]:
    fast = IdentityVerifier(public)
    assert fast.accelerated
    return _decision(fast, signature, digest), _decision(public, signature, digest)


def test_the_rfc_8032_key_of_the_known_answers_verifies_on_the_fast_path() -> None:
    (vector,) = json.loads(KAT.read_text())["ed25519"]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["secret"]))
    public = bytes.fromhex(vector["public"])
    signature = sign_digest(key, DIGEST)
    assert _both(public, signature) == (True, True)
    assert not IdentityVerifier(public, fast=False).accelerated


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=1, max_size=16), digest=st.binary(min_size=32, max_size=32))
def test_honest_signatures_pass_and_any_flipped_bit_fails_like_openssl(
    seed: bytes, digest: bytes
) -> None:
    key = identity_from_seed(seed)
    public = key.public_key().public_bytes_raw()
    signature = sign_digest(key, digest)
    assert _both(public, signature, digest) == (True, True)
    for position in (0, 31, 32, SIGNATURE_BYTES - 1):
        bad = bytearray(signature)
        bad[position] ^= 0x01
        assert _both(public, bytes(bad), digest) == (False, False)
    other = bytes([digest[0] ^ 0x80]) + digest[1:]
    assert _both(public, signature, other) == (False, False)


def test_edge_cases_libsodium_rejects_get_openssls_answer() -> None:
    key = identity_from_seed(b"edge")
    public = key.public_key().public_bytes_raw()
    signature = sign_digest(key, DIGEST)
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + ORDER).to_bytes(32, "little")  # S >= L
    assert _both(public, malleated) == (False, False)
    # A small-order key with R = identity, S = 0 passes OpenSSL's check for every message;
    # libsodium refuses it, and the verifier still answers as OpenSSL does.
    forged = IDENTITY + bytes(32)
    assert _both(IDENTITY, forged) == (True, True)
    assert _both(NONCANONICAL_IDENTITY, forged) == (True, True)
    assert _both(IDENTITY, NONCANONICAL_IDENTITY + bytes(32)) == (False, False)
    assert _both(public, signature[:-1]) == (False, False)  # a short signature
