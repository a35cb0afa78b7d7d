"""The rows the coordinator persists: tasks, rounds, stages, devices, models, metrics, audit."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from fedrt.coordinator.errors import IllegalTransition

JsonObject = dict[str, Any]


class TaskStatus(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


# The whole task lifecycle; anything not listed raises IllegalTransition.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.CREATED: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.PAUSED, TaskStatus.COMPLETED, TaskStatus.CANCELLED}),
    TaskStatus.PAUSED: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


class RoundStatus(enum.Enum):
    RUNNING = "running"
    COMMITTED = "committed"
    ABANDONED = "abandoned"


class ModelStatus(enum.Enum):
    CANDIDATE = "candidate"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


MODEL_TRANSITIONS: dict[ModelStatus, frozenset[ModelStatus]] = {
    ModelStatus.CANDIDATE: frozenset({ModelStatus.PROMOTED, ModelStatus.ROLLED_BACK}),
    ModelStatus.PROMOTED: frozenset({ModelStatus.ROLLED_BACK}),
    # Re-promoting a rolled-back version is how an operator undoes a rollback.
    ModelStatus.ROLLED_BACK: frozenset({ModelStatus.PROMOTED}),
}


def check_task_transition(old: TaskStatus, new: TaskStatus) -> None:
    if new not in TASK_TRANSITIONS[old]:
        raise IllegalTransition(f"task cannot go from {old.value} to {new.value}")


def check_model_transition(old: ModelStatus, new: ModelStatus) -> None:
    if new not in MODEL_TRANSITIONS[old]:
        raise IllegalTransition(f"model cannot go from {old.value} to {new.value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    task_id: str
    name: str
    status: TaskStatus
    # Validated round configuration (``TaskSpec.to_json()``), stored as given.
    spec: JsonObject
    # The global model rounds start from; moves on promotion and rollback.
    model_sha256: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRecord:
    task_id: str
    round_no: int
    stage: str
    status: RoundStatus
    model_sha256: str
    started_at: float
    ended_at: float | None = None
    deadline: float | None = None
    checked_in: int = 0
    selected: int = 0
    reporting: int = 0
    dropped: int = 0
    bytes_in: int = 0
    result_sha256: str | None = None
    detail: JsonObject = field(default_factory=dict)
    # Differential privacy (issue 9), None when the task has none: the task's cumulative
    # epsilon at its delta once this round is charged, and the std of the noise the
    # round's aggregate SUM carries (float units of the update).
    epsilon: float | None = None
    noise_stddev: float | None = None


# Fields of a round the driver may change after creation.
ROUND_MUTABLE = frozenset(
    {
        "stage",
        "status",
        "ended_at",
        "deadline",
        "checked_in",
        "selected",
        "reporting",
        "dropped",
        "bytes_in",
        "result_sha256",
        "detail",
        "epsilon",
        "noise_stddev",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageRecord:
    task_id: str
    round_no: int
    stage: str
    at: float
    detail: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    device_id: str
    # Mosquitto ``$7$`` PBKDF2-SHA512 hash of the MQTT password; the password is never kept.
    credential_hash: str
    public_key: bytes
    enrolled_at: float
    revoked_at: float | None = None
    last_seen: float | None = None
    labels: JsonObject = field(default_factory=dict)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentTokenRecord:
    # SHA-256 of the token: a leaked database does not leak usable tokens.
    token_hash: str
    created_at: float
    expires_at: float
    note: str = ""
    used_by: str | None = None
    used_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRecord:
    sha256: str
    task_id: str | None
    parent_sha256: str | None
    round_no: int | None
    status: ModelStatus
    size: int
    manifest: JsonObject
    # Ed25519 signature by the coordinator over ``signing_payload(sha256, manifest)``.
    signature: bytes
    created_at: float
    metrics: JsonObject = field(default_factory=dict)
    # The server optimizer's state after the round that produced this version (a blob in
    # the BlobStore, ``models/optimizer_state.py``): rounds that start from the version continue
    # with it. None for imported models, stateless optimizers (FedAvg) and older data.
    optimizer_state_sha256: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricRecord:
    task_id: str
    round_no: int
    name: str
    value: float
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One decision. ``seq`` is assigned by the store (0 before it is appended)."""

    at: float
    actor: str
    action: str
    subject: str
    detail: JsonObject = field(default_factory=dict)
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRecord:
    """Who owns a piece of work (a task's rounds) until when.

    ``epoch`` grows by one each time the lease changes hands: writes fenced with
    (``owner``, ``epoch``) fail once another instance has taken the work over, even if the
    old owner still believes it holds it (a process paused past its expiry)."""

    name: str
    owner: str
    epoch: int
    expires_at: float


__all__ = [
    "MODEL_TRANSITIONS",
    "ROUND_MUTABLE",
    "TASK_TRANSITIONS",
    "AuditEntry",
    "DeviceRecord",
    "EnrollmentTokenRecord",
    "JsonObject",
    "LeaseRecord",
    "MetricRecord",
    "ModelRecord",
    "ModelStatus",
    "RoundRecord",
    "RoundStatus",
    "StageRecord",
    "TaskRecord",
    "TaskStatus",
    "check_model_transition",
    "check_task_transition",
]
