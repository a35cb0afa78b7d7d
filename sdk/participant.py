"""The device's sans-I/O round participant: check in, train, report, run SecAgg+, back off.

Theory of operation
-------------------
A ``Participant`` follows one task for one device across rounds. It does no I/O and reads
no clock: the ``Device`` facade passes ``now`` (device clock, seconds) into every call and
acts on the returned commands (``participant_commands``). Events in:
``check_in(now)``, ``receive(message, now)`` for each decoded inbox or announcement message,
``training_done(delta, n_examples, now)`` / ``evaluation_done(...)`` /
``training_abandoned(reason, now)`` from the trainer, and ``tick(now)`` at
``next_deadline()``.

    IDLE --check_in--> CHECKED_IN --Plan--> TRAINING --done--> REPORTING --...--> IDLE
      ^                    |                   |                    |
      +---ReconnectWindow / timeout / abandon--+--------------------+

* IDLE: nothing in flight; ``may_check_in(now)`` once the last reconnect window opened.
* CHECKED_IN: waiting for a ``Plan`` (selected) or a ``ReconnectWindow`` (not needed).
* TRAINING: ``Train``/``Evaluate`` is out; the plan's window (minus a margin) is the deadline.
* REPORTING: the update (plain) or the SecAgg+ keys went out; each ``StageRequest`` is
  answered by the SecAgg+ client until the coordinator ends the round with a
  ``ReconnectWindow``. Silence for longer than the stage window plus ``grace`` ends it too.
* Silence (or a refusal) sends the device IDLE for ``retry_earliest..retry_latest``; a
  window the coordinator gives later replaces that back-off. ``coordinator_online`` with a
  new incarnation means the coordinator restarted and lost its rounds: the device leaves
  the one it was in and checks in again within ``restart_spread``.
* A round's replies sent on its cohort topic are forgotten (``Forget``) once the round is
  over for the device: the window that ends it, its deadline passing, or a plan, window or
  announcement of a later round (the Abandon that leaves a round waits for the latter).
  Nobody reads that topic after the round: they would be resent for ever.

Times from the coordinator are relative, so they are turned into device-clock deadlines on
receipt. Every input that cannot be taken raises a ``RoundError`` (or a SecAgg+
``ProtocolError``) before anything changes; the facade logs it and drops the message.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import ConsistencyCheckFailed, ProtocolError
from fedrt.protocol.round_codec import decode_from_coordinator
from fedrt.protocol.round_errors import (
    DuplicateMessageId,
    IllegalTransition,
    MalformedMessage,
    StaleMessage,
    UnexpectedMessage,
)
from fedrt.protocol.round_secagg import secagg_config
from fedrt.protocol.secagg_config import SecAggConfig
from fedrt.protocol.topics import FEATURE_COHORT_TOPICS
from fedrt.sdk.async_hold import HeldUpdate, report
from fedrt.sdk.jitter import Jitter, SystemJitter
from fedrt.sdk.participant_commands import (
    CancelTraining,
    Command,
    Evaluate,
    Forget,
    RoundEnded,
    ScheduleCheckIn,
    Train,
)
from fedrt.sdk.participant_restart import ParticipantRestarts
from fedrt.sdk.participant_state import TRANSITIONS, ParticipantState
from fedrt.sdk.update_encoding import encode_update

# Jitter, SystemJitter, ParticipantState and TRANSITIONS are re-exported: their import path
# predates their modules.
__all__ = ["TRANSITIONS", "Jitter", "Participant", "ParticipantState", "SystemJitter"]

P = ParticipantState

# After answering stage S the device expects the request of the stage that follows.
_NEXT_REQUEST = {
    rm.Stage.ADVERTISE_KEYS: rm.Stage.SHARE_KEYS,
    rm.Stage.SHARE_KEYS: rm.Stage.MASKED_INPUT,
    rm.Stage.MASKED_INPUT: rm.Stage.CONSISTENCY_CHECK,
    rm.Stage.CONSISTENCY_CHECK: rm.Stage.UNMASK,
}
_SEEN_LIMIT = 4096
# Windows that end the device's part in the round they name.
_ROUND_OVER = frozenset(
    {
        rm.ReconnectReason.ROUND_COMPLETE,
        rm.ReconnectReason.ROUND_ABANDONED,
        rm.ReconnectReason.DROPPED,
    }
)


class Participant(ParticipantRestarts):
    """One device's side of one task's rounds; see the module docstring."""

    # Async tasks (``round_async``): the update trained for a TRAIN plan, until its cohort.
    _held: HeldUpdate | None = None
    # The SecAgg+ configuration of ``plan`` (None: a plain round), built once when the plan
    # was checked, and the one its update's SecAgg+ client runs on.
    _secagg: SecAggConfig | None = None

    # --- events ----------------------------------------------------------------------------

    def may_check_in(self, now: float) -> bool:
        """Whether a check-in is due: idle, the reconnect window has opened, and the task is
        not announced as closed."""
        closed = self.announcement is not None and not self.announcement.accepting
        return self.state is P.IDLE and now >= self.not_before and not closed

    def check_in(self, now: float, *, n_examples: int = 0) -> list[Command]:
        """Offer to take part; ``n_examples``: how many the device holds (0: not said)."""
        if self.state is not P.IDLE:
            raise IllegalTransition(f"cannot check in while {self.state.value}")
        msg = rm.CheckIn(
            msg_id=self._msg_id(),
            task_id=self.config.task_id,
            sdk_version=self.config.sdk_version,
            model_version=self.plan.model.version if self.plan else 0,
            n_examples=n_examples,
            features=ra.FEATURE_ASYNC | FEATURE_COHORT_TOPICS,
            async_ticket=self._held.ticket if self._held is not None else 0,
        )
        self._since = msg.msg_id
        self._move(P.CHECKED_IN, now + self.config.checkin_timeout)
        return [self._publish(msg)]

    def receive_data(self, data: bytes, now: float) -> list[Command]:
        return self.receive(decode_from_coordinator(data), now)

    def receive(self, message: rm.CoordinatorMessage, now: float) -> list[Command]:
        """Take one message from the coordinator; raises before any change if it cannot."""
        if not isinstance(message, rm.COORDINATOR_MESSAGES):
            raise UnexpectedMessage(f"{type(message).__name__} is not a coordinator message")
        if message.task_id != self.config.task_id:
            raise StaleMessage(f"message for task {message.task_id!r}")
        if isinstance(message, rm.TaskAnnouncement):
            return self._on_announcement(message, now)
        key = (message.round_id, message.msg_id)
        if key in self._seen:
            raise DuplicateMessageId(f"message {key} already processed", msg_id=message.msg_id)
        self._unanswered = 0  # the coordinator is answering again
        if isinstance(message, rm.Ack):
            out = self._on_ack(message, now)
        elif isinstance(message, rm.Plan):
            out = self._on_plan(message, now)
        elif isinstance(message, rm.StageRequest):
            out = self._on_request(message, now)
        else:
            out = self._on_reconnect(message, now)
        self._seen.add(key)
        if len(self._seen) > _SEEN_LIMIT:
            # Between rounds only "no round" replies accumulate; the oldest are safe to forget
            # because the coordinator's ids only grow.
            self._seen = set(sorted(self._seen)[_SEEN_LIMIT // 2 :])
        return out

    def training_done(
        self, delta: npt.NDArray[np.floating], n_examples: int, now: float
    ) -> list[Command]:
        """Local training finished: ``delta`` = trained - round weights (flat float vector)."""
        plan = self._training(rm.RoundKind.TRAIN)
        if self.deadline is not None and now > self.deadline:
            return self._give_up(rm.AbandonReason.DEADLINE, "training finished late", now)
        if plan.async_role == ra.ASYNC_TRAIN:
            # Kept until a cohort round asks for it: check in at once to say it is ready.
            delta = np.array(delta, dtype=np.float32)
            self._held = HeldUpdate(ticket=plan.round_id, delta=delta, n_examples=n_examples)
            self._to_idle(now, silence=False)
            return [ScheduleCheckIn(at=now)]
        return self._send_update(plan, delta, n_examples, now)

    def evaluation_done(
        self, n_examples: int, metric_sums: Mapping[str, float], now: float
    ) -> list[Command]:
        """Evaluation finished: example count and metric SUMS (e.g. loss_sum, correct)."""
        plan = self._training(rm.RoundKind.EVALUATE)
        if self.deadline is not None and now > self.deadline:
            return self._give_up(rm.AbandonReason.DEADLINE, "evaluation finished late", now)
        report = rm.EvalReport(
            msg_id=self._msg_id(),
            task_id=plan.task_id,
            round_id=plan.round_id,
            n_examples=n_examples,
            metrics=tuple(rm.Metric(name=k, value=v) for k, v in sorted(metric_sums.items())),
        )
        self._answered = rm.Stage.EVALUATION
        self._move(P.REPORTING, now + plan.report_within + self.config.grace)
        return [self._publish(report)]

    def training_abandoned(
        self, reason: rm.AbandonReason, now: float, detail: str = ""
    ) -> list[Command]:
        """Training or evaluation cannot finish (ineligible too long, no data, error)."""
        if self.state is not P.TRAINING:
            raise IllegalTransition(f"no training to abandon while {self.state.value}")
        return self._give_up(reason, detail, now, cancel=False)

    def spread_check_in(self, now: float) -> list[Command]:
        """The device (re)connected: an idle device whose check-in is due draws it uniformly
        within ``checkin_spread`` instead of checking in at once, so a fleet coming online
        does not stampede the coordinator. Nothing with a spread of 0."""
        return self._spread(now)

    def tick(self, now: float) -> list[Command]:
        if self.deadline is None or now < self.deadline:
            return []
        if self.state is P.TRAINING:
            return self._give_up(rm.AbandonReason.DEADLINE, "training window passed", now)
        if self.state in (P.CHECKED_IN, P.REPORTING):
            return self._end(None, "the coordinator went silent", now)
        return []

    # --- handlers --------------------------------------------------------------------------

    def _on_announcement(self, message: rm.TaskAnnouncement, now: float) -> list[Command]:
        opened = message.accepting and not (self.announcement and self.announcement.accepting)
        self.announcement = message
        # The rounds before the announced one are over (the one this device is in ends
        # with its window or its deadline): a device offline when they ended learns it here.
        last = message.round_id - 1
        if self.state in (P.TRAINING, P.REPORTING) and self.round_id is not None:
            last = min(last, self.round_id - 1)
        out = self._forget_cohort(last)
        # Devices whose window passed while the task took no check-ins all wait for this
        # announcement; spread, they do not all check in within the second it arrives.
        return out + self._spread(now) if opened else out

    def _spread(self, now: float) -> list[Command]:
        spread = self.config.checkin_spread
        if spread <= 0 or self.state is not P.IDLE or self.not_before > now:
            return []
        self.not_before = now + float(self._rng.uniform(0.0, spread))
        return [ScheduleCheckIn(at=self.not_before)]

    def _on_ack(self, ack: rm.Ack, now: float) -> list[Command]:
        if ack.acked not in self._unacked:
            raise DuplicateMessageId(f"nothing outstanding with id {ack.acked}", msg_id=ack.acked)
        self._unacked.discard(ack.acked)
        self._cohort.pop(ack.acked, None)
        out: list[Command] = [Forget(msg_id=ack.acked)]
        if ack.acked == self._leaving:
            # The coordinator knows this device left its round: come back (unless it gave a
            # window meanwhile), to be placed by the coordinator rather than by a guess.
            self._leaving = None
            if self.state is P.IDLE and self._silence and self.not_before > now:
                self.not_before = now
                out.append(ScheduleCheckIn(at=now))
        refused = ack.status in (rm.AckStatus.REJECTED, rm.AckStatus.LATE)
        # Only a refusal of what this check-in or round sent ends it: an older message's says
        # nothing about it (e.g. an answer of a round a restarted coordinator lost).
        mine = ack.acked >= self._since
        ours = mine and (self.state is P.CHECKED_IN or ack.round_id == self.round_id)
        if refused and ours and self.state in (P.CHECKED_IN, P.REPORTING):
            out += self._end(None, f"refused by the coordinator ({ack.status.name})", now)
        return out

    def _on_plan(self, plan: rm.Plan, now: float) -> list[Command]:
        if plan.async_role == ra.ASYNC_REPORT:
            return self._on_cohort_plan(plan, now)
        # An async task's TRAIN plans carry the round they will feed: two may share it.
        again = plan.async_role == ra.ASYNC_TRAIN and plan.round_id == self.round_id
        if self.round_id is not None and plan.round_id <= self.round_id and not again:
            raise StaleMessage(
                f"plan of round {plan.round_id}, already took part in {self.round_id}"
            )
        if self.state not in (P.IDLE, P.CHECKED_IN):
            raise UnexpectedMessage(f"a plan arrived while {self.state.value}")
        secagg = self._check_secagg(plan)
        deadline = now + max(0.0, plan.report_within - self.config.deadline_margin)
        out = self._take(plan, secagg)
        self._held = None  # a fresh TRAIN plan (or a sync round) replaces any kept update
        self._move(P.TRAINING, deadline)
        if plan.kind is rm.RoundKind.EVALUATE:
            return [*out, Evaluate(plan=plan, deadline=deadline)]
        return [*out, Train(plan=plan, deadline=deadline)]

    def _on_cohort_plan(self, plan: rm.Plan, now: float) -> list[Command]:
        """An async cohort round asks for the kept update: encode it at once, discounted
        for the staleness the plan states (``async_hold.report``)."""
        held = self._held
        if held is None or plan.round_id < held.ticket:
            raise UnexpectedMessage("an async cohort plan arrived, and no update is kept for it")
        if self.state not in (P.IDLE, P.CHECKED_IN):
            raise UnexpectedMessage(f"a plan arrived while {self.state.value}")
        out = self._take(plan, self._check_secagg(plan))
        self._held = None
        self._move(P.TRAINING, now + plan.report_within)
        delta, n_examples = report(held, plan)
        return out + self._send_update(plan, delta, n_examples, now)

    def _send_update(
        self, plan: rm.Plan, delta: npt.NDArray[np.floating], n_examples: int, now: float
    ) -> list[Command]:
        """Encode an update for ``plan`` (plain, or SecAgg+'s first stage) and send it."""
        stage, payload, self._client = encode_update(
            delta,
            n_examples,
            plan,
            update_key=self._update_key,
            identity=self._identity,
            random=self._random,
            secagg=self._secagg,
        )
        return self._answer(plan, stage, payload, now, plan.report_within)

    def _take(self, plan: rm.Plan, secagg: SecAggConfig | None) -> list[Command]:
        """Make ``plan`` the round's; returns the Forgets of earlier rounds' cohort replies
        (a plan of a later round says they are over)."""
        self.plan, self.round_id, self._answered, self._client = plan, plan.round_id, None, None
        self._secagg = secagg
        self._since = self._next_msg_id
        self._seen = {k for k in self._seen if k[0] == plan.round_id}
        return self._forget_cohort(plan.round_id - 1)

    def _check_secagg(self, plan: rm.Plan) -> SecAggConfig | None:
        """``plan``'s SecAgg+ configuration (None: a plain round); ``MalformedMessage`` if
        it is not this device's or cannot be used."""
        if plan.secagg is None:
            return None
        me = plan.secagg.members[plan.secagg.client_id]
        if me.device_id != self.config.device_id or me.identity_key != self._public:
            raise MalformedMessage("the plan's cohort names another device at our index")
        try:
            return secagg_config(
                task_id=plan.task_id,
                round_id=plan.round_id,
                spec=plan.secagg,
                update=plan.update,
            )
        except ProtocolError as exc:
            raise MalformedMessage(f"unusable SecAgg+ parameters: {exc}") from None

    def _on_request(self, req: rm.StageRequest, now: float) -> list[Command]:
        if req.round_id != self.round_id:
            raise StaleMessage(f"request for round {req.round_id}, taking part in {self.round_id}")
        expected = _NEXT_REQUEST.get(self._answered) if self._answered else None
        if self.state is not P.REPORTING or self._client is None or req.stage != expected:
            raise UnexpectedMessage(f"{req.stage.name} is not expected while {self.state.value}")
        try:
            reply = self._client.receive(req.payload)
        except ConsistencyCheckFailed as exc:
            # The server showed a survivor set that t committee members did not certify: it
            # may be trying to unmask someone. Reveal nothing, say why, and leave the round.
            detail = f"SecAgg+ consistency check failed: {exc}"
            return self._give_up(rm.AbandonReason.SERVER_INCONSISTENT, detail, now, cancel=False)
        if reply is None:
            raise UnexpectedMessage(f"the SecAgg+ client had no answer to {req.stage.name}")
        assert self.plan is not None
        return self._answer(self.plan, req.stage, reply, now, req.respond_within)

    def _on_reconnect(self, window: rm.ReconnectWindow, now: float) -> list[Command]:
        current = self.state in (P.TRAINING, P.REPORTING)
        if current and window.round_id != self.round_id:
            raise StaleMessage(
                f"window for round {window.round_id}, taking part in {self.round_id}"
            )
        if self.state is P.IDLE and not self._silence:
            raise UnexpectedMessage("a reconnect window arrived while idle")
        # While idle in its own back-off (it gave up on silence or a refusal, and the window
        # came after), the device takes the coordinator's time instead.
        at = now + float(self._rng.uniform(window.earliest, window.latest))
        if window.reason is rm.ReconnectReason.TOO_STALE:
            self._held = None  # the coordinator will not take it: train again when back
        out: list[Command] = []
        if self.state is P.TRAINING:
            out.append(CancelTraining(reason=window.reason.name.lower()))
        # The window's round is over for this device if it ends the device's part in it
        # (e.g. a window queued while the device was offline, after its deadline); the rounds
        # before it are over whatever the window says (round 0, a check-in's: none).
        over = current or window.reason in _ROUND_OVER
        out += self._forget_cohort(window.round_id if over else window.round_id - 1)
        if current:
            out.append(RoundEnded(round_id=window.round_id, reason=window.reason))
        self._to_idle(at, silence=False)
        out.append(ScheduleCheckIn(at=at))
        return out
