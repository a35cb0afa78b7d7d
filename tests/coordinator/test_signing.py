"""The coordinator's Ed25519 key file and model-version signatures."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedrt.coordinator.errors import BadRequestError, SigningKeyError
from fedrt.coordinator.security.signing import (
    KEY_FILE,
    ModelSigner,
    model_signing_payload,
    verify_model_signature,
)

SHA = "ab" * 32


def test_key_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    first = ModelSigner.load_or_create(tmp_path / "data")
    mode = stat.S_IMODE((tmp_path / "data" / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    again = ModelSigner.load_or_create(tmp_path / "data")
    assert again.public_key_bytes() == first.public_key_bytes()
    assert len(first.public_key_bytes()) == 32


def test_signature_covers_sha_and_manifest(tmp_path: Path) -> None:
    signer = ModelSigner.load_or_create(tmp_path)
    manifest = {"loss": "mse", "weights": [{"name": "w", "shape": [2]}]}
    sig = signer.sign(SHA, manifest)
    verify_model_signature(signer.public_key_bytes(), SHA, manifest, sig)
    with pytest.raises(BadRequestError):
        verify_model_signature(signer.public_key_bytes(), "cd" * 32, manifest, sig)
    with pytest.raises(BadRequestError):
        verify_model_signature(signer.public_key_bytes(), SHA, {**manifest, "loss": "x"}, sig)
    with pytest.raises(BadRequestError):
        verify_model_signature(b"short", SHA, manifest, sig)


def test_payload_is_canonical_json_with_a_domain_tag() -> None:
    a = model_signing_payload(SHA, {"b": 1, "a": [1, 2]})
    b = model_signing_payload(SHA, {"a": [1, 2], "b": 1})
    assert a == b
    assert a == b"fedrt/model-version/v1\n" + SHA.encode() + b'\n{"a":[1,2],"b":1}'


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    ModelSigner.load_or_create(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(SigningKeyError, match="0600"):
        ModelSigner.load_or_create(tmp_path)


def test_garbage_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(b"not a key")
    os.chmod(path, 0o600)
    with pytest.raises(SigningKeyError, match="not a PEM"):
        ModelSigner.load_or_create(tmp_path)


def test_repr_does_not_leak_the_private_key(tmp_path: Path) -> None:
    signer = ModelSigner.load_or_create(tmp_path)
    assert "PRIVATE" not in repr(signer)
    assert repr(signer).startswith("ModelSigner(public_key=")
