"""Model artifacts in the store (store.artifacts), one conformance suite over every Store."""

from __future__ import annotations

import hashlib

import pytest

from fedrt.coordinator.errors import BadRequestError, CorruptArtifactError, NotFoundError
from fedrt.coordinator.store import Store
from fedrt.coordinator.store.postgres import PostgresStore

DATA = bytes(range(256)) * 4096  # 1 MiB, every byte value
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(each_store: Store) -> Store:
    return each_store


def test_an_artifact_is_kept_under_its_hash_once(store: Store) -> None:
    assert not store.has_artifact(SHA)
    store.put_artifact(SHA, DATA)
    store.put_artifact(SHA, DATA)  # content addressing: a second put changes nothing
    assert store.has_artifact(SHA)
    assert store.get_artifact(SHA) == DATA


def test_bytes_that_do_not_hash_to_the_name_are_refused(store: Store) -> None:
    with pytest.raises(BadRequestError):
        store.put_artifact(SHA, DATA[:-1])
    assert not store.has_artifact(SHA)
    with pytest.raises(NotFoundError):
        store.get_artifact(SHA)


def test_a_put_inside_a_failed_transaction_is_not_kept(store: Store) -> None:
    def fail_after_put() -> None:
        with store.transaction():
            store.put_artifact(SHA, DATA)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        fail_after_put()
    assert not store.has_artifact(SHA)


def test_a_row_changed_in_the_database_is_corrupt_not_served(postgres_url: str) -> None:
    import psycopg

    store = PostgresStore(postgres_url)
    try:
        store.put_artifact(SHA, DATA)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("UPDATE artifacts SET data = %s WHERE sha256 = %s", (b"x", SHA))
        with pytest.raises(CorruptArtifactError):
            store.get_artifact(SHA)
    finally:
        store.close()
