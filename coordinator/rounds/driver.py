"""The round driver: runs each running task's rounds by feeding its ``RoundMachine``.

The service hands it authenticated device messages and ticks; it decodes, calls the
machine, and carries out the commands the machine returns (publish, record, commit).
It decides nothing about the protocol itself. What it owns is the life *between* rounds:
which model a round starts from (the task's promoted version, re-read every round so an
operator's rollback takes effect), the server optimizer state, round numbering and
message ids, turning a committed aggregate into a new signed model version, and whether
that version is promoted or a task rolled back (``rollout``: the task's ``rollout_gate``).

A coordinator that restarts marks the round it was running as abandoned (its state died
with the old process) and waits: that round's devices learn of the restart from its new
incarnation (``topics.coordinator_presence``) and check in again within seconds, and the
first check-in opens the next round. Messages of the lost round are acknowledged LATE, with
a short window while no round is open. A round that nobody checked in to leaves the task
waiting the same way, so an idle task does not open and abandon rounds while its devices
are away.

Mixed in: ``endings`` (commit, evaluation, abandon, completion), ``async_driver`` (async
tasks), ``adoption`` (leases). Helpers: ``plan``, ``runs``, ``versions``, ``rollout``,
``journal``, ``dp``. Every store transaction of the driver is opened by it or its mixins
(but a rollback's, in ``rollout``, fenced by the driver's lease check).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from fedrt.coordinator.driver.base import DriverContext, RoundDriver
from fedrt.coordinator.errors import LeaseLost
from fedrt.coordinator.privacy.accounting import PrivacyBudgetExceeded
from fedrt.coordinator.records import TaskRecord, TaskStatus
from fedrt.coordinator.rounds.adoption import TaskAdoption
from fedrt.coordinator.rounds.async_driver import AsyncRounds
from fedrt.coordinator.rounds.cohort_owners import CohortOwnership
from fedrt.coordinator.rounds.cohort_spread import CohortSpread
from fedrt.coordinator.rounds.commands import (
    AbandonRound,
    Announce,
    CohortsFormed,
    Command,
    Commit,
    EvaluationDone,
    RoundConfig,
    Send,
    StageChanged,
)
from fedrt.coordinator.rounds.dp import NoiseCalibration, central_noise, with_dp
from fedrt.coordinator.rounds.endings import RoundEndings
from fedrt.coordinator.rounds.journal import RoundListener, record_stage, record_start
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.rounds.personal import with_personal
from fedrt.coordinator.rounds.plan import round_config, round_kind, with_pool
from fedrt.coordinator.rounds.rollout import Rollout
from fedrt.coordinator.rounds.runs import (
    LoadedModel,
    Run,
    learn_key,
    new_run,
    no_round,
    save,
    welcome,
)
from fedrt.coordinator.rounds.scaffold import with_scaffold
from fedrt.coordinator.rounds.versions import Evaluator, load_model
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.protocol import round_messages as rm
from fedrt.protocol.relay_topics import offer_topic
from fedrt.protocol.round_codec import decode_from_device, encode_message
from fedrt.protocol.topics import UpTopic, device_inbox, task_announcement

log = logging.getLogger(__name__)

# After an abandoned round, wait a little before the next: the devices that were in it
# need their reconnect windows to pass anyway, and a broken task should not spin.
DEFAULT_RETRY_DELAY_S = 2.0


class FederatedDriver(RoundEndings, AsyncRounds, TaskAdoption, RoundDriver):
    """Drives rounds for every running task of one coordinator."""

    def __init__(
        self,
        ctx: DriverContext,
        *,
        evaluator: Evaluator | None = None,
        listener: RoundListener | None = None,
        pace: PaceConfig | None = None,
        rng: np.random.Generator | None = None,
        retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    ) -> None:
        self.ctx = ctx
        self.evaluator = evaluator
        self.rollout = Rollout(ctx, evaluator)  # which versions reach devices
        self.listener = listener
        self.pace_config = pace or ctx.pace
        self.rng = rng or np.random.default_rng()
        self.retry_delay_s = retry_delay_s
        self.runs: dict[str, Run] = {}
        self._calibration = NoiseCalibration()
        # Tasks that are not running but whose devices still need answers (created, paused).
        self.idle: dict[str, Run] = {}
        # Several instances on one store: only the tasks whose lease we hold (``ownership``).
        self.owner = ctx.ownership
        # The SecAgg+ cohorts of the rounds this instance runs: leases and topics.
        self.cohort_owner = CohortOwnership(
            ctx.store,
            self.owner.instance_id if self.owner is not None else None,
            ctx.follow,
            lease_s=self.owner.lease_s if self.owner is not None else 15.0,
        )
        # ``[cluster] spread_cohorts``: cohorts handed to and taken from other instances.
        self.spread: CohortSpread | None = None
        if ctx.spread_cohorts and self.owner is not None:
            self.spread = CohortSpread(ctx.store, self.owner.instance_id, ctx.follow,
                                       self._send, lease_s=self.owner.lease_s,
                                       nudge=self._nudge)  # fmt: skip
        self._recover(ctx.clock())

    # ------------------------------------------------------------------ events
    def on_device_message(self, up: UpTopic, payload: bytes, now: float) -> None:
        device_id, cohort = up.device_id, up.cohort
        msg = decode_from_device(payload)
        if cohort is not None and self.spread is not None and self.spread.runs(cohort):
            self.spread.receive(cohort, device_id, msg, now)  # another instance's round
            return
        run = self.runs.get(msg.task_id)
        if run is not None and run.spec.mode == "async":  # FedBuff (issue 19): async_driver
            self._async_message(run, device_id, msg, now, cohort=cohort)
            return
        if run is None:
            # A task not (yet, or no longer) running: pace the device instead of leaving it
            # waiting for an answer. Unknown tasks raise NotFoundError here.
            task = self.ctx.store.get_task(msg.task_id)
            if not self._owns(task, now):
                return  # another coordinator instance runs this task and answers
            run = self.runs.get(task.task_id)  # adopted just now from a dead instance
        if run is None:
            run = self.idle.get(task.task_id) or self._new_run(task)
            self.idle[task.task_id] = run
            paused = task.status is TaskStatus.PAUSED
            reason = rm.ReconnectReason.TASK_PAUSED if paused else rm.ReconnectReason.NO_ROUND
            self._act(run, no_round(run, device_id, msg, now, reason), now)
            return
        machine = run.machine
        idle = machine is None or machine.finished
        if idle and isinstance(msg, rm.CheckIn) and (run.waiting or now >= run.next_start):
            # A waiting task's next round opens with its first check-in (module docstring).
            run.waiting = False
            self._start_round(run, now)
            machine = run.machine
        if machine is None or machine.finished:
            reason = rm.ReconnectReason.NO_ROUND
            self._act(run, no_round(run, device_id, msg, now, reason), now)
            return
        if isinstance(msg, rm.CheckIn) and device_id not in run.keys:
            learn_key(self.ctx.store, run, device_id)
        self._feed(run, machine, device_id, msg, now, cohort=cohort)

    def on_tick(self, now: float) -> None:
        if self.owner is not None and self.owner.sync_due(now):
            self._sync(now)
            self.cohort_owner.renew(now)
            if self.spread is not None:
                self._spread_sync(now)
        self.cohort_owner.tick(now)
        if self.spread is not None:
            self.spread.tick(now)
        for run in list(self.runs.values()):
            if run.announce:
                run.announce = False
                self._act(run, [welcome(run)], now)
            machine = run.machine
            if machine is not None and not machine.finished:
                deadline = machine.next_deadline()
                if deadline is not None and deadline <= now:
                    self._act(run, machine.tick(now), now)
            idle = run.machine is None or run.machine.finished
            if idle and run.waiting and run.privacy is not None:
                # So the first check-in finds it done.
                self._calibration.ready(run, self.ctx.store, now)
            if idle and not run.waiting and now >= run.next_start:
                self._start_round(run, now)

    def on_task_change(self, task: TaskRecord) -> None:
        now = self.ctx.clock()
        if task.status is TaskStatus.RUNNING:
            if task.task_id not in self.runs and self._may_run(task.task_id, now):
                idle = self.idle.pop(task.task_id, None)
                fresh = self._new_run(task)
                if idle is not None:
                    fresh.next_msg_id = max(fresh.next_msg_id, idle.next_msg_id)
                self.runs[task.task_id] = fresh
            return
        run = self.runs.pop(task.task_id, None)
        if run is not None:
            self.idle[task.task_id] = run
        if run is not None and run.machine is not None and not run.machine.finished:
            self._act(run, run.machine.cancel(f"task {task.status.value}", now), now)

    def on_shutdown(self, now: float) -> None:
        for run in list(self.runs.values()):
            try:
                with self.ctx.store.transaction():
                    self._fence(run.task_id, now)
                    save(self.ctx.store, run)
            except LeaseLost:
                self._forget(run.task_id)
            self.cohort_owner.ended(run.task_id, now)
        if self.spread is not None:
            self.spread.shutdown(now)
        if self.owner is not None:  # so that another instance takes over at once
            self.owner.release_all()

    # ------------------------------------------------------------------ rounds
    def _start_round(self, run: Run, now: float) -> None:
        task = self.ctx.store.get_task(run.task_id)
        if task.status is not TaskStatus.RUNNING:
            return
        if run.spec.mode == "async":  # no rounds on a timer: one per buffer (async_driver)
            self._async_start(run, now)
            return
        if run.round_no >= run.spec.max_rounds:
            self._finish_task(run, now)
            return
        if run.privacy is not None and not self._calibration.ready(run, self.ctx.store, now):
            return
        model = load_model(self.ctx, run, task.model_sha256, retry_delay_s=self.retry_delay_s)
        run.round_no += 1
        spec = run.spec
        kind = round_kind(spec, run.round_no)
        config = round_config(
            task_id=run.task_id,
            round_no=run.round_no,
            spec=spec,
            kind=kind,
            model=model.record,
            model_url_prefix=self.ctx.model_url_prefix,
            batch_size=model.manifest.batch_size,
        )
        config = with_personal(config, spec, model.manifest)  # FedPer, fine-tuning
        config = with_scaffold(
            config, spec, model.record, self.ctx.model_url_prefix, self.ctx.catalog.blobs
        )
        devices = [d for d in self.ctx.store.list_devices() if not d.revoked]
        keys = {d.device_id: d.public_key for d in devices}
        run.keys = keys
        config = with_pool(config, spec, devices)
        machine = self._open_round(run, config, model, keys, now, population=config.pool_target)
        if machine is None:
            return
        log.info("task %s: round %d (%s) started", run.task_id, run.round_no, kind.name.lower())
        self._act(run, machine.start(now), now)

    def _open_round(
        self,
        run: Run,
        config: RoundConfig,
        model: LoadedModel,
        keys: Mapping[str, bytes],
        now: float,
        *,
        population: int,
    ) -> RoundMachine | None:
        """Plan a training round's DP over ``population`` (a budget stop completes the task
        instead), make the round's machine and record its start, fenced: the machine, now the
        run's, or None when the round does not open. Sync rounds and async cohorts alike."""
        run.dp_round = None
        if run.privacy is not None and config.kind is rm.RoundKind.TRAIN:
            try:
                config = with_dp(run, config, population=population)
            except PrivacyBudgetExceeded as exc:
                run.round_no -= 1
                self._stop_for_budget(run, exc, now)
                return None
        machine = RoundMachine(
            config,
            weights=model.flat,
            optimizer=run.optimizer,
            optimizer_state=run.opt_state,
            pace=run.pace,
            rng=self.rng,
            identity_keys=keys,
            first_msg_id=run.next_msg_id,
            central_noise=central_noise(run, self.rng),
        )
        try:
            with self.ctx.store.transaction():
                self._fence(run.task_id, now)
                instance = self.owner.instance_id if self.owner is not None else None
                record_start(self.ctx.store, run, config.kind, model.record.sha256, now,
                             instance=instance)  # fmt: skip
                save(self.ctx.store, run)
        except LeaseLost:
            self._forget(run.task_id)
            return None
        run.machine, run.bytes_out = machine, 0
        return machine

    def _act(self, run: Run, commands: list[Command], now: float) -> None:
        if run.spec.mode == "async":
            commands = self._async_commands(run, commands)
        try:
            self._carry_out(run, commands, now)
        except LeaseLost:
            self._forget(run.task_id)

    def _carry_out(self, run: Run, commands: list[Command], now: float) -> None:
        for command in commands:
            if isinstance(command, Send):
                payload = encode_message(command.message)
                run.bytes_out += len(payload)
                self.ctx.publish(device_inbox(command.device_id), payload, 1, False)
            elif isinstance(command, Announce):
                payload = encode_message(command.message)
                self.ctx.publish(task_announcement(run.task_id), payload, 1, True)
            elif isinstance(command, StageChanged):
                self._stage_changed(run, command)
            elif isinstance(command, Commit):
                self._commit(run, command, now)
            elif isinstance(command, EvaluationDone):
                self._evaluated(run, command, now)
            elif isinstance(command, AbandonRound):
                self._abandoned(run, command, now)
            elif isinstance(command, CohortsFormed):
                handed: list[int] = []
                if self.spread is not None and run.machine is not None:
                    handed = self.spread.hand_out(run.task_id, run.machine, now)
                self.cohort_owner.formed(run.task_id, command.round_id, command.keys, now, handed)
        if run.machine is not None:
            run.next_msg_id = max(run.next_msg_id, run.machine.next_msg_id)
            if run.machine.finished:
                self.cohort_owner.ended(run.task_id, now)
                if self.spread is not None:
                    self.spread.ended(run.task_id)

    def _stage_changed(self, run: Run, change: StageChanged) -> None:
        with self.ctx.store.transaction():
            self._fence(run.task_id, change.at)
            record_stage(self.ctx.store, run, change)
        self.ctx.observer.stage_changed(
            run.task_id, change.round_id, change.previous, change.state, change.at
        )

    def _send(self, command: Send) -> None:
        """A message of a cohort this instance runs for another's round."""
        self.ctx.publish(device_inbox(command.device_id), encode_message(command.message), 1, False)

    def _nudge(self, instance_id: str, task_id: str) -> None:
        """Tell ``instance_id`` that cohorts of ``task_id`` were offered to it: it takes
        them at once, before the devices' first cohort replies, not on its next sync."""
        self.ctx.publish(offer_topic(instance_id), task_id.encode(), 1, False)

    def on_cohorts_offered(self, task_id: str, now: float) -> None:
        if self.spread is not None:
            self.spread.take_offers(task_id, now)

    def _spread_sync(self, now: float) -> None:
        """Take offered cohorts; give this instance's rounds the results of theirs."""
        assert self.spread is not None
        self.spread.sync(now)
        for run in list(self.runs.values()):
            machine = run.machine
            if machine is not None and not machine.finished:
                self._act(run, self.spread.collect(run.task_id, machine, now), now)

    # ------------------------------------------------------------------ state
    def _new_run(self, task: TaskRecord) -> Run:
        return new_run(self.ctx.store, task, self.pace_config)


__all__ = ["DEFAULT_RETRY_DELAY_S", "FederatedDriver"]
