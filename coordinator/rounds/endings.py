"""How the round driver ends rounds and tasks: commit, evaluation, abandon, completion.

``RoundEndings`` is the part of ``FederatedDriver`` that acts on the machine's ending
commands: a commit becomes the task's next version (``rollout`` decides whether it is
promoted) and charges DP in the same transaction; an evaluation round stores its figures
and feeds the federated rollout gate; an abandoned round sets when the next one may open.
Each ends in ``_close_round``, which records the round and its detail. Sync and async
(``async_driver``) rounds alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

from fedrt.coordinator.driver.base import DriverContext
from fedrt.coordinator.errors import retry_races
from fedrt.coordinator.privacy.accounting import PrivacyBudgetExceeded
from fedrt.coordinator.records import RoundStatus
from fedrt.coordinator.rounds.cohort_spread import CohortSpread, forget_round, offered
from fedrt.coordinator.rounds.commands import (
    AbandonRound,
    Commit,
    EvaluationDone,
    RoundMetrics,
)
from fedrt.coordinator.rounds.dp import budget_exhausted, charge
from fedrt.coordinator.rounds.eval_figures import round_figures
from fedrt.coordinator.rounds.journal import (
    RoundEnd,
    RoundListener,
    device_labels,
    end_detail,
    record_completion,
    record_end,
    summary,
)
from fedrt.coordinator.rounds.rollout import Rollout
from fedrt.coordinator.rounds.runs import CommitPoint, Run, save
from fedrt.coordinator.rounds.versions import round_traffic  # model-forms
from fedrt.coordinator.tasks.ownership import TaskOwnership

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("fedrt.coordinator.rounds.driver")


class RoundEndings:
    """Mixed into ``FederatedDriver``: how its rounds and tasks end (module docstring)."""

    ctx: DriverContext
    rollout: Rollout
    listener: RoundListener | None
    runs: dict[str, Run]
    rng: np.random.Generator
    retry_delay_s: float
    spread: CohortSpread | None
    owner: TaskOwnership | None

    if TYPE_CHECKING:  # TaskAdoption's and AsyncRounds'

        def _fence(self, task_id: str, now: float) -> None: ...
        def _async_detail(
            self, run: Run, round_no: int, status: RoundStatus
        ) -> dict[str, object]: ...

    def _commit(self, run: Run, commit: Commit, now: float) -> None:
        # One transaction from the new version to the round's end: all of it or nothing. One
        # that lost a serialization race (PostgreSQL) wrote nothing: the run's memory goes
        # back to where it was (the DP charge included) and the commit runs again.
        before = CommitPoint.of(run)

        def attempt() -> None:
            before.restore(run)
            with self.ctx.store.transaction():
                self._fence(run.task_id, now)
                self._commit_owned(run, commit, now)

        retry_races(attempt)

    def _commit_owned(self, run: Run, commit: Commit, now: float) -> None:
        version, promoted = self.rollout.commit(run, commit)
        noise_stddev = charge(run, commit, self.rng)
        self._close_round(
            run,
            commit.round_id,
            RoundStatus.COMMITTED,
            commit.metrics,
            now,
            result_sha256=version.record.sha256,
            evaluation=version.evaluation,
            promoted=promoted,
            noise_stddev=noise_stddev,
        )

    def _evaluated(self, run: Run, done: EvaluationDone, now: float) -> None:
        evaluation, by_label = round_figures(  # eval-figures
            done.metrics, done.devices, device_labels(self.ctx.store, done.devices)
        )
        self._close_round(
            run,
            done.round_id,
            RoundStatus.COMMITTED,
            done.round_metrics,
            now,
            evaluation=evaluation,
            extra_detail={"evaluation_by_label": by_label},  # eval-figures
        )
        fence = partial(self._fence, run.task_id, now)
        self.rollout.evaluated(run, done.round_id, evaluation, fence)  # federated gate

    def _abandoned(self, run: Run, abandon: AbandonRound, now: float) -> None:
        log.warning("task %s: round %d abandoned: %s", run.task_id, abandon.round_id,
                    abandon.reason)  # fmt: skip
        self._close_round(
            run,
            abandon.round_id,
            RoundStatus.ABANDONED,
            abandon.metrics,
            now,
            reason=abandon.reason,
        )
        run.next_start = now + self.retry_delay_s
        if abandon.metrics.checked_in == 0:
            # Nobody came: the next round opens with the next check-in, not on a timer.
            run.waiting = True
            log.info("task %s: no check-ins, waiting for one to open round %d", run.task_id,
                     run.round_no + 1)  # fmt: skip

    def _close_round(
        self,
        run: Run,
        round_no: int,
        status: RoundStatus,
        metrics: RoundMetrics,
        now: float,
        *,
        result_sha256: str | None = None,
        evaluation: Mapping[str, float] | None = None,
        promoted: bool = False,
        reason: str = "",
        noise_stddev: float | None = None,
        extra_detail: Mapping[str, object] | None = None,
    ) -> None:
        if metrics.bad_holders:  # decoded around, but a device that lies deserves a look
            log.warning("task %s: round %d: wrong SecAgg+ shares from %s", run.task_id,
                        round_no, ", ".join(metrics.bad_holders))  # fmt: skip
        end = RoundEnd(
            round_no=round_no,
            status=status,
            metrics=metrics,
            result_sha256=result_sha256,
            evaluation=dict(evaluation or {}),
            promoted=promoted,
            reason=reason,
            bytes_out=run.bytes_out,
            # Every round of a DP task shows the task's epsilon so far (uncharged rounds too).
            epsilon=run.privacy.epsilon if run.privacy is not None else None,
            noise_stddev=noise_stddev,
        )
        detail = end_detail(self.ctx.store, run.task_id, end, dp_charged=run.dp_round)
        start = self.ctx.store.get_round(run.task_id, round_no).model_sha256  # model-forms
        detail["traffic"] = round_traffic(self.ctx.catalog, start, run, metrics)  # model-forms
        detail.update(extra_detail or {})
        if run.machine is not None and run.machine.cohorts is not None:  # who ran each cohort
            here = self.owner.instance_id if self.owner is not None else None
            handed = offered(self.ctx.store, run.task_id, round_no) if self.spread else {}
            detail["cohort_runs"] = run.machine.cohort_runs(here, handed)
        detail.update(self._async_detail(run, round_no, status))  # async rounds (issue 19)
        with self.ctx.store.transaction():
            self._fence(run.task_id, now)
            record_end(self.ctx.store, run.task_id, end, detail, now)
            save(self.ctx.store, run)
            if self.spread is not None:  # the cohorts handed out: their state goes
                forget_round(self.ctx.store, run.task_id, round_no)
        self.ctx.observer.round_ended(self.ctx.store.get_round(run.task_id, round_no))
        if self.listener is not None:
            self.listener(summary(self.ctx.store, run, end))

    def _finish_task(
        self, run: Run, now: float, *, action: str = "task.complete", **detail: object
    ) -> None:
        with self.ctx.store.transaction():
            self._fence(run.task_id, now)
            record_completion(self.ctx.store, run, now, action, detail)
            save(self.ctx.store, run)
        self.runs.pop(run.task_id, None)
        log.info("task %s: completed after %d rounds", run.task_id, run.round_no)

    def _stop_for_budget(self, run: Run, exc: PrivacyBudgetExceeded, now: float) -> None:
        """Complete the task BEFORE a round that could overspend its privacy budget."""
        self._finish_task(run, now, action="task.budget_exhausted", **budget_exhausted(run, exc))


__all__ = ["RoundEndings"]
