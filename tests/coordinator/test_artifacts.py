"""Content-addressed blobs: atomic writes, dedup, limits, verification."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fedrt.coordinator.errors import (
    BadArtifactError,
    BadRequestError,
    CorruptArtifactError,
    NotFoundError,
)
from fedrt.coordinator.models import BlobStore
from fedrt.coordinator.models.blobs import check_sha256
from tests.coordinator.damage import damage, restore


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


def test_a_corrupt_file_is_refused_reported_once_and_served_again_when_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blobs = BlobStore(tmp_path)
    reports: list[tuple[str, str]] = []
    blobs.on_corrupt.append(lambda kind, sha: reports.append((kind, sha)))
    sha = blobs.put_bytes(b"model bytes" * 100)
    assert blobs.check(sha) == blobs.path(sha)
    good = damage(blobs.path(sha))
    for _ in range(3):  # every use refuses it; one log line, one report
        with pytest.raises(CorruptArtifactError):
            blobs.check(sha)
        with pytest.raises(CorruptArtifactError):
            blobs.read(sha)
    assert reports == [("model", sha)]
    assert caplog.text.count("is corrupt on disk") == 1
    assert blobs.verdict(sha).ok is False  # known bad for this state of the file
    restore(blobs.path(sha), good)
    assert blobs.verdict(sha).ok is None  # changed: to be hashed again
    assert blobs.read(sha) == good
    assert "verifies again" in caplog.text
    damage(blobs.path(sha))  # a new corruption is a new report
    with pytest.raises(CorruptArtifactError):
        blobs.check(sha, kind="optimizer_state")
    assert reports == [("model", sha), ("optimizer_state", sha)]


def test_a_verdict_holds_while_the_file_looks_the_same_and_expires(tmp_path: Path) -> None:
    now = [0.0]
    blobs = BlobStore(tmp_path, reverify_after_s=60.0, clock=lambda: now[0])
    sha = blobs.put_bytes(b"x" * 5000)
    blobs.check(sha)
    damage(blobs.path(sha), keep_stat=True)  # bit rot: size, mtime and inode unchanged
    assert blobs.check(sha) == blobs.path(sha)  # not hashed again: the cached verdict holds
    now[0] = 61.0
    with pytest.raises(CorruptArtifactError):
        blobs.check(sha)


def test_storing_the_same_bytes_again_heals_a_corrupt_copy(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    sha = blobs.put_bytes(b"payload" * 10)
    damage(blobs.path(sha))
    assert blobs.put_bytes(b"payload" * 10) == sha
    assert blobs.check(sha) == blobs.path(sha)
    assert blobs.read(sha) == b"payload" * 10
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(NotFoundError):
        blobs.check("0" * 64)
