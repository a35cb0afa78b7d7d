"""The coordinator's sans-I/O round state machine: one round from check-in to commit.

Its states, moves and theory of operation are in ``states``; the commands it returns in
``commands``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.privacy.central import CentralNoise
from fedrt.coordinator.rounds.aggregation import RoundAggregation
from fedrt.coordinator.rounds.cohorts import check_cohort_topic
from fedrt.coordinator.rounds.commands import (
    AbandonRound,
    CohortsFormed,
    Command,
    RoundConfig,
    RoundMetrics,
    RoundStatus,
    Send,
    StageChanged,
    update_spec,
)
from fedrt.coordinator.rounds.delegation import Delegation
from fedrt.coordinator.rounds.outbox import RoundOutbox
from fedrt.coordinator.rounds.roster import DeviceStatus, RoundDevice, RoundRoster
from fedrt.coordinator.rounds.states import (
    FINAL,
    INPUTS_FIXED,
    RoundState,
    check_move,
    expected_stage,
    first_stage,
    secagg_after,
)
from fedrt.coordinator.selection.pace import PaceSteering
from fedrt.coordinator.selection.sampling import sample_cohort
from fedrt.coordinator.strategies.optimizers import OptimizerState, ServerOptimizer
from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.round_codec import decode_from_device
from fedrt.protocol.round_errors import (
    DuplicateMessageId,
    IllegalTransition,
    LateMessage,
    StaleMessage,
    UnexpectedMessage,
    UnknownParticipant,
)
from fedrt.protocol.topics import FEATURE_COHORT_TOPICS

S = RoundState


class RoundMachine(Delegation):
    """One round of one task, driven by events; see ``states`` for how it moves."""

    def __init__(
        self,
        config: RoundConfig,
        *,
        weights: npt.NDArray[np.floating],
        optimizer: ServerOptimizer,
        optimizer_state: OptimizerState,
        pace: PaceSteering,
        rng: np.random.Generator,
        identity_keys: Mapping[str, bytes] | None = None,
        first_msg_id: int = 1,
        central_noise: CentralNoise | None = None,  # central DP (issue 9)
    ) -> None:
        w = np.asarray(weights)
        if w.ndim != 1 or w.size == 0:
            raise IllegalTransition("weights must be a non-empty flat vector")
        self._uses_secagg = config.secagg and config.kind is rm.RoundKind.TRAIN
        if self._uses_secagg and identity_keys is None:
            raise IllegalTransition("a SecAgg+ round needs the devices' identity keys")
        self.config = config
        self.update_spec = update_spec(config, int(w.size), rng, secagg=self._uses_secagg)
        self._agg = RoundAggregation(
            config,
            self.update_spec,
            weights=w,
            optimizer=optimizer,
            optimizer_state=optimizer_state,
            central_noise=central_noise,
        )
        self._out = RoundOutbox(config, self.update_spec, pace, first_msg_id)
        self._rng = rng
        # Not copied: the driver adds the keys of devices that enroll while the round runs.
        self._keys = identity_keys if identity_keys is not None else {}
        self.state = S.CREATED
        self.deadline: float | None = None
        self._roster = RoundRoster()
        self._started_at = 0.0
        # Devices whose SDK sends a round's replies on its cohort's topic (check-in feature).
        self._cohort_topics: set[str] = set()
        self._init_delegation()  # SecAgg+ cohorts other instances run (``delegation``)

    # --- events ----------------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """Open check-in: announce the round."""
        out: list[Command] = []
        self._started_at = now
        self._move(S.CHECK_IN, now, now + self.config.checkin_timeout, out, "opened")
        out.append(self._out.announce(accepting=True))
        return out

    def receive_data(
        self, device_id: str, data: bytes, now: float, *, cohort: str | None = None
    ) -> list[Command]:
        """Decode bytes from ``device_id``'s up-topic and ``receive`` them."""
        return self.receive(device_id, decode_from_device(data), now, cohort=cohort)

    def receive(
        self, device_id: str, message: rm.DeviceMessage, now: float, *, cohort: str | None = None
    ) -> list[Command]:
        """Take one message from ``device_id``; raises before any change if it cannot.
        ``cohort``: the key of the cohort topic it came under (None: a plain up-topic, which
        older SDKs use and every device may)."""
        if not isinstance(message, rm.DEVICE_MESSAGES):
            raise UnexpectedMessage(f"{type(message).__name__} is not a device message")
        if message.task_id != self.config.task_id:
            raise StaleMessage(f"message for task {message.task_id!r}")
        if self.state is S.CREATED:
            raise IllegalTransition("the round has not started")
        if cohort is not None:
            self._check_cohort(device_id, message, cohort)
        dev = self._roster.get(device_id)
        if dev is not None and message.msg_id in dev.seen:
            raise DuplicateMessageId(
                f"{device_id} message {message.msg_id} already processed", msg_id=message.msg_id
            )
        if isinstance(message, rm.CheckIn):
            return self._on_checkin(device_id, dev, message, now)
        if message.round_id != self.config.round_id:
            raise StaleMessage(f"message for round {message.round_id}")
        if dev is None:
            raise UnknownParticipant(f"{device_id} is not part of round {self.config.round_id}")
        if isinstance(message, rm.Abandon):
            return self._on_abandon(dev, message, now)
        if dev.status is DeviceStatus.CHECKED_IN:
            raise UnexpectedMessage(f"{device_id} answers a round that has not selected yet")
        if dev.status is not DeviceStatus.ACTIVE:
            raise LateMessage(f"{device_id} is no longer part of the round ({dev.status.value})")
        return self._on_answer(dev, message, now)

    def tick(self, now: float) -> list[Command]:
        """Act on a deadline that has passed (a no-op before it)."""
        out: list[Command] = []
        if self.deadline is None or now < self.deadline or self.state in FINAL:
            return out
        if self.state is S.CHECK_IN:
            self._close_checkin(now, out)
        elif self._waiting is not None:
            self._give_up_waiting(now, out)
        else:
            self._close_stage(now, out, "deadline")
        return out

    def cancel(self, reason: str, now: float) -> list[Command]:
        """Abandon the round on the operator's request (pause, cancel, shutdown)."""
        if self.state in FINAL:
            raise IllegalTransition(f"the round is already {self.state.value}")
        out: list[Command] = []
        self._abandon(reason, now, out)
        return out

    def rejection(self, device_id: str, message: rm.DeviceMessage, error: Exception) -> Send:
        """The ``Ack`` that tells a device its message was refused (for the driver to send
        after catching ``error``), so the device's outbox stops resending it. A refused
        answer (not a late or repeated one) counts as a discarded update."""
        return self._out.rejection(self._roster, device_id, message, error)

    # --- queries ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return None if self.state in FINAL else self.deadline

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    @property
    def next_msg_id(self) -> int:
        """The id the next outgoing message gets (persist it to continue after a restart)."""
        return self._out.next_msg_id

    def answered(self, stage: rm.Stage) -> list[str]:
        """The devices that answered ``stage`` (async rounds: whose update is in the sum)."""
        devices = (self._roster.get(d) for d in self._roster.ids())
        return [d.device_id for d in devices if d is not None and stage in d.answered]

    def status(self) -> RoundStatus:
        return self._roster.status(
            round_id=self.config.round_id,
            state=self.state.value,
            deadline=self.next_deadline(),
            stage=self._expected_stage(),
        )

    # --- handlers --------------------------------------------------------------------------

    def _check_cohort(self, device_id: str, message: rm.DeviceMessage, key: str) -> None:
        """A reply under cohort topic ``key`` must be its sender's cohort's, this round's
        (another round's is refused as stale further on)."""
        if isinstance(message, rm.CheckIn) or message.round_id == self.config.round_id:
            check_cohort_topic(self._agg.cohorts, device_id, message, key)

    def _on_checkin(
        self, device_id: str, dev: RoundDevice | None, msg: rm.CheckIn, now: float
    ) -> list[Command]:
        if self.state is S.CHECK_IN and self._uses_secagg and device_id not in self._keys:
            raise UnknownParticipant(f"{device_id} has no registered identity key")
        out: list[Command] = [self._out.ack(device_id, msg, rm.AckStatus.ACCEPTED)]
        if dev is not None:
            # Checking in again: a resend after a reboot while waiting (nothing to do), or a
            # device that restarted mid-round and lost its round state (it is out).
            dev.seen.add(msg.msg_id)
            if dev.status is DeviceStatus.ACTIVE:
                self._drop(dev, DeviceStatus.WITHDRAWN)
                out.append(self._out.reconnect(device_id, rm.ReconnectReason.DROPPED, now))
                self._after_answer_or_loss(now, out)
            elif dev.status is not DeviceStatus.CHECKED_IN:
                out.append(self._out.reconnect(device_id, rm.ReconnectReason.DROPPED, now))
            return out
        if self.state is not S.CHECK_IN:
            reason = rm.ReconnectReason.NO_ROUND if self.finished else rm.ReconnectReason.ROUND_FULL
            out.append(self._out.reconnect(device_id, reason, now, not_before=self._remaining(now)))
            return out
        if not self.config.admits(device_id, msg.n_examples):  # the task's selection filters
            out.append(self._out.reconnect(device_id, rm.ReconnectReason.NO_ROUND, now))
            return out
        self._roster.add(device_id, msg.msg_id)
        if msg.features & FEATURE_COHORT_TOPICS:
            self._cohort_topics.add(device_id)
        # The cohort is sampled from whoever checks in by the deadline (selection.sampling).
        if len(self._roster) >= self.config.pool_target:
            self._close_checkin(now, out)
        return out

    def _on_abandon(self, dev: RoundDevice, msg: rm.Abandon, now: float) -> list[Command]:
        if dev.status is not DeviceStatus.ACTIVE and dev.status is not DeviceStatus.CHECKED_IN:
            raise LateMessage(f"{dev.device_id} is no longer part of the round")
        out: list[Command] = [self._out.ack(dev.device_id, msg, rm.AckStatus.ACCEPTED)]
        dev.seen.add(msg.msg_id)
        if dev.status is DeviceStatus.CHECKED_IN:
            self._roster.remove(dev.device_id)
            return out
        self._drop(dev, DeviceStatus.WITHDRAWN)
        self._after_answer_or_loss(now, out)
        return out

    def _on_answer(
        self, dev: RoundDevice, msg: rm.StageResponse | rm.EvalReport, now: float
    ) -> list[Command]:
        stage = self._expected_stage()
        got = msg.stage if isinstance(msg, rm.StageResponse) else rm.Stage.EVALUATION
        if stage is None or got != stage:
            raise UnexpectedMessage(f"{got.name} is not accepted in {self.state.value}")
        if stage in dev.answered:
            raise UnexpectedMessage(f"{dev.device_id} has already answered {stage.name}")
        # Validate into the aggregation state first: a bad payload raises with nothing changed.
        if isinstance(msg, rm.EvalReport):
            self._agg.add_evaluation(dev.device_id, msg)
        elif stage is rm.Stage.PLAIN_UPDATE:
            self._agg.add_plain(dev.device_id, msg.payload)
        else:
            self._agg.add_secagg(dev.device_id, msg.payload)
        if isinstance(msg, rm.StageResponse):
            self._roster.bytes_received += len(msg.payload)
        self._roster.answer(dev, stage)
        dev.seen.add(msg.msg_id)
        out: list[Command] = [self._out.ack(dev.device_id, msg, rm.AckStatus.ACCEPTED)]
        self._after_answer_or_loss(now, out)
        return out

    # --- stage logic -----------------------------------------------------------------------

    def _expected_stage(self) -> rm.Stage | None:
        return expected_stage(self.state, self.config.kind, secagg=self._uses_secagg)

    def _after_answer_or_loss(self, now: float, out: list[Command]) -> None:
        stage = self._expected_stage()
        if stage is None:
            return
        # Running counts, not a walk over the cohort: this runs after every answer.
        active, answered = self._roster.n_active(), self._roster.n_answered(stage)
        elsewhere = self._delegated()  # in cohorts other instances run: counted as in
        # Once the masked inputs are in, SecAgg+ alone judges whether enough remain.
        if self.state not in INPUTS_FIXED and active + elsewhere < self.config.min_reports:
            self._abandon(f"only {active} devices left, {self.config.min_reports} needed", now, out)
        elif answered == active or (
            self.state is S.TRAINING and answered + elsewhere >= self.config.goal_count
        ):
            self._close_stage(now, out, "all answered" if answered == active else "goal met")

    def _close_checkin(self, now: float, out: list[Command]) -> None:
        cfg = self.config
        ids = self._roster.ids()
        if len(ids) < max(cfg.min_reports, 2 if self._uses_secagg else 1):
            self._abandon(f"{len(ids)} devices checked in, {cfg.min_reports} needed", now, out)
            return
        # Uniform from the pool, in a random order (the SecAgg+ index). The rest come back
        # as the cohort will, a pace window after now: the closed announcement holds them
        # until the next round opens. Deferred past this round's worst case, they would
        # miss the next pool and the next sample would favour this cohort.
        order = sample_cohort(ids, cfg.select_count, self._rng)
        for device_id in sorted(set(ids).difference(order)):  # sample_cohort's leftovers
            self._roster.unselect(device_id)
            out.append(self._out.reconnect(device_id, rm.ReconnectReason.ROUND_FULL, now))
        self._roster.select(order)
        secagg_spec: dict[str, rm.SecAggSpec] = {}
        if self._uses_secagg:
            try:
                secagg_spec = self._agg.open_secagg(order, self._keys, self._rng)
            except ProtocolError as exc:
                self._abandon(f"cannot set up SecAgg+: {exc}", now, out)
                return
            cohorts = self._agg.cohorts
            assert cohorts is not None
            self._roster.set_cohorts(cohorts.groups())
            # Before any plan names a key: the driver subscribes to the cohorts' topics.
            out.append(CohortsFormed(round_id=cfg.round_id, keys=cohorts.keys()))
        self._move(S.TRAINING, now, now + cfg.training_timeout, out, "selection closed")
        out.append(self._out.announce(accepting=False))
        for device_id in order:  # each device sees only its own cohort
            key = ""
            if self._agg.cohorts is not None and device_id in self._cohort_topics:
                key = self._agg.cohorts.key_of(device_id) or ""
            out.append(self._out.plan(device_id, secagg_spec.get(device_id), key))

    def _close_stage(self, now: float, out: list[Command], why: str) -> None:
        stage = self._expected_stage()
        assert stage is not None
        cfg, needed = self.config, self.config.min_reports
        active = self._roster.active()
        answered = [d for d in active if stage in d.answered]
        elsewhere = self._delegated()
        goal_met = self.state is S.TRAINING and len(answered) + elsewhere >= cfg.goal_count
        reason = rm.ReconnectReason.ROUND_FULL if goal_met else rm.ReconnectReason.DROPPED
        for dev in active:
            if stage not in dev.answered:
                self._cut(dev, reason, now, out)
        # Say which deadline made a stage impossible (a fleet's size can make it so).
        name = "training" if self.state is S.TRAINING else stage.name
        window = cfg.training_timeout if self.state is S.TRAINING else cfg.stage_timeout
        late = f" by the {name} deadline ({window:g} s)" if why == "deadline" else ""
        if self.state not in INPUTS_FIXED and len(answered) + elsewhere < needed:
            self._abandon(f"{len(answered)} answered {stage.name}{late}, {needed} needed", now, out)
            return
        cohorts = self._agg.cohorts
        if cohorts is None:
            self._finish(now, out, answered)
            return
        requests, failed = cohorts.close_stage(late)
        for device_id in (d for c in failed for d in c.members):  # told their cohort failed
            member = self._roster.get(device_id)
            if member is not None and member.status is DeviceStatus.ACTIVE:
                self._cut(member, rm.ReconnectReason.ROUND_ABANDONED, now, out)
        left = self._roster.n_active() + self._delegated()
        none_left = not cohorts.any_left()
        if none_left or (self.state not in INPUTS_FIXED and left < needed):
            lost = "every SecAgg+ cohort failed" if none_left else f"{left} devices left"
            self._abandon(f"{lost}: {cohorts.failures()}", now, out)
            return
        if self.state is S.UNMASK:
            self._finish_or_wait(now, out, answered)
            return
        nxt, next_stage = secagg_after(self.state)
        self._move(nxt, now, now + cfg.stage_timeout, out, why)
        for dev in answered:
            payload = requests.get(dev.device_id)
            if dev.status is not DeviceStatus.ACTIVE:
                continue
            if payload is not None:
                out.append(self._out.request(dev.device_id, next_stage, payload))
            else:  # answered, but SecAgg+ dropped it: out of the round
                self._cut(dev, rm.ReconnectReason.DROPPED, now, out)

    def _finish(self, now: float, out: list[Command], answered: list[RoundDevice]) -> None:
        try:
            command = self._agg.finish(
                [d.device_id for d in answered], self._metrics(now, len(answered))
            )
        except ProtocolError as exc:
            self._abandon(f"aggregation failed: {exc}", now, out)
            return
        self._move(S.COMMITTED, now, None, out, "aggregated")
        for dev in self._roster.active():
            out.append(self._out.reconnect(dev.device_id, rm.ReconnectReason.ROUND_COMPLETE, now))
        out.append(command)

    def _abandon(self, reason: str, now: float, out: list[Command]) -> None:
        self._move(S.ABANDONED, now, None, out, reason)
        for dev in self._roster.with_status(DeviceStatus.ACTIVE, DeviceStatus.CHECKED_IN):
            out.append(self._out.reconnect(dev.device_id, rm.ReconnectReason.ROUND_ABANDONED, now))
        metrics = self._metrics(now, 0)  # before discard(): it forgets the bad holders
        self._agg.discard()
        out.append(AbandonRound(round_id=self.config.round_id, reason=reason, metrics=metrics))

    def _cut(
        self, dev: RoundDevice, reason: rm.ReconnectReason, now: float, out: list[Command]
    ) -> None:
        if reason is rm.ReconnectReason.DROPPED:
            self._drop(dev, DeviceStatus.CUT)
        self._roster.set_status(dev, DeviceStatus.CUT)
        out.append(self._out.reconnect(dev.device_id, reason, now))

    # --- helpers ---------------------------------------------------------------------------

    def _drop(self, dev: RoundDevice, status: DeviceStatus) -> None:
        self._roster.drop(dev, status, self.state.value)

    def _move(
        self, new: RoundState, now: float, deadline: float | None, out: list[Command], why: str
    ) -> None:
        check_move(self.state, new)
        previous, self.state, self.deadline = self.state, new, deadline
        out.append(StageChanged(round_id=self.config.round_id, previous=previous.value,
                                state=new.value, at=now, active=self._roster.n_active(),
                                deadline=deadline, reason=why))  # fmt: skip

    def _remaining(self, now: float) -> float:
        # A device turned away mid-round should not come back before this round could end.
        budget = self.config.training_timeout + 4 * self.config.stage_timeout
        return max(0.0, self._started_at + self.config.checkin_timeout + budget - now)

    def _metrics(self, now: float, included: int) -> RoundMetrics:
        first = first_stage(self.config.kind, secagg=self._uses_secagg)
        metrics = self._roster.metrics(
            first=first, included=included, started_at=self._started_at, now=now
        )
        return self._agg.secagg_metrics(metrics, secagg=self._uses_secagg)


__all__ = ["RoundMachine"]
