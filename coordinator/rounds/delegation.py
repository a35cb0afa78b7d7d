"""The round machine's side of SecAgg+ cohorts run by other instances (``[cluster]
spread_cohorts``): which cohorts it handed over, their results, and the wait for them.

Right after ``CohortsFormed`` the driver may hand cohorts to other instances
(``delegate``): their members become ``DELEGATED`` in the roster, so the machine neither
asks nor waits for them, but counts them as still in (the owner of their cohort decides
that) wherever the round weighs how many devices remain. Each such cohort's result comes
back through ``remote_result`` (read from the store by the driver, or a failure when the
cohort's owner let its lease lapse). When the machine's own cohorts have unmasked (or none
of its own is left), it commits once every handed-over cohort's result is in, or at
``results_by``, when the missing ones are left out with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedrt.coordinator.rounds.aggregation import RoundAggregation
from fedrt.coordinator.rounds.cohort_results import CohortResult
from fedrt.coordinator.rounds.cohorts import Cohorts
from fedrt.coordinator.rounds.commands import Command
from fedrt.coordinator.rounds.roster import DeviceStatus, RoundDevice, RoundRoster
from fedrt.coordinator.rounds.states import RoundState
from fedrt.protocol.round_errors import IllegalTransition, UnexpectedMessage

__all__ = ["Delegation"]


class Delegation:
    """Mixed into ``RoundMachine``: the cohorts it handed to other instances."""

    # The machine's own (declared here for the type checker).
    state: RoundState
    deadline: float | None
    _agg: RoundAggregation
    _roster: RoundRoster
    _cohort_topics: set[str]

    def _finish(self, now: float, out: list[Command], answered: list[RoundDevice]) -> None:
        raise NotImplementedError  # pragma: no cover - RoundMachine's

    def _init_delegation(self) -> None:
        self._results_by: float | None = None
        self._waiting: list[RoundDevice] | None = None  # own cohorts done: who answered

    def delegate(self, indices: Sequence[int], results_by: float) -> None:
        """Hand SecAgg+ cohorts ``indices`` to other instances, right after
        ``CohortsFormed``; their results are due by ``results_by``."""
        cohorts = self._agg.cohorts
        if cohorts is None or self.state is not RoundState.TRAINING or cohorts.remote:
            raise IllegalTransition("cohorts are handed over once, when they form")
        for device_id in cohorts.delegate(indices):
            dev = self._roster.get(device_id)
            if dev is not None and dev.status is DeviceStatus.ACTIVE:
                self._roster.set_status(dev, DeviceStatus.DELEGATED)
        self._results_by = results_by

    def remote_result(self, result: CohortResult, now: float) -> list[Command]:
        """A handed-over cohort's result; ``UnexpectedMessage`` unless one awaited."""
        cohorts = self._agg.cohorts
        if cohorts is None or self.state in (RoundState.COMMITTED, RoundState.ABANDONED):
            raise UnexpectedMessage(f"cohort {result.index}'s result comes too late")
        cohorts.take_result(result)
        out: list[Command] = []
        if self._waiting is not None and not cohorts.pending():
            self._finish(now, out, self._waiting)
        return out

    @property
    def cohorts(self) -> Cohorts | None:
        """The round's SecAgg+ cohorts once formed (None before, or without SecAgg+)."""
        return self._agg.cohorts

    def cohort_runs(self, here: str | None, handed: Mapping[int, str]) -> list[dict[str, object]]:
        """For the round's record, per SecAgg+ cohort: the instance that ran it (``handed``:
        those handed out, by index; ``here`` the rest, None: one instance without an id)
        and, for one left out, why."""
        cohorts = self._agg.cohorts
        if cohorts is None:
            return []
        runs: list[dict[str, object]] = []
        for c in cohorts.cohorts:
            entry: dict[str, object] = {"index": c.index, "instance": handed.get(c.index, here)}
            if c.index in cohorts.remote:
                got = cohorts.remote[c.index]
                why = "its result never came" if got is None else got.failed
            else:
                why = c.failed
            if why:
                entry["left_out"] = why
            runs.append(entry)
        return runs

    def reads_cohort_topics(self, members: Sequence[str]) -> bool:
        """Whether every one of ``members`` answers on its cohort's topic (check-in feature):
        only such a cohort can be run by another instance."""
        return all(d in self._cohort_topics for d in members)

    def _delegated(self) -> int:
        """Devices of handed-over cohorts counted as in (``Cohorts.elsewhere``)."""
        cohorts = self._agg.cohorts
        return 0 if cohorts is None else cohorts.elsewhere()

    def _awaiting(self) -> bool:
        cohorts = self._agg.cohorts
        return cohorts is not None and bool(cohorts.pending())

    def _finish_or_wait(self, now: float, out: list[Command], answered: list[RoundDevice]) -> None:
        """The machine's own cohorts are done: commit, or wait for the handed-over ones."""
        if not self._awaiting():
            self._finish(now, out, answered)
            return
        self._waiting = answered
        self.deadline = max(now, self._results_by or now)

    def _give_up_waiting(self, now: float, out: list[Command]) -> None:
        """``results_by`` passed: the cohorts whose result is missing are left out."""
        cohorts = self._agg.cohorts
        assert cohorts is not None
        assert self._waiting is not None
        for cohort in cohorts.pending():
            why = "its owner wrote no result by the round's deadline"
            cohorts.take_result(CohortResult(index=cohort.index, key=cohort.key, failed=why))
        self._finish(now, out, self._waiting)
