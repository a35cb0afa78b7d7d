"""The coordinator service on PostgreSQL: rounds commit there, a bad store stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrt.coordinator.config import Secret, StoreConfig
from fedrt.coordinator.errors import StoreError
from fedrt.coordinator.service import CoordinatorService
from fedrt.coordinator.store.postgres import PostgresStore
from tests.coordinator.driver_harness import TASK, Fleet, pull_to_targets
from tests.coordinator.harness import make_config
from tests.support.process import free_port


def test_rounds_commit_on_postgres_and_survive_a_restart(tmp_path: Path, postgres_url: str) -> None:
    store = StoreConfig(url=Secret(postgres_url))
    fleet = Fleet(3, pull_to_targets)
    fleet.open(tmp_path, store)
    assert isinstance(fleet.svc.store, PostgresStore)
    fleet.create_task(max_rounds=3)
    fleet.run_until(lambda: len(fleet.committed()) == 1)
    assert fleet.coordinator is not None
    fleet.coordinator.close()
    fleet.open(tmp_path, store)  # a restart: the rows come back from PostgreSQL
    fleet.run_until(fleet.done)
    versions = fleet.committed()
    assert len(versions) == 3
    assert fleet.svc.store.get_task(TASK).model_sha256 == versions[-1]
    assert not (tmp_path / "coordinator.sqlite3").exists()  # nothing went to SQLite
    fleet.coordinator.close()


def test_a_dead_store_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://fedrt:hunter2@127.0.0.1:{free_port()}/fedrt"
    config = make_config(tmp_path, store=StoreConfig(url=Secret(url)))
    with pytest.raises(StoreError, match="cannot open the store at postgresql://127") as info:
        CoordinatorService(config)
    assert "hunter2" not in str(info.value)
