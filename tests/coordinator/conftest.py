"""Fixtures the coordinator tests share: a throwaway PostgreSQL (tests/support/postgres.py),
enrollment with a real Mosquitto (``enrolled_broker``), and ``each_store``, one fresh store
of every kind in turn (the conformance suites)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrt.coordinator.store import Store
from tests.coordinator.enrolled_broker import enrolled_broker
from tests.coordinator.store_conformance import STORE_KINDS, open_store
from tests.support.postgres import postgres_server, postgres_url


@pytest.fixture(params=STORE_KINDS)
def each_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(request.param, request, tmp_path)
    yield s
    s.close()


__all__ = ["each_store", "enrolled_broker", "postgres_server", "postgres_url"]
