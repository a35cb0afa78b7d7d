"""The SQLite schema of the coordinator store and the mapping of its rows to records."""

from __future__ import annotations

import json
from typing import Any

from fedrt.coordinator.errors import StoreError
from fedrt.coordinator.records import (
    DeviceRecord,
    EnrollmentTokenRecord,
    ModelRecord,
    ModelStatus,
    RoundRecord,
    RoundStatus,
    TaskRecord,
    TaskStatus,
)

SCHEMA_VERSION = 4
# Statements that bring a store of version N up to N + 1 (the schema below is the latest).
MIGRATIONS: dict[int, str] = {
    1: "ALTER TABLE rounds ADD COLUMN epsilon REAL; "
    "ALTER TABLE rounds ADD COLUMN noise_stddev REAL;",
    # Versions made before 3 have no saved optimizer state (NULL): they start fresh.
    2: "ALTER TABLE models ADD COLUMN optimizer_state_sha256 TEXT;",
    3: "",  # the leases and artifacts tables: SCHEMA creates them (IF NOT EXISTS)
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    sha256 TEXT PRIMARY KEY, task_id TEXT, parent_sha256 TEXT REFERENCES models(sha256),
    round_no INTEGER, status TEXT NOT NULL, size INTEGER NOT NULL, manifest TEXT NOT NULL,
    signature BLOB NOT NULL, created_at REAL NOT NULL, metrics TEXT NOT NULL,
    optimizer_state_sha256 TEXT);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, spec TEXT NOT NULL,
    model_sha256 TEXT NOT NULL REFERENCES models(sha256),
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    task_id TEXT NOT NULL REFERENCES tasks(task_id), round_no INTEGER NOT NULL,
    stage TEXT NOT NULL, status TEXT NOT NULL, model_sha256 TEXT NOT NULL,
    started_at REAL NOT NULL, ended_at REAL, deadline REAL,
    checked_in INTEGER NOT NULL, selected INTEGER NOT NULL, reporting INTEGER NOT NULL,
    dropped INTEGER NOT NULL, bytes_in INTEGER NOT NULL, result_sha256 TEXT,
    detail TEXT NOT NULL, epsilon REAL, noise_stddev REAL, PRIMARY KEY (task_id, round_no));
CREATE TABLE IF NOT EXISTS stages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, round_no INTEGER NOT NULL,
    stage TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL,
    FOREIGN KEY (task_id, round_no) REFERENCES rounds(task_id, round_no));
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, credential_hash TEXT NOT NULL, public_key BLOB NOT NULL,
    enrolled_at REAL NOT NULL, revoked_at REAL, last_seen REAL, labels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    token_hash TEXT PRIMARY KEY, created_at REAL NOT NULL, expires_at REAL NOT NULL,
    note TEXT NOT NULL, used_by TEXT, used_at REAL);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL REFERENCES tasks(task_id),
    round_no INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS task_state (
    task_id TEXT NOT NULL REFERENCES tasks(task_id), key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (task_id, key));
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, epoch INTEGER NOT NULL,
    expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (
    sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE INDEX IF NOT EXISTS metrics_by_task ON metrics(task_id, name);
CREATE INDEX IF NOT EXISTS stages_by_round ON stages(task_id, round_no);
"""

ROUND_COLS = (
    "task_id, round_no, stage, status, model_sha256, started_at, ended_at, deadline, "
    "checked_in, selected, reporting, dropped, bytes_in, result_sha256, detail, epsilon, "
    "noise_stddev"
)


def js(obj: Any) -> str:
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value is not JSON-serializable: {exc}") from None


def task_row(r: Any) -> TaskRecord:
    return TaskRecord(
        task_id=r[0], name=r[1], status=TaskStatus(r[2]), spec=json.loads(r[3]),
        model_sha256=r[4], created_at=r[5], updated_at=r[6],
    )  # fmt: skip


def round_values(x: RoundRecord) -> tuple[Any, ...]:
    return (
        x.task_id, x.round_no, x.stage, x.status.value, x.model_sha256, x.started_at,
        x.ended_at, x.deadline, x.checked_in, x.selected, x.reporting, x.dropped, x.bytes_in,
        x.result_sha256, js(x.detail), x.epsilon, x.noise_stddev,
    )  # fmt: skip


def round_row(r: Any) -> RoundRecord:
    return RoundRecord(
        task_id=r[0], round_no=r[1], stage=r[2], status=RoundStatus(r[3]), model_sha256=r[4],
        started_at=r[5], ended_at=r[6], deadline=r[7], checked_in=r[8], selected=r[9],
        reporting=r[10], dropped=r[11], bytes_in=r[12], result_sha256=r[13],
        detail=json.loads(r[14]), epsilon=r[15], noise_stddev=r[16],
    )  # fmt: skip


def device_row(r: Any) -> DeviceRecord:
    return DeviceRecord(
        device_id=r[0], credential_hash=r[1], public_key=bytes(r[2]), enrolled_at=r[3],
        revoked_at=r[4], last_seen=r[5], labels=json.loads(r[6]),
    )  # fmt: skip


def token_row(r: Any) -> EnrollmentTokenRecord:
    return EnrollmentTokenRecord(
        token_hash=r[0], created_at=r[1], expires_at=r[2], note=r[3], used_by=r[4], used_at=r[5]
    )


def model_row(r: Any) -> ModelRecord:
    return ModelRecord(
        sha256=r[0], task_id=r[1], parent_sha256=r[2], round_no=r[3],
        status=ModelStatus(r[4]), size=r[5], manifest=json.loads(r[6]),
        signature=bytes(r[7]), created_at=r[8], metrics=json.loads(r[9]),
        optimizer_state_sha256=r[10],
    )  # fmt: skip


__all__ = [
    "MIGRATIONS", "ROUND_COLS", "SCHEMA", "SCHEMA_VERSION", "device_row", "js", "model_row",
    "round_row", "round_values", "task_row", "token_row",
]  # fmt: skip
