"""The coordinator's repository interface; SQLite, PostgreSQL and in-memory stores share it.

Every method is atomic on its own; ``transaction()`` groups several calls so that they all
happen or none does (nested blocks join the outer one). Calls that would break an invariant
(duplicate id, unknown id, illegal status move, reused enrollment token) raise a typed
``CoordinatorError`` and change nothing. The audit log is append-only: there is no method
to change or remove an entry, and the SQLite and PostgreSQL schemas refuse it too.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.records import (
    ROUND_MUTABLE,
    AuditEntry,
    DeviceRecord,
    EnrollmentTokenRecord,
    LeaseRecord,
    MetricRecord,
    ModelRecord,
    ModelStatus,
    RoundRecord,
    RoundStatus,
    StageRecord,
    TaskRecord,
    TaskStatus,
)


class Store(ABC):
    """Persistent state of the coordinator (see the module docstring for the guarantees)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """All calls inside the block commit together, or none does if it raises."""

    @abstractmethod
    def close(self) -> None: ...

    # -- tasks
    @abstractmethod
    def create_task(self, task: TaskRecord) -> None: ...

    @abstractmethod
    def get_task(self, task_id: str) -> TaskRecord: ...

    @abstractmethod
    def list_tasks(self) -> list[TaskRecord]:
        """Oldest first."""

    @abstractmethod
    def set_task_status(self, task_id: str, status: TaskStatus, *, at: float) -> TaskRecord: ...

    @abstractmethod
    def set_task_model(self, task_id: str, sha256: str, *, at: float) -> TaskRecord:
        """Point the task at a stored model (the one its next round starts from)."""

    # -- rounds and their stage transitions
    @abstractmethod
    def create_round(self, rnd: RoundRecord) -> None: ...

    @abstractmethod
    def get_round(self, task_id: str, round_no: int) -> RoundRecord: ...

    @abstractmethod
    def list_rounds(self, task_id: str) -> list[RoundRecord]:
        """By round number."""

    @abstractmethod
    def update_round(self, task_id: str, round_no: int, **changes: Any) -> RoundRecord:
        """Change fields in ``ROUND_MUTABLE``; others are a ``BadRequestError``."""

    @abstractmethod
    def append_stage(self, stage: StageRecord) -> None:
        """Record a stage transition and make it the round's current stage."""

    @abstractmethod
    def list_stages(self, task_id: str, round_no: int) -> list[StageRecord]: ...

    # -- devices and enrollment
    @abstractmethod
    def add_device(self, device: DeviceRecord) -> None: ...

    @abstractmethod
    def get_device(self, device_id: str) -> DeviceRecord: ...

    @abstractmethod
    def list_devices(self) -> list[DeviceRecord]:
        """By enrollment time."""

    @abstractmethod
    def revoke_device(self, device_id: str, *, at: float) -> DeviceRecord: ...

    @abstractmethod
    def touch_device(self, device_id: str, *, at: float) -> None:
        """Note that the device was heard from at ``at``."""

    @abstractmethod
    def add_enrollment_token(self, token: EnrollmentTokenRecord) -> None: ...

    @abstractmethod
    def consume_enrollment_token(
        self, token_hash: str, *, device_id: str, at: float
    ) -> EnrollmentTokenRecord:
        """Mark a token used; ``AuthError`` if unknown, used or expired (indistinguishably)."""

    @abstractmethod
    def list_enrollment_tokens(self) -> list[EnrollmentTokenRecord]: ...

    # -- model versions
    @abstractmethod
    def add_model(self, model: ModelRecord) -> None:
        """Store a version with all its fields, ``optimizer_state_sha256`` included (a
        malformed one is a ``BadRequestError``); a version never changes but for its status
        and metrics."""

    @abstractmethod
    def get_model(self, sha256: str) -> ModelRecord: ...

    @abstractmethod
    def list_models(self, task_id: str | None = None) -> list[ModelRecord]:
        """Oldest first; all models, or those of one task."""

    @abstractmethod
    def set_model_status(self, sha256: str, status: ModelStatus) -> ModelRecord: ...

    @abstractmethod
    def set_model_metrics(self, sha256: str, metrics: dict[str, Any]) -> ModelRecord: ...

    # -- metrics
    @abstractmethod
    def add_metric(self, metric: MetricRecord) -> None: ...

    @abstractmethod
    def list_metrics(self, task_id: str, name: str | None = None) -> list[MetricRecord]:
        """By round, then time."""

    # -- driver state (optimizer state, in-flight round bookkeeping), JSON per (task, key)
    @abstractmethod
    def save_task_state(self, task_id: str, key: str, value: dict[str, Any]) -> None:
        """Replace the value under (task, key); large binary state belongs in the blob store,
        referenced here by sha256."""

    @abstractmethod
    def load_task_state(self, task_id: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def delete_task_state(self, task_id: str, keys: Sequence[str]) -> None:
        """Remove the values under (task, key) for each of ``keys``; a missing one is no
        error."""

    # -- audit
    @abstractmethod
    def append_audit(self, entry: AuditEntry) -> AuditEntry:
        """Append and return the entry with its ``seq`` (strictly increasing)."""

    @abstractmethod
    def list_audit(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEntry]: ...

    # -- model artifacts, content-addressed (``store.artifacts``; instances cache them on disk)
    @abstractmethod
    def put_artifact(self, sha256: str, data: bytes) -> None:
        """Keep ``data`` under its sha256 (``BadRequestError`` if it does not hash to it); a
        no-op when already there."""

    @abstractmethod
    def get_artifact(self, sha256: str) -> bytes:
        """The bytes (``NotFoundError``; ``CorruptArtifactError`` if they no longer hash to
        their name)."""

    @abstractmethod
    def has_artifact(self, sha256: str) -> bool: ...

    # -- leases (which coordinator instance owns which work; ``store.leases``)
    @abstractmethod
    def claim_lease(
        self, name: str, owner: str, *, now: float, ttl: float, fresh: bool = False
    ) -> LeaseRecord | None:
        """Take or extend the lease ``name`` for ``ttl`` seconds: granted when it is free,
        expired, or already ``owner``'s; None while another owner holds it. The epoch grows
        when it changes hands, and on a ``fresh`` claim (a new process of the same owner)."""

    @abstractmethod
    def renew_lease(self, lease: LeaseRecord, *, now: float, ttl: float) -> LeaseRecord:
        """Extend a lease still held as (owner, epoch), else ``LeaseLost``. Inside a
        transaction it fences the other writes: they commit only if the lease is still ours."""

    @abstractmethod
    def release_lease(self, lease: LeaseRecord) -> None:
        """Let the lease go now (a no-op if it already changed hands)."""

    @abstractmethod
    def drop_lease(self, lease: LeaseRecord) -> None:
        """Delete the lease's row if ``lease`` still holds it (else a no-op). Only for names
        never claimed again (a round's cohort leases): a new row would restart at epoch 1."""

    @abstractmethod
    def list_leases(self) -> list[LeaseRecord]:
        """By name."""


def check_model_record(model: ModelRecord) -> None:
    """``BadRequestError`` unless the record's blob references are well formed."""
    state = model.optimizer_state_sha256
    if state is not None and not (
        isinstance(state, str) and len(state) == 64 and all(c in _HEX for c in state)
    ):
        raise BadRequestError(f"optimizer_state_sha256 is not a sha256: {state!r}"[:120])


_HEX = frozenset("0123456789abcdef")


def check_round_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate ``update_round`` keyword arguments; return them with ``status`` as an enum."""
    bad = sorted(set(changes) - ROUND_MUTABLE)
    if bad:
        raise BadRequestError(f"round fields cannot be changed: {', '.join(bad)}")
    out = dict(changes)
    if "status" in out:
        try:
            out["status"] = RoundStatus(out["status"])
        except ValueError:
            raise BadRequestError(f"unknown round status {out['status']!r}") from None
    for name in ("epsilon", "noise_stddev"):
        value = out.get(name)
        if value is not None and not (
            isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf
        ):
            raise BadRequestError(f"round {name} must be a finite number >= 0, got {value!r}")
    return out


__all__ = ["Store", "check_model_record", "check_round_changes"]
