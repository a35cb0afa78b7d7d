"""Artifacts shared through the store (models.blobs with a mirror): what one instance writes,
another instance with its own disk reads, verified, and then holds in its cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedrt.coordinator.errors import CorruptArtifactError, NotFoundError
from fedrt.coordinator.models.blobs import BlobStore
from fedrt.coordinator.store import MemoryStore

DATA = b"model bytes " * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def test_an_artifact_written_on_one_instance_is_read_on_another(tmp_path: Path) -> None:
    store = MemoryStore()
    one = BlobStore(tmp_path / "one", mirror=store)
    two = BlobStore(tmp_path / "two", mirror=store)
    assert one.put_bytes(DATA) == SHA
    assert store.get_artifact(SHA) == DATA
    assert not two.path(SHA).exists()
    assert two.has(SHA)
    assert two.size(SHA) == len(DATA)
    assert two.read(SHA) == DATA
    assert two.check(SHA) == two.path(SHA)  # now in two's cache
    assert two.path(SHA).read_bytes() == DATA


def test_an_artifact_nobody_stored_is_not_found(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "one", mirror=MemoryStore())
    assert not blobs.has(SHA)
    with pytest.raises(NotFoundError):
        blobs.read(SHA)


def test_a_corrupt_copy_in_the_store_is_never_cached(tmp_path: Path) -> None:
    store = MemoryStore()
    BlobStore(tmp_path / "one", mirror=store).put_bytes(DATA)
    store._artifacts[SHA] = b"rotten"  # what a damaged row returns
    two = BlobStore(tmp_path / "two", mirror=store)
    with pytest.raises(CorruptArtifactError):
        two.read(SHA)
    assert not two.path(SHA).exists()
