"""Crypto recipes of the protocol: X25519 + HKDF-SHA256, AES-256-GCM, Ed25519 signatures.

Few recipes, one opaque failure per kind: a ciphertext that does not authenticate raises
``DecryptionFailed`` and nothing else; a signature that does not verify raises
``BadSignature``. Private keys are built from an injected ``RandomSource`` so known-answer
tests and simulations are reproducible. AEAD keys here are single-use (derived per round,
pair and direction), which is why the nonce may be fixed; callers never reuse a key.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrt.protocol.errors import (
    BadSignature,
    ConsistencyError,
    DecryptionFailed,
    ParameterError,
)
from fedrt.protocol.prg import RandomSource

__all__ = [
    "KEY_BYTES",
    "SHARE_TAG_BYTES",
    "SIGNATURE_BYTES",
    "TAG_BYTES",
    "IdentityVerifier",
    "agree",
    "derive",
    "identity_from_seed",
    "load_identity_key",
    "new_x25519",
    "open_sealed",
    "seal",
    "sign_digest",
    "verify_digest",
    "x25519_public",
]

KEY_BYTES = 32
TAG_BYTES = 16
# Sealed Shamir shares carry 96-bit GCM tags (NIST SP 800-38D 5.2.1.2 allows 96 bits without
# the extra limits of shorter tags): keys are single-use, messages 2 blocks, so a forgery
# succeeds with probability about 2**-95 per attempt, and saving 4 bytes on each of k - t + 1
# shares keeps a device's whole upload within 1 % of the masked vector (docs/secagg.md).
SHARE_TAG_BYTES = 12
SIGNATURE_BYTES = 64
_HASH_BYTES = 32
ZERO_NONCE = bytes(12)
SIGNATURE_CONTEXT = b"fedrt/protocol/signature/v1\x00"


def new_x25519(random: RandomSource) -> X25519PrivateKey:
    """A fresh X25519 private key from 32 bytes of ``random``."""
    return X25519PrivateKey.from_private_bytes(random(KEY_BYTES))


def x25519_public(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes_raw()


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The 32-byte X25519 shared secret; a low-order peer key raises ``ConsistencyError``."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # wrong length or an all-zero (low-order) result
        raise ConsistencyError("unusable X25519 public key") from exc


def derive(secret: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 of ``secret`` (RFC 5869; its test vector is in the known answers)."""
    if not 0 < length <= 255 * _HASH_BYTES:
        raise ParameterError(f"HKDF-SHA256 output must be 1..{255 * _HASH_BYTES} bytes")
    return HKDF(hashes.SHA256(), length, salt or None, info).derive(secret)


def seal(
    key: bytes,
    plaintext: bytes,
    aad: bytes,
    *,
    nonce: bytes = ZERO_NONCE,
    tag_bytes: int = TAG_BYTES,
) -> bytes:
    """AES-256-GCM encryption: ciphertext followed by the tag (truncated to ``tag_bytes``)."""
    if len(key) != KEY_BYTES:
        raise ParameterError("AES-256-GCM keys are 32 bytes")
    if not 12 <= tag_bytes <= TAG_BYTES:
        raise ParameterError("GCM tags here are 12 to 16 bytes")
    sealed = AESGCM(key).encrypt(nonce, plaintext, aad)
    return sealed[: len(plaintext) + tag_bytes]  # a truncated tag is the full tag's prefix


def open_sealed(
    key: bytes,
    ciphertext: bytes,
    aad: bytes,
    *,
    nonce: bytes = ZERO_NONCE,
    tag_bytes: int = TAG_BYTES,
) -> bytes:
    """Authenticate, then decrypt; any failure is the one opaque ``DecryptionFailed``."""
    try:
        if tag_bytes == TAG_BYTES:
            return AESGCM(key).decrypt(nonce, ciphertext, aad)
        if not 12 <= tag_bytes < TAG_BYTES or len(ciphertext) < tag_bytes:
            raise ValueError("bad tag length")
        body, tag = ciphertext[:-tag_bytes], ciphertext[-tag_bytes:]
        mode = modes.GCM(nonce, tag, min_tag_length=tag_bytes)
        decryptor = Cipher(algorithms.AES(key), mode).decryptor()
        decryptor.authenticate_additional_data(aad)
        plaintext = decryptor.update(body)
        decryptor.finalize()  # checks the tag: nothing is returned before it passes
        return plaintext
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("ciphertext failed authentication") from exc


