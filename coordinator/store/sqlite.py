"""The SQLite (WAL) implementation of the coordinator store."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedrt.coordinator.errors import AuthError, ConflictError, NotFoundError, StoreError
from fedrt.coordinator.records import (
    AuditEntry,
    DeviceRecord,
    EnrollmentTokenRecord,
    MetricRecord,
    ModelRecord,
    ModelStatus,
    RoundRecord,
    StageRecord,
    TaskRecord,
    TaskStatus,
    check_model_transition,
    check_task_transition,
)
from fedrt.coordinator.store.artifacts import SqlArtifacts
from fedrt.coordinator.store.base import Store, check_model_record, check_round_changes
from fedrt.coordinator.store.leases import SqlLeases
from fedrt.coordinator.store.sqlite_rows import (
    MIGRATIONS,
    ROUND_COLS,
    SCHEMA,
    SCHEMA_VERSION,
    device_row,
    js,
    model_row,
    round_row,
    round_values,
    task_row,
    token_row,
)


class SqliteStore(SqlLeases, SqlArtifacts, Store):
    """One connection in WAL mode; each outermost transaction is ``BEGIN IMMEDIATE``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are ours, explicit, and never implicit.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 5000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: cannot enable WAL (got {mode})")
            # FULL: a committed decision survives power loss, not only a killed process.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION) and version not in MIGRATIONS:
                raise StoreError(
                    f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}"
                )
            # An older store is brought up to date step by step, all in the same transaction.
            steps = "".join(MIGRATIONS[v] for v in range(version, SCHEMA_VERSION) if version)
            # One script, one transaction: a crash here leaves either no schema or all of it.
            self._db.executescript(
                f"BEGIN IMMEDIATE; {steps} {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin transaction: {exc}") from None
            self._depth = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"commit failed: {exc}") from None
            finally:
                self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row | tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.IntegrityError as exc:
            raise ConflictError(str(exc)) from None
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from None

    # -- tasks
    def create_task(self, task: TaskRecord) -> None:
        with self.transaction():
            if self._q("SELECT 1 FROM tasks WHERE task_id = ?", (task.task_id,)):
                raise ConflictError(f"task {task.task_id} already exists")
            self.get_model(task.model_sha256)
            self._q(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (task.task_id, task.name, task.status.value, js(task.spec),
                 task.model_sha256, task.created_at, task.updated_at),
            )  # fmt: skip

    def get_task(self, task_id: str) -> TaskRecord:
        rows = self._q("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        if not rows:
            raise NotFoundError(f"no task {task_id}")
        return task_row(rows[0])

    def list_tasks(self) -> list[TaskRecord]:
        return [task_row(r) for r in self._q("SELECT * FROM tasks ORDER BY created_at, task_id")]

    def set_task_status(self, task_id: str, status: TaskStatus, *, at: float) -> TaskRecord:
        with self.transaction():
            check_task_transition(self.get_task(task_id).status, status)
            self._q(
                "UPDATE tasks SET status = ?, updated_at = ? WHERE task_id = ?",
                (status.value, at, task_id),
            )
            return self.get_task(task_id)

    def set_task_model(self, task_id: str, sha256: str, *, at: float) -> TaskRecord:
        with self.transaction():
            self.get_task(task_id)
            self.get_model(sha256)
            self._q(
                "UPDATE tasks SET model_sha256 = ?, updated_at = ? WHERE task_id = ?",
                (sha256, at, task_id),
            )
            return self.get_task(task_id)

    # -- rounds
    def create_round(self, rnd: RoundRecord) -> None:
        with self.transaction():
            self.get_task(rnd.task_id)
            if self._q(
                "SELECT 1 FROM rounds WHERE task_id = ? AND round_no = ?",
                (rnd.task_id, rnd.round_no),
            ):
                raise ConflictError(f"round {rnd.round_no} of task {rnd.task_id} exists")
            self._q(
                f"INSERT INTO rounds ({ROUND_COLS}) VALUES ({', '.join('?' * 17)})",  # noqa: S608
                round_values(rnd),
            )

    def get_round(self, task_id: str, round_no: int) -> RoundRecord:
        rows = self._q(
            f"SELECT {ROUND_COLS} FROM rounds WHERE task_id = ? AND round_no = ?",  # noqa: S608
            (task_id, round_no),
        )
        if not rows:
            raise NotFoundError(f"no round {round_no} of task {task_id}")
        return round_row(rows[0])

    def list_rounds(self, task_id: str) -> list[RoundRecord]:
        rows = self._q(
            f"SELECT {ROUND_COLS} FROM rounds WHERE task_id = ? ORDER BY round_no",  # noqa: S608
            (task_id,),
        )
        return [round_row(r) for r in rows]

    def update_round(self, task_id: str, round_no: int, **changes: Any) -> RoundRecord:
        changes = check_round_changes(changes)
        with self.transaction():
            rnd = self.get_round(task_id, round_no)
            new = dataclasses.replace(rnd, **changes)
            self._q(
                "UPDATE rounds SET stage=?, status=?, ended_at=?, deadline=?, checked_in=?,"
                " selected=?, reporting=?, dropped=?, bytes_in=?, result_sha256=?, detail=?,"
                " epsilon=?, noise_stddev=? WHERE task_id = ? AND round_no = ?",
                (new.stage, new.status.value, new.ended_at, new.deadline, new.checked_in,
                 new.selected, new.reporting, new.dropped, new.bytes_in, new.result_sha256,
                 js(new.detail), new.epsilon, new.noise_stddev, task_id, round_no),
            )  # fmt: skip
            return new

    def append_stage(self, stage: StageRecord) -> None:
        with self.transaction():
            self.get_round(stage.task_id, stage.round_no)
            self._q(
                "INSERT INTO stages (task_id, round_no, stage, at, detail) VALUES (?, ?, ?, ?, ?)",
                (stage.task_id, stage.round_no, stage.stage, stage.at, js(stage.detail)),
            )
            self._q(
                "UPDATE rounds SET stage = ? WHERE task_id = ? AND round_no = ?",
                (stage.stage, stage.task_id, stage.round_no),
            )

    def list_stages(self, task_id: str, round_no: int) -> list[StageRecord]:
        rows = self._q(
            "SELECT task_id, round_no, stage, at, detail FROM stages"
            " WHERE task_id = ? AND round_no = ? ORDER BY id",
            (task_id, round_no),
        )
        return [
            StageRecord(task_id=r[0], round_no=r[1], stage=r[2], at=r[3], detail=json.loads(r[4]))
            for r in rows
        ]

    # -- devices
    def add_device(self, device: DeviceRecord) -> None:
        with self.transaction():
            if self._q("SELECT 1 FROM devices WHERE device_id = ?", (device.device_id,)):
                raise ConflictError(f"device {device.device_id} already exists")
            self._q(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device.device_id, device.credential_hash, device.public_key,
                 device.enrolled_at, device.revoked_at, device.last_seen, js(device.labels)),
            )  # fmt: skip

    def get_device(self, device_id: str) -> DeviceRecord:
        rows = self._q("SELECT * FROM devices WHERE device_id = ?", (device_id,))
        if not rows:
            raise NotFoundError(f"no device {device_id}")
        return device_row(rows[0])

    def list_devices(self) -> list[DeviceRecord]:
        return [
            device_row(r) for r in self._q("SELECT * FROM devices ORDER BY enrolled_at, device_id")
        ]

    def revoke_device(self, device_id: str, *, at: float) -> DeviceRecord:
        with self.transaction():
            if self.get_device(device_id).revoked:
                raise ConflictError(f"device {device_id} is already revoked")
            self._q("UPDATE devices SET revoked_at = ? WHERE device_id = ?", (at, device_id))
            return self.get_device(device_id)

    def touch_device(self, device_id: str, *, at: float) -> None:
        with self.transaction():
            self.get_device(device_id)
            self._q("UPDATE devices SET last_seen = ? WHERE device_id = ?", (at, device_id))

    def add_enrollment_token(self, token: EnrollmentTokenRecord) -> None:
        with self.transaction():
            if self._q("SELECT 1 FROM enrollment_tokens WHERE token_hash = ?", (token.token_hash,)):
                raise ConflictError("enrollment token already exists")
            self._q(
                "INSERT INTO enrollment_tokens VALUES (?, ?, ?, ?, ?, ?)",
                (token.token_hash, token.created_at, token.expires_at, token.note,
                 token.used_by, token.used_at),
            )  # fmt: skip

    def consume_enrollment_token(
        self, token_hash: str, *, device_id: str, at: float
    ) -> EnrollmentTokenRecord:
        with self.transaction():
            rows = self._q("SELECT * FROM enrollment_tokens WHERE token_hash = ?", (token_hash,))
            token = token_row(rows[0]) if rows else None
            if token is None or token.used_by is not None or at >= token.expires_at:
                raise AuthError("enrollment token is unknown, used or expired")
            self._q(
                "UPDATE enrollment_tokens SET used_by = ?, used_at = ? WHERE token_hash = ?",
                (device_id, at, token_hash),
            )
            return token_row(self._q("SELECT * FROM enrollment_tokens WHERE token_hash = ?",
                                  (token_hash,))[0])  # fmt: skip

    def list_enrollment_tokens(self) -> list[EnrollmentTokenRecord]:
        rows = self._q("SELECT * FROM enrollment_tokens ORDER BY created_at, token_hash")
        return [token_row(r) for r in rows]

    # -- models
    def add_model(self, model: ModelRecord) -> None:
        check_model_record(model)
        with self.transaction():
            if self._q("SELECT 1 FROM models WHERE sha256 = ?", (model.sha256,)):
                raise ConflictError(f"model {model.sha256} already exists")
            if model.task_id is not None:
                self.get_task(model.task_id)
            if model.parent_sha256 is not None:
                self.get_model(model.parent_sha256)
            self._q(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model.sha256, model.task_id, model.parent_sha256, model.round_no,
                 model.status.value, model.size, js(model.manifest), model.signature,
                 model.created_at, js(model.metrics), model.optimizer_state_sha256),
            )  # fmt: skip

    def get_model(self, sha256: str) -> ModelRecord:
        rows = self._q("SELECT * FROM models WHERE sha256 = ?", (sha256,))
        if not rows:
            raise NotFoundError(f"no model {sha256}")
        return model_row(rows[0])

    def list_models(self, task_id: str | None = None) -> list[ModelRecord]:
        if task_id is None:
            rows = self._q("SELECT * FROM models ORDER BY created_at, sha256")
        else:
            rows = self._q(
                "SELECT * FROM models WHERE task_id = ? ORDER BY created_at, sha256", (task_id,)
            )
        return [model_row(r) for r in rows]

    def set_model_status(self, sha256: str, status: ModelStatus) -> ModelRecord:
        with self.transaction():
            check_model_transition(self.get_model(sha256).status, status)
            self._q("UPDATE models SET status = ? WHERE sha256 = ?", (status.value, sha256))
            return self.get_model(sha256)

    def set_model_metrics(self, sha256: str, metrics: dict[str, Any]) -> ModelRecord:
        with self.transaction():
            self.get_model(sha256)
            self._q("UPDATE models SET metrics = ? WHERE sha256 = ?", (js(metrics), sha256))
            return self.get_model(sha256)

    # -- metrics
    def add_metric(self, metric: MetricRecord) -> None:
        with self.transaction():
            self.get_task(metric.task_id)
            self._q(
                "INSERT INTO metrics (task_id, round_no, name, value, at) VALUES (?, ?, ?, ?, ?)",
                (metric.task_id, metric.round_no, metric.name, metric.value, metric.at),
            )

    def list_metrics(self, task_id: str, name: str | None = None) -> list[MetricRecord]:
        sql = "SELECT task_id, round_no, name, value, at FROM metrics WHERE task_id = ?"
        args: tuple[Any, ...] = (task_id,)
        if name is not None:
            sql, args = sql + " AND name = ?", (task_id, name)
        rows = self._q(sql + " ORDER BY round_no, at, id", args)
        return [
            MetricRecord(task_id=r[0], round_no=r[1], name=r[2], value=r[3], at=r[4]) for r in rows
        ]

    # -- driver state
    def save_task_state(self, task_id: str, key: str, value: dict[str, Any]) -> None:
        with self.transaction():
            self.get_task(task_id)
            self._q(
                "INSERT INTO task_state VALUES (?, ?, ?)"
                " ON CONFLICT (task_id, key) DO UPDATE SET value = excluded.value",
                (task_id, key, js(value)),
            )

    def load_task_state(self, task_id: str, key: str) -> dict[str, Any] | None:
        rows = self._q("SELECT value FROM task_state WHERE task_id = ? AND key = ?", (task_id, key))
        if not rows:
            return None
        value = json.loads(rows[0][0])
        assert isinstance(value, dict)
        return value

    def delete_task_state(self, task_id: str, keys: Sequence[str]) -> None:
        with self.transaction():
            for key in keys:
                self._q("DELETE FROM task_state WHERE task_id = ? AND key = ?", (task_id, key))

    # -- audit
    def append_audit(self, entry: AuditEntry) -> AuditEntry:
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                (entry.at, entry.actor, entry.action, entry.subject, js(entry.detail)),
            )
            assert cur.lastrowid is not None
            return AuditEntry(
                seq=cur.lastrowid, at=entry.at, actor=entry.actor, action=entry.action,
                subject=entry.subject, detail=json.loads(js(entry.detail)),
            )  # fmt: skip

    def list_audit(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEntry]:
        rows = self._q(
            "SELECT seq, at, actor, action, subject, detail FROM audit WHERE seq > ?"
            " ORDER BY seq LIMIT ?",
            (after_seq, max(limit, 0)),
        )
        return [
            AuditEntry(seq=r[0], at=r[1], actor=r[2], action=r[3], subject=r[4],
                       detail=json.loads(r[5]))
            for r in rows
        ]  # fmt: skip


__all__ = ["SCHEMA_VERSION", "SqliteStore"]
