"""The participant's states, their legal moves, and the round bookkeeping its events share."""

from __future__ import annotations

import enum

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.protocol import round_messages as rm
from fedrt.protocol.prg import RandomSource, system_random
from fedrt.protocol.round_errors import IllegalTransition
from fedrt.protocol.secagg_client import SecAggClient
from fedrt.protocol.topics import UpChannel
from fedrt.sdk.jitter import Jitter
from fedrt.sdk.participant_commands import (
    CancelTraining,
    Command,
    Forget,
    ParticipantConfig,
    Publish,
    RoundEnded,
    ScheduleCheckIn,
)
from fedrt.sdk.round_facts import RoundFacts
from fedrt.sdk.update_encoding import new_update_key

__all__ = ["TRANSITIONS", "ParticipantBookkeeping", "ParticipantState"]


class ParticipantState(enum.Enum):
    IDLE = "idle"
    CHECKED_IN = "checked_in"
    TRAINING = "training"
    REPORTING = "reporting"


P = ParticipantState
TRANSITIONS: dict[ParticipantState, frozenset[ParticipantState]] = {
    P.IDLE: frozenset({P.CHECKED_IN, P.TRAINING}),
    P.CHECKED_IN: frozenset({P.TRAINING, P.IDLE}),
    P.TRAINING: frozenset({P.REPORTING, P.IDLE}),
    P.REPORTING: frozenset({P.IDLE}),
}
_BULK = frozenset({rm.Stage.MASKED_INPUT, rm.Stage.PLAIN_UPDATE})


