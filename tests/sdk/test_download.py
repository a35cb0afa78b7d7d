"""download_model against a real loopback HTTP server: resume, verification, atomic swap."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.sdk.download import download_model, model_signing_payload
from fedrt.sdk.errors import (
    BadSignature,
    ChecksumMismatch,
    DownloadError,
    DownloadRefused,
    ModelRejected,
    SdkConfigError,
)
from tests.sdk.range_server import Blob, serve

BODY = bytes(range(256)) * 1000  # 256 kB, several read chunks
SHA = hashlib.sha256(BODY).hexdigest()
MANIFEST: dict[str, Any] = {"format_version": 1, "batch_size": 4, "weights": [{"name": "w"}]}
KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(
    sha: str = SHA, manifest: dict[str, Any] = MANIFEST, key: Ed25519PrivateKey = KEY
) -> bytes:
    return key.sign(model_signing_payload(sha, manifest))


def fetch(url: str, dest: Path, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "sha256": SHA,
        "signature": sign(),
        "public_key": PUB,
        "manifest": MANIFEST,
        "timeout_s": 10.0,
    }
    return download_model(url, dest, **(kwargs | overrides))


@pytest.fixture
def current(tmp_path: Path) -> Path:
    """The model the device runs now; every refused download must leave it untouched."""
    path = tmp_path / "models" / "model.tflite"
    path.parent.mkdir()
    path.write_bytes(b"the previous model")
    return path


def test_payload_matches_the_coordinators_signer() -> None:
    from fedrt.coordinator.security.signing import model_signing_payload as coordinator_payload

    assert model_signing_payload(SHA, MANIFEST) == coordinator_payload(SHA, MANIFEST)


def test_a_good_download_replaces_the_model(current: Path) -> None:
    blob = Blob(BODY)
    with serve(blob) as url:
        result = fetch(url, current)
    assert current.read_bytes() == BODY
    assert (result.fetched_bytes, result.resumed, result.already_present) == (
        len(BODY),
        False,
        False,
    )
    assert blob.ranges == [None]
    assert list(current.parent.iterdir()) == [current]  # no partial file left behind


def test_an_interrupted_download_resumes_with_range(current: Path) -> None:
    blob = Blob(BODY, cut_after=100_000)
    with serve(blob) as url:
        with pytest.raises(DownloadError, match="resumes next time"):
            fetch(url, current)
        assert current.read_bytes() == b"the previous model"
        blob.cut_after = None
        result = fetch(url, current)
    assert current.read_bytes() == BODY
    assert result.resumed
    assert result.fetched_bytes == len(BODY) - 100_000
    assert blob.ranges == [None, "bytes=100000-"]


def test_a_server_ignoring_range_restarts_cleanly(current: Path) -> None:
    blob = Blob(BODY, cut_after=50_000)
    with serve(blob) as url:
        with pytest.raises(DownloadError):
            fetch(url, current)
        blob.cut_after, blob.ignore_range = None, True
        result = fetch(url, current)
    assert current.read_bytes() == BODY
    assert not result.resumed
    assert result.fetched_bytes == len(BODY)


def test_same_model_is_not_fetched_again(current: Path) -> None:
    current.write_bytes(BODY)
    blob = Blob(BODY)
    with serve(blob) as url:
        result = fetch(url, current)
    assert result.already_present
    assert blob.ranges == []


def test_tampered_bytes_are_refused_and_the_old_model_kept(current: Path) -> None:
    tampered = bytearray(BODY)
    tampered[12345] ^= 0x01
    with serve(Blob(bytes(tampered))) as url, pytest.raises(ChecksumMismatch):
        fetch(url, current)
    assert current.read_bytes() == b"the previous model"
    assert list(current.parent.iterdir()) == [current]


def test_a_truncated_file_is_refused(current: Path) -> None:
    # The server sends a complete response of a truncated file: only the hash can tell.
    with serve(Blob(BODY[:-1000])) as url, pytest.raises(ChecksumMismatch):
        fetch(url, current)
    assert current.read_bytes() == b"the previous model"


@pytest.mark.parametrize(
    "overrides",
    [
        {"signature": sign(key=Ed25519PrivateKey.generate())},  # someone else's key
        {"signature": b"\x00" * 64},
        {"signature": b"short"},
        {"manifest": MANIFEST | {"batch_size": 8}},  # signed manifest altered
        {"sha256": hashlib.sha256(b"other").hexdigest()},  # hash swapped in the plan
    ],
)
def test_bad_signatures_are_refused_before_fetching(
    current: Path, overrides: dict[str, Any]
) -> None:
    blob = Blob(BODY)
    with serve(blob) as url, pytest.raises(BadSignature):
        fetch(url, current, **overrides)
    assert blob.ranges == []  # not a byte was requested
    assert current.read_bytes() == b"the previous model"


def test_rejections_share_one_base_class() -> None:
    assert issubclass(BadSignature, ModelRejected)
    assert issubclass(ChecksumMismatch, ModelRejected)


def test_http_errors_are_remote_errors(current: Path) -> None:
    with serve(Blob(BODY, status=404)) as url, pytest.raises(DownloadRefused) as info:
        fetch(url, current)
    assert info.value.status == 404
    assert current.read_bytes() == b"the previous model"


def test_size_limit(current: Path) -> None:
    with serve(Blob(BODY)) as url, pytest.raises(DownloadError, match="exceeds"):
        fetch(url, current, max_bytes=1000)
    assert current.read_bytes() == b"the previous model"


def test_unreachable_server_is_a_local_error(current: Path) -> None:
    with serve(Blob(BODY)) as url:
        pass  # the server is gone once the block ends
    with pytest.raises(DownloadError):
        fetch(url, current, timeout_s=2.0)


@pytest.mark.parametrize(
    "overrides",
    [{"sha256": "ABC"}, {"public_key": b"\x01" * 5}, {"max_bytes": 0}],
)
def test_bad_arguments_are_config_errors(current: Path, overrides: dict[str, Any]) -> None:
    with pytest.raises(SdkConfigError):
        fetch("http://127.0.0.1:9/model", current, **overrides)
    with pytest.raises(SdkConfigError):
        fetch("file:///etc/passwd", current)
