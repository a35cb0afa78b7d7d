"""The participant across restarts: its own process's (``restart``) and the coordinator's."""

from __future__ import annotations

from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_errors import IllegalTransition
from fedrt.sdk.participant_commands import (
    CancelTraining,
    Command,
    Forget,
    RoundEnded,
    ScheduleCheckIn,
)
from fedrt.sdk.participant_state import ParticipantBookkeeping
from fedrt.sdk.participant_state import ParticipantState as P
from fedrt.sdk.round_facts import RoundFacts

__all__ = ["ParticipantRestarts"]


class ParticipantRestarts(ParticipantBookkeeping):
    """What a participant does after a restart, its own or the coordinator's (``Participant``
    takes every other event: ``fedrt.sdk.participant``)."""

    def restart(self, facts: RoundFacts, now: float) -> list[Command]:
        """Pick up where a previous process stopped (call once, first, on a new participant).

        Waiting for a plan, or for the end of a round whose plain update or evaluation went
        out (the outbox still holds it), goes on: nothing was lost. A round the device was
        training for or running SecAgg+ in cannot: its plan, weights and secrets are gone. The
        device tells the coordinator it abandons that round (``RESTARTED``), forgets that
        round's unacknowledged answers so the outbox does not resend them, and checks in again
        once the coordinator has acknowledged the Abandon (or after ``checkin_timeout``).
        """
        if self.state is not P.IDLE or self.round_id is not None or self._unacked:
            raise IllegalTransition("restart() comes first, on a new participant")
        state = P(facts.state)
        self._unacked = set(facts.unacked)
        self._cohort = {m: r for m, r in facts.cohort if m in self._unacked}
        self.incarnation = facts.coordinator
        self._since = min(self._unacked, default=self._next_msg_id)
        kept = (rm.Stage.PLAIN_UPDATE, rm.Stage.EVALUATION)
        # A restored state is not a move, so it bypasses TRANSITIONS.
        if state is P.CHECKED_IN:
            self.state, self.deadline = state, now + self.config.checkin_timeout
            return []
        if facts.round_id is None or state is P.IDLE:
            return []
        self.round_id = facts.round_id
        if state is P.REPORTING and not facts.secagg and facts.answered in kept:
            self.state, self.deadline = state, now + self.config.grace
            self._answered = facts.answered
            return []
        msg = rm.Abandon(
            msg_id=self._msg_id(),
            task_id=self.config.task_id,
            round_id=facts.round_id,
            reason=rm.AbandonReason.RESTARTED,
            detail=f"restarted while {state.value}",
        )
        out: list[Command] = [Forget(msg_id=i) for i in sorted(self._unacked)]
        self._unacked.clear()
        self._cohort.clear()
        out.append(self._publish(msg))
        self._leaving = msg.msg_id
        out.append(RoundEnded(round_id=facts.round_id, reason=None, detail=msg.detail))
        self._to_idle(now + self.config.checkin_timeout, silence=True)
        out.append(ScheduleCheckIn(at=self.not_before))
        return out

    def coordinator_online(self, incarnation: str | None, now: float) -> list[Command]:
        """The coordinator's retained presence said ``online <incarnation>``.

        The first incarnation heard is only noted, and so is the same one again (a broker
        restart or a reconnect delivers it anew); a different one is a coordinator restart.
        None (a coordinator that names no incarnation) says nothing."""
        known = self.incarnation
        if incarnation is None or incarnation == known:
            return []
        self.incarnation = incarnation
        return [] if known is None else self.coordinator_restarted(now)

    def coordinator_restarted(self, now: float) -> list[Command]:
        """The coordinator restarted and lost every round it ran. A device checked in,
        training or reporting leaves its round (no Abandon: the round is gone) and checks in
        again at a uniform time within ``restart_spread``, so the fleet does not come at
        once; an idle device in its silence back-off comes back as soon; one holding a window
        the coordinator gave keeps it. Unacknowledged messages are forgotten (nobody will
        take them), and so are the old process's message ids (the new one may reuse them)."""
        at = now + float(self._rng.uniform(0.0, self.config.restart_spread))
        out: list[Command] = [Forget(msg_id=i) for i in sorted(self._unacked)]
        self._unacked.clear()
        self._cohort.clear()
        self._seen.clear()
        self._leaving = None
        if self.state is P.IDLE and (not self._silence or self.not_before <= at):
            return out
        if self.state is P.TRAINING:
            out.append(CancelTraining(reason="coordinator_restarted"))
        if self.round_id is not None and self.state in (P.TRAINING, P.REPORTING):
            detail = "the coordinator restarted"
            out.append(RoundEnded(round_id=self.round_id, reason=None, detail=detail))
        self._to_idle(at, silence=False)
        out.append(ScheduleCheckIn(at=at))
        return out