class ParticipantBookkeeping:
    """What a participant's events change, and the moves they make (``Participant`` takes the
    events: ``fedrt.sdk.participant``). Every state change goes through ``TRANSITIONS``."""

    def __init__(
        self,
        config: ParticipantConfig,
        *,
        identity: Ed25519PrivateKey,
        rng: Jitter,
        random: RandomSource = system_random,
        first_msg_id: int = 1,
    ) -> None:
        self.config = config
        self._identity = identity
        self._public = identity.public_key().public_bytes_raw()
        self._rng = rng
        # Per participant, so an update does not depend on the retries before it.
        self._update_key = new_update_key(rng)
        self._random = random
        self._next_msg_id = first_msg_id
        self.state = P.IDLE
        self.deadline: float | None = None
        self.not_before = -np.inf
        self.plan: rm.Plan | None = None
        self.round_id: int | None = None
        self.announcement: rm.TaskAnnouncement | None = None
        self._answered: rm.Stage | None = None
        self._client: SecAggClient | None = None
        self._unacked: set[int] = set()
        # Of those, the ones sent on a cohort topic: id -> round. Nobody reads that topic once
        # its round is over, so they are forgotten then (``_forget_cohort``), not resent.
        self._cohort: dict[int, int] = {}
        self._seen: set[tuple[int, int]] = set()
        # The Abandon sent after a restart: once acknowledged, the device may check in again.
        self._leaving: int | None = None
        # Whether ``not_before`` is the device's own back-off (silence, a refusal) rather than
        # a window the coordinator gave: a window, or a coordinator restart, replaces it.
        self._silence = False
        # The first message id of the current check-in or round: only refusals of those end it.
        self._since = 0
        # The coordinator incarnation last heard (``coordinator_online``).
        self.incarnation: str | None = None
        # Check-ins in a row the coordinator left unanswered: the back-off doubles with each.
        self._unanswered = 0

    # --- queries ---------------------------------------------------------------------------

    def round_facts(self) -> RoundFacts:
        """What to persist with ``next_msg_id`` (nothing secret) for ``restart``."""
        in_round = self.state in (P.TRAINING, P.REPORTING)
        return RoundFacts(
            state=self.state.value,
            round_id=self.round_id if in_round else None,
            answered=self._answered if in_round else None,
            secagg=in_round and self.plan is not None and self.plan.secagg is not None,
            unacked=tuple(sorted(self._unacked)),
            coordinator=self.incarnation,
            cohort=tuple(sorted(self._cohort.items())),
        )

    def next_deadline(self) -> float | None:
        return self.deadline

    @property
    def next_msg_id(self) -> int:
        """Persist this with the outbox, so a restarted device never reuses a message id."""
        return self._next_msg_id

    @property
    def unacknowledged(self) -> frozenset[int]:
        return frozenset(self._unacked)

    # --- helpers ---------------------------------------------------------------------------

    def _training(self, kind: rm.RoundKind) -> rm.Plan:
        if self.state is not P.TRAINING or self.plan is None or self.plan.kind is not kind:
            raise IllegalTransition(f"no {kind.name.lower()} job is running ({self.state.value})")
        return self.plan

    def _answer(
        self, plan: rm.Plan, stage: rm.Stage, payload: bytes, now: float, window: float
    ) -> list[Command]:
        msg = rm.StageResponse(
            msg_id=self._msg_id(),
            task_id=plan.task_id,
            round_id=plan.round_id,
            stage=stage,
            payload=payload,
        )
        self._answered = stage
        # The next request comes once this stage closes: at the latest after its window.
        self._move(P.REPORTING, now + window + self.config.grace)
        return [self._publish(msg)]

    def _give_up(
        self, reason: rm.AbandonReason, detail: str, now: float, *, cancel: bool = True
    ) -> list[Command]:
        assert self.plan is not None
        # The round's earlier replies are not wanted now; the Abandon is, while it runs.
        forgotten = self._forget_cohort(self.plan.round_id)
        msg = rm.Abandon(
            msg_id=self._msg_id(),
            task_id=self.plan.task_id,
            round_id=self.plan.round_id,
            reason=reason,
            detail=detail[:256],
        )
        out: list[Command] = [CancelTraining(reason=reason.name.lower())] if cancel else []
        out += forgotten
        out.append(self._publish(msg))
        if reason is rm.AbandonReason.MODEL_UNAVAILABLE:
            # Likely the coordinator's fault (a bad artifact): once it has the Abandon, check
            # in again and let it say when, instead of backing off for a quarter of an hour.
            self._leaving = msg.msg_id
        return out + self._end(None, detail or reason.name.lower(), now, forget=False)

    def _end(
        self, reason: rm.ReconnectReason | None, detail: str, now: float, *, forget: bool = True
    ) -> list[Command]:
        """Leave the check-in or round and back off; ``forget``: the round's replies still
        unacknowledged on its cohort topic too (the device gave up on it: they are late)."""
        c = self.config
        wait = float(self._rng.uniform(c.retry_earliest, c.retry_latest))
        if self.state is P.CHECKED_IN:
            # Unanswered (or refused) check-ins back off exponentially, jitter included.
            wait = min(wait * 2.0 ** min(self._unanswered, 30), max(c.retry_cap, wait))
            self._unanswered += 1
        at = now + wait
        out: list[Command] = []
        if self.round_id is not None and self.state is not P.CHECKED_IN:
            if forget:
                out += self._forget_cohort(self.round_id)
            out.append(RoundEnded(round_id=self.round_id, reason=reason, detail=detail))
        self._to_idle(at, silence=True)
        out.append(ScheduleCheckIn(at=at))
        return out

    def _to_idle(self, not_before: float, *, silence: bool) -> None:
        self._move(P.IDLE, None)
        self.not_before, self._silence = not_before, silence
        self._client = None
        self._answered = None

    def _move(self, new: ParticipantState, deadline: float | None) -> None:
        if new is not self.state and new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"participant cannot go from {self.state.value} to {new.value}")
        self.state, self.deadline = new, deadline

    def _publish(self, msg: rm.DeviceMessage) -> Publish:
        if isinstance(msg, rm.CheckIn):
            channel = UpChannel.CHECKIN
        elif isinstance(msg, rm.StageResponse) and msg.stage in _BULK:
            channel = UpChannel.UPDATE
        else:
            channel = UpChannel.ROUND
        self._unacked.add(msg.msg_id)
        # A round's replies go to its cohort's topic when the plan named one.
        plan = self.plan
        cohort = ""
        if plan is not None and not isinstance(msg, rm.CheckIn) and msg.round_id == plan.round_id:
            cohort = plan.cohort_topic
            if cohort:
                self._cohort[msg.msg_id] = msg.round_id
        return Publish(channel=channel, message=msg, cohort=cohort)

    def _forget_cohort(self, last_round: int) -> list[Command]:
        """Forget the unacknowledged messages sent on the cohort topics of rounds up to
        ``last_round``, which the caller knows are over for this device: the cohort's owner
        stops reading a topic after its round, so they would be resent for ever. Messages
        on the plain topics stay (always read: acknowledged, LATE at worst)."""
        gone = sorted(m for m, r in self._cohort.items() if r <= last_round)
        for m in gone:
            del self._cohort[m]
        self._unacked.difference_update(gone)
        return [Forget(msg_id=m) for m in gone]

    def _msg_id(self) -> int:
        self._next_msg_id += 1
        return self._next_msg_id - 1
