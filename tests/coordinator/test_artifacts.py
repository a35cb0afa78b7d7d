"""Content-addressed blobs: atomic writes, dedup, limits, verification."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fedrt.coordinator.artifacts import BlobStore, check_sha256
from fedrt.coordinator.errors import BadArtifactError, BadRequestError, NotFoundError


def test_put_and_read_back_by_sha(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    sha = blobs.put_bytes(b"hello")
    assert sha == hashlib.sha256(b"hello").hexdigest()
    assert blobs.read(sha) == b"hello"
    assert blobs.size(sha) == 5
    assert blobs.verify(sha)
    assert blobs.put_bytes(b"hello") == sha  # same content, same name, no error
    assert not os.access(blobs.path(sha), os.W_OK) or os.getuid() == 0


def test_streamed_writer_checks_expected_sha_and_limit(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with blobs.writer(max_bytes=100) as writer:
        writer.write(b"a" * 50)
        with pytest.raises(BadArtifactError, match="does not match"):
            writer.commit(expected_sha256="0" * 64)
    with blobs.writer(max_bytes=10) as writer, pytest.raises(BadArtifactError, match="limit"):
        writer.write(b"b" * 11)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "sha256").iterdir()) == []


def test_missing_and_malformed_names(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with pytest.raises(NotFoundError):
        blobs.read("0" * 64)
    assert not blobs.verify("0" * 64)
    for bad in ["../etc/passwd", "A" * 64, "0" * 63, ""]:
        with pytest.raises(BadRequestError):
            check_sha256(bad)
        with pytest.raises(BadRequestError):
            blobs.path(bad)


def test_corruption_is_detected_and_partials_cleaned(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    sha = blobs.put_bytes(b"payload")
    path = blobs.path(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    assert not blobs.verify(sha)
    (tmp_path / "tmp" / "dead.part").write_bytes(b"left by a crash")
    BlobStore(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []
