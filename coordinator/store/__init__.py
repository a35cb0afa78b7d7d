"""Persistence: the ``Store`` interface and its SQLite, PostgreSQL and in-memory implementations.

Owns every row the coordinator keeps (``records``) and the transactions around them; one
conformance suite (tests/coordinator/store_conformance.py) runs against each implementation.
May import: the floor (``errors``, ``records``). Inside the package, modules import each
other by module path; this facade is for callers outside the coordinator.
"""

from fedrt.coordinator.store.base import Store
from fedrt.coordinator.store.memory import MemoryStore
from fedrt.coordinator.store.postgres import PostgresStore
from fedrt.coordinator.store.sqlite import SqliteStore

__all__ = ["MemoryStore", "PostgresStore", "SqliteStore", "Store"]
