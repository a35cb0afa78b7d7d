"""The in-memory twin of the SQLite store, for unit tests of the service and the driver."""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from fedrt.coordinator.errors import AuthError, ConflictError, NotFoundError, StoreError
from fedrt.coordinator.records import (
    AuditEntry,
    DeviceRecord,
    EnrollmentTokenRecord,
    LeaseRecord,
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
from fedrt.coordinator.store.artifacts import checked, intact
from fedrt.coordinator.store.base import Store, check_model_record, check_round_changes
from fedrt.coordinator.store.leases import check_ttl, claim_decision, lost

_R = TypeVar("_R")


class MemoryStore(Store):
    """Dicts of frozen records; a transaction snapshots them and restores on error."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._tasks: dict[str, TaskRecord] = {}
        self._rounds: dict[tuple[str, int], RoundRecord] = {}
        self._stages: list[StageRecord] = []
        self._devices: dict[str, DeviceRecord] = {}
        self._tokens: dict[str, EnrollmentTokenRecord] = {}
        self._models: dict[str, ModelRecord] = {}
        self._metrics: list[MetricRecord] = []
        self._audit: list[AuditEntry] = []
        self._state: dict[tuple[str, str], dict[str, Any]] = {}
        self._leases: dict[str, LeaseRecord] = {}
        self._artifacts: dict[str, bytes] = {}

    _STATE = (
        "_tasks", "_rounds", "_stages", "_devices", "_tokens", "_models", "_metrics", "_state",
        "_leases", "_artifacts",
    )  # fmt: skip

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
            # Records are immutable, so shallow copies of the containers are full snapshots.
            saved = {name: copy.copy(getattr(self, name)) for name in self._STATE}
            audit_len = len(self._audit)
            self._depth = 1
            try:
                yield
            except BaseException:
                for name, value in saved.items():
                    setattr(self, name, value)
                del self._audit[audit_len:]
                raise
            finally:
                self._depth = 0

    def close(self) -> None:
        pass

    # -- tasks
    def create_task(self, task: TaskRecord) -> None:
        with self.transaction():
            if task.task_id in self._tasks:
                raise ConflictError(f"task {task.task_id} already exists")
            self.get_model(task.model_sha256)
            self._tasks[task.task_id] = _frozen_copy(task)

    def get_task(self, task_id: str) -> TaskRecord:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise NotFoundError(f"no task {task_id}") from None

    def list_tasks(self) -> list[TaskRecord]:
        return sorted(self._tasks.values(), key=lambda t: (t.created_at, t.task_id))

    def set_task_status(self, task_id: str, status: TaskStatus, *, at: float) -> TaskRecord:
        with self.transaction():
            task = self.get_task(task_id)
            check_task_transition(task.status, status)
            new = dataclasses.replace(task, status=status, updated_at=at)
            self._tasks[task_id] = new
            return new

    def set_task_model(self, task_id: str, sha256: str, *, at: float) -> TaskRecord:
        with self.transaction():
            task = self.get_task(task_id)
            self.get_model(sha256)
            new = dataclasses.replace(task, model_sha256=sha256, updated_at=at)
            self._tasks[task_id] = new
            return new

    # -- rounds
    def create_round(self, rnd: RoundRecord) -> None:
        with self.transaction():
            self.get_task(rnd.task_id)
            key = (rnd.task_id, rnd.round_no)
            if key in self._rounds:
                raise ConflictError(f"round {rnd.round_no} of task {rnd.task_id} exists")
            self._rounds[key] = _frozen_copy(rnd)

    def get_round(self, task_id: str, round_no: int) -> RoundRecord:
        try:
            return self._rounds[(task_id, round_no)]
        except KeyError:
            raise NotFoundError(f"no round {round_no} of task {task_id}") from None

    def list_rounds(self, task_id: str) -> list[RoundRecord]:
        return sorted(
            (r for r in self._rounds.values() if r.task_id == task_id), key=lambda r: r.round_no
        )

    def update_round(self, task_id: str, round_no: int, **changes: Any) -> RoundRecord:
        changes = check_round_changes(changes)
        with self.transaction():
            rnd = self.get_round(task_id, round_no)
            new = _frozen_copy(dataclasses.replace(rnd, **changes))
            self._rounds[(task_id, round_no)] = new
            return new

    def append_stage(self, stage: StageRecord) -> None:
        with self.transaction():
            rnd = self.get_round(stage.task_id, stage.round_no)
            self._stages.append(_frozen_copy(stage))
            self._rounds[(rnd.task_id, rnd.round_no)] = dataclasses.replace(rnd, stage=stage.stage)

    def list_stages(self, task_id: str, round_no: int) -> list[StageRecord]:
        return [s for s in self._stages if (s.task_id, s.round_no) == (task_id, round_no)]

    # -- devices
    def add_device(self, device: DeviceRecord) -> None:
        with self.transaction():
            if device.device_id in self._devices:
                raise ConflictError(f"device {device.device_id} already exists")
            self._devices[device.device_id] = _frozen_copy(device)

    def get_device(self, device_id: str) -> DeviceRecord:
        try:
            return self._devices[device_id]
        except KeyError:
            raise NotFoundError(f"no device {device_id}") from None

    def list_devices(self) -> list[DeviceRecord]:
        return sorted(self._devices.values(), key=lambda d: (d.enrolled_at, d.device_id))

    def revoke_device(self, device_id: str, *, at: float) -> DeviceRecord:
        with self.transaction():
            device = self.get_device(device_id)
            if device.revoked:
                raise ConflictError(f"device {device_id} is already revoked")
            new = dataclasses.replace(device, revoked_at=at)
            self._devices[device_id] = new
            return new

    def touch_device(self, device_id: str, *, at: float) -> None:
        with self.transaction():
            device = self.get_device(device_id)
            self._devices[device_id] = dataclasses.replace(device, last_seen=at)

    def add_enrollment_token(self, token: EnrollmentTokenRecord) -> None:
        with self.transaction():
            if token.token_hash in self._tokens:
                raise ConflictError("enrollment token already exists")
            self._tokens[token.token_hash] = token

    def consume_enrollment_token(
        self, token_hash: str, *, device_id: str, at: float
    ) -> EnrollmentTokenRecord:
        with self.transaction():
            token = self._tokens.get(token_hash)
            if token is None or token.used_by is not None or at >= token.expires_at:
                raise AuthError("enrollment token is unknown, used or expired")
            new = dataclasses.replace(token, used_by=device_id, used_at=at)
            self._tokens[token_hash] = new
            return new

    def list_enrollment_tokens(self) -> list[EnrollmentTokenRecord]:
        return sorted(self._tokens.values(), key=lambda t: (t.created_at, t.token_hash))

    # -- models
    def add_model(self, model: ModelRecord) -> None:
        check_model_record(model)
        with self.transaction():
            if model.sha256 in self._models:
                raise ConflictError(f"model {model.sha256} already exists")
            if model.task_id is not None:
                self.get_task(model.task_id)
            if model.parent_sha256 is not None:
                self.get_model(model.parent_sha256)
            self._models[model.sha256] = _frozen_copy(model)

    def get_model(self, sha256: str) -> ModelRecord:
        try:
            return self._models[sha256]
        except KeyError:
            raise NotFoundError(f"no model {sha256}") from None

    def list_models(self, task_id: str | None = None) -> list[ModelRecord]:
        found = (m for m in self._models.values() if task_id is None or m.task_id == task_id)
        return sorted(found, key=lambda m: (m.created_at, m.sha256))

    def set_model_status(self, sha256: str, status: ModelStatus) -> ModelRecord:
        with self.transaction():
            model = self.get_model(sha256)
            check_model_transition(model.status, status)
            new = dataclasses.replace(model, status=status)
            self._models[sha256] = new
            return new

    def set_model_metrics(self, sha256: str, metrics: dict[str, Any]) -> ModelRecord:
        with self.transaction():
            model = self.get_model(sha256)
            new = _frozen_copy(dataclasses.replace(model, metrics=metrics))
            self._models[sha256] = new
            return new

    # -- metrics
    def add_metric(self, metric: MetricRecord) -> None:
        with self.transaction():
            self.get_task(metric.task_id)
            self._metrics.append(_frozen_copy(metric))

    def list_metrics(self, task_id: str, name: str | None = None) -> list[MetricRecord]:
        found = [
            m for m in self._metrics if m.task_id == task_id and (name is None or m.name == name)
        ]
        return sorted(found, key=lambda m: (m.round_no, m.at))

    # -- driver state
    def save_task_state(self, task_id: str, key: str, value: dict[str, Any]) -> None:
        with self.transaction():
            self.get_task(task_id)
            self._state[(task_id, key)] = _json_copy(value)

    def load_task_state(self, task_id: str, key: str) -> dict[str, Any] | None:
        value = self._state.get((task_id, key))
        return None if value is None else _json_copy(value)

    def delete_task_state(self, task_id: str, keys: Sequence[str]) -> None:
        with self.transaction():
            for key in keys:
                self._state.pop((task_id, key), None)

    # -- audit
    def append_audit(self, entry: AuditEntry) -> AuditEntry:
        with self.transaction():
            seq = self._audit[-1].seq + 1 if self._audit else 1
            new = _frozen_copy(dataclasses.replace(entry, seq=seq))
            self._audit.append(new)
            return new

    def list_audit(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEntry]:
        return [e for e in self._audit if e.seq > after_seq][: max(limit, 0)]

    # -- artifacts
    def put_artifact(self, sha256: str, data: bytes) -> None:
        with self.transaction():
            self._artifacts.setdefault(sha256, bytes(checked(sha256, data)))

    def get_artifact(self, sha256: str) -> bytes:
        data = self._artifacts.get(sha256)
        if data is None:
            raise NotFoundError(f"no artifact {sha256} in the store")
        return intact(sha256, data)

    def has_artifact(self, sha256: str) -> bool:
        return sha256 in self._artifacts

    # -- leases
    def claim_lease(
        self, name: str, owner: str, *, now: float, ttl: float, fresh: bool = False
    ) -> LeaseRecord | None:
        check_ttl(ttl)
        with self.transaction():
            held = self._leases.get(name)
            lease = claim_decision(held, name, owner, now=now, ttl=ttl, fresh=fresh)
            if lease is not None:
                self._leases[name] = lease
            return lease

    def renew_lease(self, lease: LeaseRecord, *, now: float, ttl: float) -> LeaseRecord:
        check_ttl(ttl)
        with self.transaction():
            held = self._leases.get(lease.name)
            if held is None or (held.owner, held.epoch) != (lease.owner, lease.epoch):
                raise lost(lease)
            self._leases[lease.name] = new = dataclasses.replace(held, expires_at=now + ttl)
            return new

    def release_lease(self, lease: LeaseRecord) -> None:
        with self.transaction():
            held = self._leases.get(lease.name)
            if held is not None and (held.owner, held.epoch) == (lease.owner, lease.epoch):
                self._leases[lease.name] = dataclasses.replace(held, expires_at=0.0)

    def drop_lease(self, lease: LeaseRecord) -> None:
        with self.transaction():
            held = self._leases.get(lease.name)
            if held is not None and (held.owner, held.epoch) == (lease.owner, lease.epoch):
                del self._leases[lease.name]

    def list_leases(self) -> list[LeaseRecord]:
        return [self._leases[k] for k in sorted(self._leases)]


def _json_copy(value: dict[str, Any]) -> dict[str, Any]:
    try:
        out = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value is not JSON-serializable: {exc}") from None
    assert isinstance(out, dict)
    return out


def _frozen_copy(record: _R) -> _R:
    """Round-trip JSON fields as SQLite does, so both stores accept and return the same."""
    changes = {}
    for fld in dataclasses.fields(record):  # type: ignore[arg-type]
        value = getattr(record, fld.name)
        if isinstance(value, dict):
            try:
                changes[fld.name] = json.loads(json.dumps(value, allow_nan=False))
            except (TypeError, ValueError) as exc:
                raise StoreError(f"value is not JSON-serializable: {exc}") from None
    return dataclasses.replace(record, **changes)  # type: ignore[type-var]


__all__ = ["MemoryStore"]
