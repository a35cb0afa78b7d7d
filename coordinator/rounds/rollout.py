"""Gated rollout: whether a committed version reaches devices, and the rollback by itself.

Each task's ``rollout_gate`` (``TaskSpec``) picks the gate:

- ``held_out`` and ``auto``: the candidate is evaluated on the operator's held-out set
  (``serve --eval-data``, ``DriverContext.held_out``; or the evaluator the driver was made
  with, as ``fedrt simulate`` does) and promoted only if its accuracy is at least the
  promoted version's minus ``promote_margin``. The promoted version is evaluated too, once
  per process, so the first candidate after a start is gated like any other. A candidate
  held back stays stored (status ``candidate``), with an audit entry ``model.held_back``;
  the next round starts from the promoted version again. ``auto`` gates only tasks whose
  model fits the set (shapes, label range) and promotes every version otherwise (logged
  once); ``held_out`` is refused at creation without a fitting set (``creation_check``) and
  holds every candidate back when it cannot evaluate one.
- ``federated``: every version is promoted; after each evaluation round the version it
  evaluated is compared with the last good one (``federated_accuracy``): within the margin
  it becomes the good one, else the task rolls back to the good one (``catalog.rollback``,
  audited ``model.rollback`` with the figures), so the next round's plan names it again.
  The good version is kept in the task's state (``STATE_KEY``) across restarts.
- ``off``: every version is promoted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fedrt.coordinator.driver.base import DriverContext
from fedrt.coordinator.errors import (
    BadRequestError,
    ConflictError,
    EvaluationError,
    retry_races,
)
from fedrt.coordinator.models.evaluator import HeldOutEvaluator
from fedrt.coordinator.records import AuditEntry
from fedrt.coordinator.rounds.commands import Commit
from fedrt.coordinator.rounds.runs import Run
from fedrt.coordinator.rounds.versions import Evaluator, NewVersion, add_version, promote
from fedrt.coordinator.tasks.manager import ModelCheck
from fedrt.coordinator.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

STATE_KEY = "rollout"
ACTOR = "coordinator"
# The figure evaluation rounds report that the federated gate compares.
FEDERATED_ACCURACY = "federated_accuracy"


def creation_check(held_out: HeldOutEvaluator | None) -> ModelCheck:
    """For ``TaskManager``: refuse a task that asks for the held-out gate the coordinator
    cannot give its model (no ``--eval-data``, or a set its model does not fit)."""

    def check(spec: TaskSpec, manifest: Mapping[str, Any], model_sha256: str) -> None:
        gate = spec.rollout_gate
        if gate not in ("held_out", "auto"):
            return
        why = "the coordinator has no held-out set (serve --eval-data FILE)"
        if held_out is not None:
            why = held_out.misfit(manifest) or ""
        if why and gate == "held_out":
            raise BadRequestError(f"rollout_gate held_out: {why}; use auto, federated or off")
        if why and held_out is not None:
            log.warning("model %s does not fit the held-out set %s (%s): its versions are "
                        "promoted ungated", model_sha256[:12], held_out.data.path, why)  # fmt: skip

    return check


class Rollout:
    """The driver's gate: promotion of each commit and rollback after evaluation rounds."""

    def __init__(self, ctx: DriverContext, evaluator: Evaluator | None = None) -> None:
        self.ctx = ctx
        # The driver's own evaluator (``fedrt simulate``) wins over the service's set.
        self.evaluator: Evaluator | None = evaluator or ctx.held_out
        self._told: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ held-out gate
    def commit(self, run: Run, commit: Commit) -> tuple[NewVersion, bool]:
        """Store the commit's version and promote it if its gate lets it through."""
        gate = run.spec.rollout_gate
        evaluator = self._gating(run) if gate in ("auto", "held_out") else None
        version = add_version(self.ctx.catalog, run, commit, evaluator and self._safe(run))
        # held_out without a usable set: nothing vouches for the candidate.
        promoted = self._passes(run, version) if evaluator else gate != "held_out"
        if promoted:
            promote(self.ctx.catalog, run, version, commit)
        return version, promoted

    def _gating(self, run: Run) -> Evaluator | None:
        """The evaluator for ``run``'s candidates, with the promoted version's own figures in
        ``run.evaluation``; None when the task is not gated on held-out data."""
        model = run.model
        assert model is not None
        if self.evaluator is None:
            if run.spec.rollout_gate == "held_out":  # auto without a set is the quiet default
                self._once(run, "no-set", "rollout_gate held_out, but no held-out set (serve "
                           "--eval-data): every candidate is held back")  # fmt: skip
            return None
        if isinstance(self.evaluator, HeldOutEvaluator):
            why = self.evaluator.misfit(model.manifest)
            if why is not None:
                self._once(run, "misfit", f"not gated on the held-out set: {why}")
                return None
        if not run.evaluation:
            try:
                run.evaluation = dict(self.evaluator(model.data, model.manifest))
            except EvaluationError as exc:
                log.error("task %s: promoted version %s: %s", run.task_id,
                          model.record.sha256[:12], exc)  # fmt: skip
        return self.evaluator

    def _safe(self, run: Run) -> Evaluator:
        evaluator = self.evaluator
        assert evaluator is not None

        def evaluate(data: bytes, manifest: Any) -> Mapping[str, float]:
            try:
                return evaluator(data, manifest)
            except EvaluationError as exc:  # held back below: no accuracy to vouch for it
                log.error("task %s: candidate of round %d: %s", run.task_id, run.round_no, exc)
                return {}

        return evaluate

    def _passes(self, run: Run, version: NewVersion) -> bool:
        before = run.evaluation.get("accuracy")
        after = version.evaluation.get("accuracy")
        if after is not None and (before is None or after >= before - run.spec.promote_margin):
            return True
        assert run.model is not None
        self._audit("model.held_back", version.record.sha256, {
            "task_id": run.task_id,
            "round_no": version.record.round_no,
            "accuracy": after,
            "promoted": run.model.record.sha256,
            "promoted_accuracy": before,
            "promote_margin": run.spec.promote_margin,
        })  # fmt: skip
        log.warning("task %s: version %s of round %s held back: accuracy %s against %s of "
                    "the promoted version (margin %g)", run.task_id, version.record.sha256[:12],
                    version.record.round_no, after, before, run.spec.promote_margin)  # fmt: skip
        return False

    # ------------------------------------------------------------------ federated gate
    def evaluated(
        self, run: Run, round_no: int, evaluation: Mapping[str, float], fence: Callable[[], None]
    ) -> None:
        """After evaluation round ``round_no``: keep its version as the good one, or roll the
        task back to the good one (``fence`` raises ``LeaseLost`` if the task moved away)."""
        if run.spec.rollout_gate != "federated":
            return
        accuracy = evaluation.get(FEDERATED_ACCURACY)
        if accuracy is None:
            self._once(run, "no-accuracy", f"evaluation rounds report no {FEDERATED_ACCURACY}: "
                       "the federated gate cannot decide")  # fmt: skip
            return
        evaluated = self.ctx.store.get_round(run.task_id, round_no).model_sha256
        # Nothing is written when a transaction loses a race (PostgreSQL): decide again.
        moved = retry_races(lambda: self._decide(run, round_no, evaluated, accuracy, fence))
        if moved is not None:
            run.evaluation = {}  # figures of the version rolled back from
            log.warning("task %s: version %s rolled back to %s: %s %.4f below %.4f - %g",
                        run.task_id, evaluated[:12], moved["to"][:12], FEDERATED_ACCURACY,
                        accuracy, moved["good_accuracy"], moved["promote_margin"])  # fmt: skip

    def _decide(
        self,
        run: Run,
        round_no: int,
        evaluated: str,
        accuracy: float,
        fence: Callable[[], None],
    ) -> dict[str, Any] | None:
        """Keep ``evaluated`` as the good version or roll back to it: the rollback's audit
        detail, or None when the task stays."""
        store = self.ctx.store
        with store.transaction():
            fence()
            state = store.load_task_state(run.task_id, STATE_KEY) or {}
            good, good_accuracy = state.get("good"), float(state.get("good_accuracy", 0.0))
            margin = run.spec.promote_margin
            if good is None or good == evaluated or accuracy >= good_accuracy - margin:
                # The good version's latest figure: the fleet's data move, and so does it.
                self._keep(run, evaluated, accuracy)
                return None
            if store.get_task(run.task_id).model_sha256 != evaluated:
                return None  # an operator moved the task meanwhile: theirs is the decision
            detail: dict[str, Any] = {
                "reason": "federated_accuracy",
                FEDERATED_ACCURACY: accuracy,
                "good_accuracy": good_accuracy,
                "promote_margin": margin,
                "round_no": round_no,
            }
            try:
                self.ctx.catalog.rollback(run.task_id, to=good, actor=ACTOR, detail=detail)
            except ConflictError as exc:  # no ancestor any more (an operator's promotion)
                log.warning("task %s: cannot roll back to %s: %s", run.task_id, good[:12], exc)
                self._keep(run, evaluated, accuracy)
                return None
        return {**detail, "to": good}

    def _keep(self, run: Run, sha256: str, accuracy: float) -> None:
        state = {"good": sha256, "good_accuracy": accuracy}
        self.ctx.store.save_task_state(run.task_id, STATE_KEY, state)

    # ------------------------------------------------------------------ helpers
    def _once(self, run: Run, what: str, message: str) -> None:
        if (run.task_id, what) not in self._told:
            self._told.add((run.task_id, what))
            log.warning("task %s: %s", run.task_id, message)

    def _audit(self, action: str, subject: str, detail: dict[str, Any]) -> None:
        entry = AuditEntry(at=self.ctx.clock(), actor=ACTOR, action=action, subject=subject,
                           detail=detail)  # fmt: skip
        self.ctx.store.append_audit(entry)


__all__ = ["ACTOR", "FEDERATED_ACCURACY", "STATE_KEY", "Rollout", "creation_check"]
