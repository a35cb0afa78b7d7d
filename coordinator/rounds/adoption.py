"""Which tasks a round driver runs, when several coordinator instances share a store.

``TaskAdoption`` is the part of ``FederatedDriver`` that follows the task leases
(``tasks.ownership``): it adopts the running tasks this instance can own (all of them when it
is the only one), takes over those whose owner is gone, follows task changes made through
other instances' APIs, fences the driver's writes with its leases and forgets the tasks it
lost. A round left open by a previous owner is abandoned and the task waits for a check-in
(``rounds.driver``'s module docstring).
"""

from __future__ import annotations

import logging

from fedrt.coordinator.driver.base import DriverContext
from fedrt.coordinator.errors import CoordinatorError
from fedrt.coordinator.records import RoundStatus, TaskRecord, TaskStatus
from fedrt.coordinator.rounds.cohort_owners import CohortOwnership
from fedrt.coordinator.rounds.journal import record_lost
from fedrt.coordinator.rounds.runs import RESTART_ID_GAP, Run
from fedrt.coordinator.tasks.ownership import TaskOwnership

log = logging.getLogger("fedrt.coordinator.rounds.driver")


class TaskAdoption:
    """Mixed into ``FederatedDriver``: its runs, idle tasks and leases."""

    ctx: DriverContext
    owner: TaskOwnership | None
    cohort_owner: CohortOwnership
    runs: dict[str, Run]
    idle: dict[str, Run]

    def _new_run(self, task: TaskRecord) -> Run:  # pragma: no cover - FederatedDriver's
        raise NotImplementedError

    def on_task_change(self, task: TaskRecord) -> None:  # pragma: no cover - the driver's
        raise NotImplementedError

    def _recover(self, now: float) -> None:
        """Adopt the running tasks this instance can own (all, when it is the only one)."""
        for task in self.ctx.store.list_tasks():
            if task.status is TaskStatus.RUNNING and self.owner is None:
                self._adopt(task, now)
            elif task.status is TaskStatus.RUNNING:
                self._owns(task, now)

    def _may_run(self, task_id: str, now: float) -> bool:
        """Whether this instance holds (or can now claim) the task's lease."""
        return self.owner is None or self.owner.holds(task_id) or self.owner.claim(task_id, now)

    def _owns(self, task: TaskRecord, now: float) -> bool:
        """Whether this instance runs ``task``; a running task it just took is adopted."""
        if self.owner is None:
            return True
        if not self._may_run(task.task_id, now):
            return False
        # Also a task this instance held while it was not running (its devices were paced).
        if task.status is TaskStatus.RUNNING and task.task_id not in self.runs:
            self._adopt(task, now)
        return True

    def _adopt(self, task: TaskRecord, now: float) -> None:
        """Run a task whose rounds were someone else's (a previous process, a dead instance):
        a round left open is abandoned, and the task waits for a check-in (module docstring)."""
        lost = []
        for rnd in self.ctx.store.list_rounds(task.task_id):
            if rnd.status is RoundStatus.RUNNING:
                lost.append(rnd.round_no)
                with self.ctx.store.transaction():
                    self._fence(task.task_id, now)
                    record_lost(self.ctx.store, rnd, now)
        try:
            run = self._new_run(task)
        except CoordinatorError as exc:
            log.error("task %s cannot run: %s", task.task_id, exc)
            return
        run.next_msg_id += RESTART_ID_GAP
        if lost:
            # Its devices come back within seconds; the retained announcement may still
            # be the lost round's "check-ins closed".
            run.waiting, run.announce, run.lost_rounds = True, True, frozenset(lost)
        self.idle.pop(task.task_id, None)
        self.runs[task.task_id] = run

    def _sync(self, now: float) -> None:
        """Renew our leases, drop the tasks lost, follow task changes made through other
        instances' APIs, and take over the running tasks whose owner is gone."""
        assert self.owner is not None
        for task_id in self.owner.renew(now):
            self._forget(task_id)
        for task in self.ctx.store.list_tasks():
            running = task.status is TaskStatus.RUNNING
            if task.task_id in self.runs and not running:
                self.on_task_change(task)
            elif running and task.task_id not in self.runs:
                self._owns(task, now)

    def _fence(self, task_id: str, now: float) -> None:
        if self.owner is not None:
            self.owner.fence(task_id, now)

    def _forget(self, task_id: str) -> None:
        """Another instance owns the task now: drop what we had of it, unsaved."""
        dropped = [self.runs.pop(task_id, None), self.idle.pop(task_id, None)]
        self.cohort_owner.ended(task_id, self.ctx.clock())
        if any(run is not None for run in dropped):
            log.warning("task %s: now run by another coordinator instance", task_id)


__all__ = ["TaskAdoption"]
