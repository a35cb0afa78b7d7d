"""Fixtures the coordinator tests share: a throwaway PostgreSQL (tests/support/postgres.py)."""

from tests.support.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]
