"""The coordinator's Ed25519 identity: key file handling and model-version signatures.

A model version is signed over ``model_signing_payload(sha256, manifest)``: a domain tag,
the artifact's sha256 and the canonical JSON of its manifest, so a device that pinned the
coordinator's public key at enrollment can check both the bytes it downloaded and the
metadata (weights layout, loss, batch) it will train with.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedrt.coordinator.errors import BadRequestError, SigningKeyError
from fedrt.protocol.signed_payloads import model_signing_payload

KEY_FILE = "coordinator-ed25519.pem"


class ModelSigner:
    """Signs model versions with the coordinator's private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return f"ModelSigner(public_key={self.public_key_bytes().hex()[:16]}…)"

    @classmethod
    def load_or_create(cls, data_dir: Path) -> ModelSigner:
        """Read ``data_dir/KEY_FILE``, creating it (mode 0600) on first start."""
        path = Path(data_dir) / KEY_FILE
        try:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(_read_key(path))
        except OSError as exc:
            raise SigningKeyError(f"cannot create signing key {path}: {exc.strerror}") from None
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        return cls(key)

    def public_key_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, sha256: str, manifest: Mapping[str, Any]) -> bytes:
        return self._key.sign(model_signing_payload(sha256, manifest))


def verify_model_signature(
    public_key: bytes, sha256: str, manifest: Mapping[str, Any], signature: bytes
) -> None:
    """Raise ``BadRequestError`` unless ``signature`` is the coordinator's over the version."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, model_signing_payload(sha256, manifest)
        )
    except (InvalidSignature, ValueError):
        raise BadRequestError("model signature does not verify") from None


def _read_key(path: Path) -> Ed25519PrivateKey:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            # A group/world-readable key may already be copied: refuse rather than sign with it.
            raise SigningKeyError(f"{path} has mode {mode:o}; it must be 0600 (owner only)")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise SigningKeyError(f"{path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 key")
    return key


__all__ = ["KEY_FILE", "ModelSigner", "model_signing_payload", "verify_model_signature"]
