"""Task lifecycle: creating tasks and moving them through their states, each move audited."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fedrt.coordinator.errors import BadRequestError, IllegalTransition
from fedrt.coordinator.records import AuditEntry, TaskRecord, TaskStatus
from fedrt.coordinator.store.base import Store
from fedrt.coordinator.tasks.model_fit import check_model_fit
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.protocol.round_errors import InvalidTopic
from fedrt.protocol.topics import check_id

Clock = Callable[[], float]
# More checks of a new task against its model (spec, the model's manifest, its sha256) that
# raise ``BadRequestError``: the service's held-out gate (``rounds.rollout.creation_check``).
ModelCheck = Callable[[TaskSpec, Mapping[str, Any], str], None]


# action -> (states it may start from, state it leads to)
ACTIONS: dict[str, tuple[frozenset[TaskStatus], TaskStatus]] = {
    "start": (frozenset({TaskStatus.CREATED}), TaskStatus.RUNNING),
    "pause": (frozenset({TaskStatus.RUNNING}), TaskStatus.PAUSED),
    "resume": (frozenset({TaskStatus.PAUSED}), TaskStatus.RUNNING),
    "cancel": (
        frozenset({TaskStatus.CREATED, TaskStatus.RUNNING, TaskStatus.PAUSED}),
        TaskStatus.CANCELLED,
    ),
}


class TaskManager:
    """Creates tasks and moves them through their lifecycle, auditing each decision."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        on_change: Callable[[TaskRecord], None] | None = None,
        model_checks: Sequence[ModelCheck] = (),
    ) -> None:
        self.store = store
        self.model_checks = tuple(model_checks)
        self._clock = clock
        # Called after a committed change (the service announces tasks, the driver reacts).
        self.on_change = on_change

    def create(
        self,
        *,
        name: str,
        model_sha256: str,
        spec: TaskSpec,
        actor: str,
        task_id: str | None = None,
    ) -> TaskRecord:
        if not isinstance(name, str) or not (1 <= len(name) <= 200):
            raise BadRequestError("name must be 1..200 characters")
        if task_id is None:
            task_id = "task-" + secrets.token_hex(6)
        try:
            check_id(task_id, "task id")
        except InvalidTopic as exc:
            raise BadRequestError(str(exc)) from None
        now = self._clock()
        record = TaskRecord(
            task_id=task_id,
            name=name,
            status=TaskStatus.CREATED,
            spec=spec.to_json(),
            model_sha256=model_sha256,
            created_at=now,
            updated_at=now,
        )
        with self.store.transaction():
            # Settings the model cannot train with are refused, not ignored (model_fit).
            manifest = self.store.get_model(model_sha256).manifest
            check_model_fit(spec, manifest, model_sha256)
            for check in self.model_checks:
                check(spec, manifest, model_sha256)
            self.store.create_task(record)
            self._audit(actor, "task.create", task_id, {"model": model_sha256})
        self._changed(record)
        return record

    def act(self, task_id: str, action: str, *, actor: str) -> TaskRecord:
        """Apply ``start``/``pause``/``resume``/``cancel``; ``IllegalTransition`` otherwise."""
        if action not in ACTIONS:
            raise BadRequestError(f"unknown task action {action!r}")
        allowed, target = ACTIONS[action]
        with self.store.transaction():
            task = self.store.get_task(task_id)
            if task.status not in allowed:
                raise IllegalTransition(f"cannot {action} a task that is {task.status.value}")
            task = self.store.set_task_status(task_id, target, at=self._clock())
            self._audit(actor, f"task.{action}", task_id, {})
        self._changed(task)
        return task

    def spec(self, task_id: str) -> TaskSpec:
        return TaskSpec.from_json(self.store.get_task(task_id).spec)

    def _changed(self, task: TaskRecord) -> None:
        if self.on_change is not None:
            self.on_change(task)

    def _audit(self, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
        self.store.append_audit(
            AuditEntry(at=self._clock(), actor=actor, action=action, subject=subject, detail=detail)
        )


__all__ = ["ACTIONS", "ModelCheck", "TaskManager"]
