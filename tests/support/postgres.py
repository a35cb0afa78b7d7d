"""A throwaway PostgreSQL cluster for tests (``fedrt.benchmarks.postgres``) on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fedrt.benchmarks.postgres import PostgresServer, find_bin_dir, start_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One cluster for the whole run (initdb takes seconds); skipped where not installed."""
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs the postgresql package)")
    with start_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database of its own for one test."""
    with postgres_server.database() as url:
        yield url


__all__ = [
    "PostgresServer", "find_bin_dir", "postgres_server", "postgres_url", "start_postgres",
]  # fmt: skip
