"""Asynchronous (FedBuff) tasks in the round driver: the lobby, and one cohort round per buffer.

``AsyncRounds`` is the part of ``FederatedDriver`` that runs tasks with ``mode = "async"``
(docs/async-internals.md). Devices train outside rounds (``async_lobby``); each time
``buffer_size`` of them are ready, they form the next round: an ordinary ``RoundMachine``
(SecAgg+ or plain, dropouts survived as in sync rounds) whose check-in the lobby's ready
check-ins fill at once, whose plans tell each member its staleness, and whose training
stage is only the members encoding the update they kept (one stage window). Its commit is
the task's next version, recorded as a round whose detail says ``mode: async``, the
``staleness`` of its updates (staleness -> count) and the ``buffer_size``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from fedrt.coordinator.driver.base import DriverContext
from fedrt.coordinator.privacy.accounting import PrivacyBudgetExceeded
from fedrt.coordinator.records import RoundStatus, TaskRecord, TaskStatus
from fedrt.coordinator.rounds.async_lobby import AsyncLobby, Ready, staleness_counts
from fedrt.coordinator.rounds.commands import Announce, Command, RoundConfig, Send
from fedrt.coordinator.rounds.dp import NoiseCalibration
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.rounds.outbox import ack_status
from fedrt.coordinator.rounds.plan import round_config, with_pool
from fedrt.coordinator.rounds.runs import LoadedModel, Run, no_round
from fedrt.coordinator.rounds.versions import load_model
from fedrt.coordinator.tasks.ownership import TaskOwnership
from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.round_codec import encode_message
from fedrt.protocol.round_errors import DuplicateMessageId, LateMessage, StaleMessage
from fedrt.protocol.topics import task_announcement

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("fedrt.coordinator.rounds.driver")


class AsyncRounds:
    """Mixed into ``FederatedDriver``: its async tasks (see the module docstring)."""

    ctx: DriverContext
    owner: TaskOwnership | None
    runs: dict[str, Run]
    rng: np.random.Generator
    retry_delay_s: float

    if TYPE_CHECKING:  # FederatedDriver's and TaskAdoption's

        def _act(self, run: Run, commands: list[Command], now: float) -> None: ...
        def _fence(self, task_id: str, now: float) -> None: ...
        def _forget(self, task_id: str) -> None: ...
        def _finish_task(self, run: Run, now: float) -> None: ...
        def _stop_for_budget(self, run: Run, exc: PrivacyBudgetExceeded, now: float) -> None: ...
        def _open_round(
            self,
            run: Run,
            config: RoundConfig,
            model: LoadedModel,
            keys: Mapping[str, bytes],
            now: float,
            *,
            population: int,
        ) -> RoundMachine | None: ...

    _calibration: NoiseCalibration

    def _lobby(self, run: Run) -> AsyncLobby:
        lobbies: dict[str, AsyncLobby] = self.__dict__.setdefault("_async_lobbies", {})
        lobby = lobbies.get(run.task_id)
        if lobby is None or lobby.spec != run.spec:
            lobby = lobbies[run.task_id] = AsyncLobby(run.task_id, run.spec, run.pace)
        return lobby

    # --- hooks the driver calls for async tasks ---------------------------------------------

    def _async_message(
        self, run: Run, device_id: str, msg: rm.DeviceMessage, now: float, *, cohort: str | None
    ) -> None:
        """A message of an async task: the running cohort's, or the lobby's."""
        lobby = self._lobby(run)
        run.waiting = False  # async tasks never wait for a check-in to open a round
        machine = run.machine
        live = machine is not None and not machine.finished
        if machine is not None and live and device_id in lobby.cohort:
            self._feed(run, machine, device_id, msg, now, cohort=cohort)
            if machine.finished:  # the next buffer may be waiting: no need to wait a tick
                self._async_start(run, now)
            return
        if isinstance(msg, rm.CheckIn):
            self._async_offer(run, now)
            try:
                replies = lobby.check_in(device_id, msg, now, run.next_msg_id)
            except ra.AsyncNotSupported as exc:
                ack = rm.Ack(msg_id=run.next_msg_id, task_id=run.task_id, round_id=0,
                             acked=msg.msg_id, status=ack_status(exc))  # fmt: skip
                run.next_msg_id += 1
                self._act(run, [Send(device_id=device_id, message=ack)], now)
                raise
            run.next_msg_id += len(replies)
            self._act(run, replies, now)
            self._async_start(run, now)
            return
        if isinstance(msg, rm.Abandon):
            replies_or_none = lobby.abandon(device_id, msg, run.next_msg_id)
            if replies_or_none is not None:
                run.next_msg_id += len(replies_or_none)
                self._act(run, replies_or_none, now)
                return
        self._act(run, no_round(run, device_id, msg, now, rm.ReconnectReason.NO_ROUND), now)

    def _feed(
        self,
        run: Run,
        machine: RoundMachine,
        device_id: str,
        msg: rm.DeviceMessage,
        now: float,
        *,
        cohort: str | None = None,
    ) -> None:
        """Hand a device message to the running round and carry out what it says (sync and
        async rounds alike); a refused one is acknowledged as such. ``cohort``: the cohort
        topic key it came under (``RoundMachine.receive``)."""
        try:
            commands = machine.receive(device_id, msg, now, cohort=cohort)
        except ProtocolError as exc:
            self._act(run, [machine.rejection(device_id, msg, exc)], now)
            if isinstance(exc, LateMessage | StaleMessage | DuplicateMessageId):
                # Normal on a lossy network (a resend, an answer after the cut): answered.
                log.info("device %s: %r", device_id, exc)
                return
            raise
        self._act(run, commands, now)

    def _async_start(self, run: Run, now: float) -> None:
        """Open the next cohort round once a buffer of ready devices is there."""
        machine = run.machine
        if machine is not None and not machine.finished:
            return
        if run.round_no >= run.spec.max_rounds:
            self._finish_task(run, now)
            return
        task = self._async_offer(run, now)
        if task is None:
            return
        if run.privacy is not None and not self._calibration.ready(run, self.ctx.store, now):
            return  # a target epsilon's noise multiplier, calibrated off the event loop
        lobby = self._lobby(run)
        lobby.tick(now)
        cohort, refusals = lobby.take(now, run.next_msg_id)
        run.next_msg_id += len(refusals)
        self._act(run, refusals, now)
        if cohort:
            self._open_cohort(run, task, cohort, now)

    def _async_commands(self, run: Run, commands: list[Command]) -> list[Command]:
        """A cohort round's commands, less its announcements: the task stays open."""
        return [c for c in commands if not isinstance(c, Announce)]

    def _async_detail(self, run: Run, round_no: int, status: RoundStatus) -> dict[str, object]:
        """What an async round's record says beyond a sync one's (and count the commit)."""
        if run.spec.mode != "async":
            return {}
        lobby = self._lobby(run)
        members = lobby.cohort_staleness.pop(round_no, {})
        lobby.cohort_ended()  # its members count against max_concurrent no more
        machine = run.machine
        if status is RoundStatus.COMMITTED and machine is not None:
            lobby.committed()
            # The updates in the sum: those whose masked input (or plain update) came in.
            stage = rm.Stage.MASKED_INPUT if run.spec.secagg else rm.Stage.PLAIN_UPDATE
            members = {d: members[d] for d in machine.answered(stage) if d in members}
        return {
            "mode": "async",
            "buffer_size": run.spec.buffer_size,
            "staleness": staleness_counts(members.values()),
            "lobby": lobby.figures(),
        }

    # --- helpers ---------------------------------------------------------------------------

    def _async_offer(self, run: Run, now: float) -> TaskRecord | None:
        """Point the lobby at the latest version (and announce it) when that changed."""
        task = self.ctx.store.get_task(run.task_id)
        if task.status is not TaskStatus.RUNNING:
            return None
        lobby = self._lobby(run)
        offered = lobby.config
        if (
            offered is not None
            and lobby.model_sha256 == task.model_sha256
            and offered.round_id == run.round_no + 1
        ):
            return task
        model = load_model(self.ctx, run, task.model_sha256, retry_delay_s=self.retry_delay_s)
        config = round_config(
            task_id=run.task_id,
            round_no=run.round_no + 1,
            spec=run.spec,
            kind=rm.RoundKind.TRAIN,
            model=model.record,
            model_url_prefix=self.ctx.model_url_prefix,
            batch_size=model.manifest.batch_size,
        )
        config = with_pool(config, run.spec, [d for d in self.ctx.store.list_devices()
                                              if not d.revoked])  # fmt: skip
        update = rm.UpdateSpec(params=int(model.flat.size), clip_norm=config.clip_norm,
                               bits=config.bits, weight_cap=config.weight_cap)  # fmt: skip
        lobby.offer(config, update)
        lobby.model_sha256 = task.model_sha256
        run.next_msg_id += 1
        news = rm.TaskAnnouncement(msg_id=run.next_msg_id - 1, task_id=run.task_id,
                                   accepting=True, round_id=run.round_no + 1,
                                   model=config.model)  # fmt: skip
        self.ctx.publish(task_announcement(run.task_id), encode_message(news), 1, True)
        return task

    def _open_cohort(self, run: Run, task: TaskRecord, cohort: list[Ready], now: float) -> None:
        spec = run.spec
        model = load_model(self.ctx, run, task.model_sha256, retry_delay_s=self.retry_delay_s)
        k = len(cohort)
        # Dropouts in the cohort are survived down to the SecAgg+ threshold's share of it.
        floor = 2 if spec.secagg else 1
        least = max(floor, min(spec.min_reports, math.ceil(spec.secagg_threshold * k - 1e-9)))
        run.round_no += 1
        config = round_config(
            task_id=run.task_id,
            round_no=run.round_no,
            spec=spec,
            kind=rm.RoundKind.TRAIN,
            model=model.record,
            model_url_prefix=self.ctx.model_url_prefix,
            batch_size=model.manifest.batch_size,
        )
        # Everyone is in already and trained: "check-in" and "training" are one stage window.
        config = replace(config, goal_count=k, over_selection=1.0, min_reports=least,
                         population=k, eligible=None, min_examples=0,
                         checkin_timeout=config.stage_timeout,
                         training_timeout=config.stage_timeout)  # fmt: skip
        keys = {d.device_id: d.public_key for d in self.ctx.store.list_devices() if not d.revoked}
        run.keys = keys
        # DP charges it as a full-participation release of its k members: no amplification
        # by sampling is claimed, since whoever finished first is in (docs/privacy.md).
        machine = self._open_round(run, config, model, keys, now, population=k)
        if machine is None:
            return
        lobby = self._lobby(run)
        lobby.cohort = frozenset(r.device_id for r in cohort)
        staleness = {r.device_id: r.staleness for r in cohort}
        lobby.cohort_staleness[run.round_no] = staleness
        log.info("task %s: async round %d: a buffer of %d (staleness %s)", run.task_id,
                 run.round_no, k, staleness_counts(staleness.values()))  # fmt: skip
        commands = machine.start(now)
        for r in cohort:
            try:
                commands += machine.receive(r.device_id, r.checkin, now)
            except ProtocolError as exc:  # e.g. revoked meanwhile: the cohort goes on without
                log.info("task %s: %s left out of async round %d: %r", run.task_id,
                         r.device_id, run.round_no, exc)  # fmt: skip
        self._act(run, [_as_cohort(c, staleness) for c in commands if not _checkin_ack(c)], now)


def _checkin_ack(command: Command) -> bool:
    """The cohort round's acks of the ready check-ins it was fed: the lobby sent those."""
    return isinstance(command, Send) and isinstance(command.message, rm.Ack)


def _as_cohort(command: Command, staleness: dict[str, int]) -> Command:
    """A cohort round's plan, marked REPORT with the member's staleness."""
    if isinstance(command, Send) and isinstance(command.message, rm.Plan):
        plan = replace(command.message, async_role=ra.ASYNC_REPORT,
                       staleness=staleness.get(command.device_id, 0))  # fmt: skip
        return Send(device_id=command.device_id, message=plan)
    return command


__all__ = ["AsyncRounds"]
