"""Record builders shared by the store tests (conformance suite and crash test)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedrt.coordinator.records import (
    DeviceRecord,
    ModelRecord,
    ModelStatus,
    RoundRecord,
    RoundStatus,
    TaskRecord,
    TaskStatus,
)
from fedrt.coordinator.store import MemoryStore, SqliteStore, Store
from fedrt.coordinator.store.postgres import PostgresStore

STORE_KINDS = ["sqlite", "memory", "postgres"]


def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh store of ``kind`` (PostgreSQL: the session's own server, a fresh database)."""
    if kind == "postgres":
        return PostgresStore(request.getfixturevalue("postgres_url"))
    return SqliteStore(tmp_path / "db.sqlite3") if kind == "sqlite" else MemoryStore()


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def model(tag: str, *, parent: str | None = None, task_id: str | None = None) -> ModelRecord:
    return ModelRecord(
        sha256=sha(tag),
        task_id=task_id,
        parent_sha256=parent,
        round_no=None,
        status=ModelStatus.PROMOTED if parent is None else ModelStatus.CANDIDATE,
        size=100,
        manifest={"format_version": 1, "tag": tag},
        signature=b"\x01" * 64,
        created_at=1.0,
    )


def task(task_id: str, model_sha: str, *, at: float = 10.0) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        name=f"task {task_id}",
        status=TaskStatus.CREATED,
        spec={"goal": 10},
        model_sha256=model_sha,
        created_at=at,
        updated_at=at,
    )


def round_(task_id: str, no: int, model_sha: str) -> RoundRecord:
    return RoundRecord(
        task_id=task_id,
        round_no=no,
        stage="check_in",
        status=RoundStatus.RUNNING,
        model_sha256=model_sha,
        started_at=100.0 + no,
    )


def device(device_id: str, *, at: float = 5.0) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        credential_hash="$7$1000$c2FsdA==$ZGlnZXN0",
        public_key=bytes(range(32)),
        enrolled_at=at,
    )