def identity_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """A deterministic Ed25519 identity (tests and simulations): SHA-256 of ``seed``."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())


def load_identity_key(public: bytes) -> Ed25519PublicKey:
    """Parse a raw 32-byte Ed25519 public key."""
    try:
        return Ed25519PublicKey.from_public_bytes(public)
    except ValueError as exc:
        raise ParameterError("not a raw 32-byte Ed25519 public key") from exc


def sign_digest(identity: Ed25519PrivateKey, digest: bytes) -> bytes:
    """Sign a 32-byte message digest under the protocol's signature context."""
    return identity.sign(SIGNATURE_CONTEXT + digest)


def verify_digest(public: Ed25519PublicKey, signature: bytes, digest: bytes) -> None:
    """Verify ``sign_digest``'s output; raise ``BadSignature`` when it does not verify."""
    try:
        public.verify(signature, SIGNATURE_CONTEXT + digest)
    except InvalidSignature as exc:
        raise BadSignature("signature does not verify under the sender's key") from exc


SodiumCheck = Callable[[bytes, bytes], bool]
"""libsodium's Ed25519 check: ``check(signature + message, public)`` is True when it verifies."""


@functools.cache  # imported on first use, once per process
def _load_sodium() -> SodiumCheck | None:
    """libsodium's Ed25519 check, when PyNaCl (coordinator extra) is here."""
    try:  # PyNaCl's compiled module (private, so the public bindings stand behind it)
        sodium = importlib.import_module("nacl._sodium")
        sodium_open, nothing = sodium.lib.crypto_sign_open, sodium.ffi.NULL
    except (ImportError, AttributeError):  # also devices without the coordinator extra
        return _load_sodium_bindings()

    def check(signed: bytes, public: bytes) -> bool:
        # libsodium's own call with no message buffer (it then copies nothing out): PyNaCl's
        # wrapper allocates and fills one per call, a sixth of the check's time here.
        return bool(sodium_open(nothing, nothing, signed, len(signed), public) == 0)

    return check


def _load_sodium_bindings() -> SodiumCheck | None:
    """The same check through PyNaCl's public bindings (a PyNaCl without ``nacl._sodium``)."""
    try:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import CryptoError
    except ImportError:
        return None

    def check(signed: bytes, public: bytes) -> bool:
        try:
            crypto_sign_open(signed, public)
        except CryptoError:
            return False
        return True

    return check


class IdentityVerifier:
    """``verify_digest`` for one identity key, made cheaper with libsodium when installed.

    libsodium checks a signature in about half the time of OpenSSL here, and what it accepts
    OpenSSL accepts too (the same cofactorless equation and S < L, plus its own rejection
    of small-order and non-canonical points). A signature libsodium rejects is checked again
    by ``verify_digest``, so the decision is always OpenSSL's: an honest device's message
    never fails for being checked on the fast path. The SecAgg+ server and client both check
    signatures through it; where PyNaCl is not installed (a device with only the ``device``
    extra) it is plain ``verify_digest``.
    """

    __slots__ = ("_key", "_raw", "_sodium")

    def __init__(self, public: bytes, *, fast: bool = True) -> None:
        self._key = load_identity_key(public)
        self._sodium = _load_sodium() if fast else None
        self._raw = public if self._sodium is not None else None

    @property
    def accelerated(self) -> bool:
        """Whether libsodium checks this key's signatures first."""
        return self._raw is not None

    def verify(self, signature: bytes, digest: bytes) -> None:
        """Like ``verify_digest``: raise ``BadSignature`` unless the signature verifies."""
        fast, raw = self._sodium, self._raw
        if (
            fast is not None
            and raw is not None
            and len(signature) == SIGNATURE_BYTES
            and fast(signature + SIGNATURE_CONTEXT + digest, raw)
        ):
            return
        verify_digest(self._key, signature, digest)  # OpenSSL decides what libsodium rejects
