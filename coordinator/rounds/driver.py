"""The round driver: runs each running task's rounds by feeding its ``RoundMachine``.

The service hands it authenticated device messages and ticks; it decodes, calls the
machine, and carries out the commands the machine returns (publish, record, commit).
It decides nothing about the protocol itself. What it owns is the life *between* rounds:
which model a round starts from (the task's promoted version, re-read every round so an
operator's rollback takes effect), the server optimizer state, round numbering and
message ids, turning a committed aggregate into a new signed model version, and whether
that version is promoted (server-side evaluation, when an evaluator is given, must not
regress by more than the task's ``promote_margin``).

A coordinator that restarts marks the round it was running as abandoned (its state died
with the old process) and waits: that round's devices learn of the restart from its new
incarnation (``topics.coordinator_presence``) and check in again within seconds, and the
first check-in opens the next round. Messages of the lost round are acknowledged LATE, with
a short window while no round is open. A round that nobody checked in to leaves the task
waiting the same way, so an idle task does not open and abandon rounds while its devices
are away.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.driver.base import DriverContext, RoundDriver
from fedrt.coordinator.errors import CoordinatorError, CorruptArtifactError, NotFoundError
from fedrt.coordinator.models.optimizer_state import load_state, save_state
from fedrt.coordinator.privacy.accounting import PrivacyBudgetExceeded
from fedrt.coordinator.privacy.rounds import RoundDp, TaskPrivacy, training_rounds
from fedrt.coordinator.records import (
    MetricRecord,
    ModelRecord,
    RoundRecord,
    RoundStatus,
    StageRecord,
    TaskRecord,
    TaskStatus,
)
from fedrt.coordinator.rounds.commands import (
    AbandonRound,
    Announce,
    Command,
    Commit,
    EvaluationDone,
    RoundConfig,
    RoundMetrics,
    Send,
    StageChanged,
    select_count,
)
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.rounds.outbox import no_round_replies
from fedrt.coordinator.selection.pace import PaceConfig, PaceSteering
from fedrt.coordinator.strategies.aggregators import AGGREGATORS, Aggregator, TrimmedMean
from fedrt.coordinator.strategies.optimizers import (
    OPTIMIZERS,
    FedAvgM,
    OptimizerState,
    ServerOptimizer,
)
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import read_weights, replace_weights
from fedrt.protocol import round_dp
from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.round_codec import decode_from_device, encode_message
from fedrt.protocol.round_errors import DuplicateMessageId, LateMessage, StaleMessage
from fedrt.protocol.topics import UpChannel, device_inbox, task_announcement

log = logging.getLogger(__name__)

# Server-side evaluation of a candidate model: (model bytes, manifest) -> metrics such as
# {"accuracy": 0.93, "loss": 0.21}. Runs on the coordinator's own held-out data.
Evaluator = Callable[[bytes, Manifest], Mapping[str, float]]
# Called after every finished round (committed or abandoned), e.g. for progress output.
RoundListener = Callable[["RoundSummary"], None]

_STATE_KEY = "driver"
# Message ids a process may have sent after its last save (a round's worth at most): a
# restarted one skips them, so no device mistakes its first replies for ones it has seen.
_RESTART_ID_GAP = 2**32
# While a DP task's noise multiplier is calibrated: how often to look, and the wait before
# trying again after a failure.
_CALIBRATION_POLL_S = 0.2
_CALIBRATION_RETRY_S = 5.0
# After an abandoned round, wait a little before the next: the devices that were in it
# need their reconnect windows to pass anyway, and a broken task should not spin.
DEFAULT_RETRY_DELAY_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundSummary:
    """One finished round, as progress output and reports want it."""

    task_id: str
    round_no: int
    kind: str
    status: str
    metrics: RoundMetrics
    model_sha256: str
    result_sha256: str | None = None
    evaluation: Mapping[str, float] = field(default_factory=dict)
    promoted: bool = False
    reason: str = ""
    bytes_out: int = 0
    # Differential privacy: cumulative epsilon at the task's delta, noise std on the sum.
    epsilon: float | None = None
    noise_stddev: float | None = None


@dataclass(slots=True)
class _Model:
    record: ModelRecord
    manifest: Manifest
    data: bytes
    flat: npt.NDArray[np.float32]


@dataclass(slots=True)
class _Run:
    """The driver's memory of one running task."""

    task_id: str
    spec: TaskSpec
    pace: PaceSteering
    optimizer: ServerOptimizer
    opt_state: OptimizerState
    round_no: int
    next_msg_id: int
    next_start: float = 0.0
    machine: RoundMachine | None = None
    model: _Model | None = None
    bytes_out: int = 0
    evaluation: dict[str, float] = field(default_factory=dict)
    privacy: TaskPrivacy | None = None  # DP tasks only
    dp_round: RoundDp | None = None  # the running round's DP plan
    # Identity keys of the devices that may check in, shared with the running round.
    keys: dict[str, bytes] = field(default_factory=dict)
    # A DP task's noise multiplier being calibrated off the event loop (target epsilon).
    calibrating: Future[float] | None = None
    # No round open and none due: the next opens when a device checks in (see the module
    # docstring); ``announce``: tell devices that check-ins are welcome, at the next tick.
    waiting: bool = False
    announce: bool = False
    # Rounds a previous process left open, lost in its restart; devices told so (once each).
    lost_rounds: frozenset[int] = frozenset()
    told_lost: set[str] = field(default_factory=set)


def optimizer_for(spec: TaskSpec) -> ServerOptimizer:
    cls = OPTIMIZERS.get(spec.strategy, OPTIMIZERS["fedavg"])
    if cls is FedAvgM:
        return FedAvgM(server_lr=spec.server_lr, momentum=spec.server_momentum)
    return cls(server_lr=spec.server_lr)  # type: ignore[call-arg]


def aggregator_for(spec: TaskSpec) -> Aggregator:
    if spec.strategy == "trimmed_mean":
        return TrimmedMean(fraction=spec.trimmed_fraction)
    return AGGREGATORS.get(spec.strategy, AGGREGATORS["mean"])()


def secagg_parameters(spec: TaskSpec) -> tuple[int | None, int | None]:
    """(neighbours, threshold) for the round config; (None, None) lets the protocol choose."""
    if spec.secagg_neighbors == 0:
        return None, None
    k = spec.secagg_neighbors
    # Each device's neighbourhood is its k neighbours plus itself; a strict majority of it
    # must survive (2t > k + 1), and at least the configured fraction.
    t = max(math.floor((k + 1) / 2) + 1, math.ceil(spec.secagg_threshold * (k + 1)))
    return k, min(t, k + 1)


def flatten(weights: list[npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
    return np.concatenate([np.asarray(w, np.float32).reshape(-1) for w in weights])


def unflatten(flat: npt.NDArray[Any], manifest: Manifest) -> list[npt.NDArray[np.float32]]:
    out, at = [], 0
    for spec in manifest.weights:
        out.append(np.asarray(flat[at : at + spec.size], np.float32).reshape(spec.shape))
        at += spec.size
    return out


class FederatedDriver(RoundDriver):
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
        self.listener = listener
        self.pace_config = pace or ctx.pace
        self.rng = rng or np.random.default_rng()
        self.retry_delay_s = retry_delay_s
        self.runs: dict[str, _Run] = {}
        self._workers: ThreadPoolExecutor | None = None
        # Tasks that are not running but whose devices still need answers (created, paused).
        self.idle: dict[str, _Run] = {}
        self._recover(ctx.clock())

    # ------------------------------------------------------------------ events
    def on_device_message(
        self, device_id: str, channel: UpChannel, payload: bytes, now: float
    ) -> None:
        msg = decode_from_device(payload)
        run = self.runs.get(msg.task_id)
        if run is None:
            # A task not (yet, or no longer) running: pace the device instead of leaving it
            # waiting for an answer. Unknown tasks raise NotFoundError here.
            task = self.ctx.store.get_task(msg.task_id)
            run = self.idle.get(task.task_id) or self._new_run(task)
            self.idle[task.task_id] = run
            paused = task.status is TaskStatus.PAUSED
            reason = rm.ReconnectReason.TASK_PAUSED if paused else rm.ReconnectReason.NO_ROUND
            self._act(run, self._no_round(run, device_id, msg, now, reason), now)
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
            self._act(run, self._no_round(run, device_id, msg, now, reason), now)
            return
        if isinstance(msg, rm.CheckIn) and device_id not in run.keys:
            self._learn_key(run, device_id)
        try:
            commands = machine.receive(device_id, msg, now)
        except ProtocolError as exc:
            self._act(run, [machine.rejection(device_id, msg, exc)], now)
            if isinstance(exc, LateMessage | StaleMessage | DuplicateMessageId):
                # Normal on a lossy network (a resend, an answer after the cut): answered.
                log.info("device %s: %r", device_id, exc)
                return
            raise
        self._act(run, commands, now)

    def _calibrated(self, run: _Run, now: float) -> bool:
        """Whether a DP task's noise multiplier is known. Calibrating it for a target epsilon
        takes dp_accounting 1-2 s: that runs on a worker thread while the round waits, so the
        coordinator's event loop keeps serving (driver calls must not block)."""
        privacy = run.privacy
        assert privacy is not None
        if not privacy.needs_calibration:
            return True
        future = run.calibrating
        if future is None:
            population = sum(1 for d in self.ctx.store.list_devices() if not d.revoked)
            cohort = max(1, select_count(run.spec.goal_count, run.spec.over_selection))
            if self._workers is None:
                self._workers = ThreadPoolExecutor(1, thread_name_prefix="fedrt-dp-calibrate")
            run.calibrating = self._workers.submit(
                privacy.noise_multiplier, max(population, cohort), cohort
            )
        elif future.done():
            run.calibrating = None
            try:
                future.result()
            except Exception:
                log.exception("task %s: calibrating the noise multiplier failed", run.task_id)
                run.next_start = now + _CALIBRATION_RETRY_S
                return False
            return True
        run.next_start = now + _CALIBRATION_POLL_S
        return False

    def _learn_key(self, run: _Run, device_id: str) -> None:
        # Enrolled after the round opened: it may still take part (the round's DP population
        # stays the one counted at the start, which only overstates epsilon).
        try:
            record = self.ctx.store.get_device(device_id)
        except NotFoundError:
            return
        if not record.revoked:
            run.keys[device_id] = record.public_key

    def on_tick(self, now: float) -> None:
        for run in list(self.runs.values()):
            if run.announce:
                run.announce = False
                self._act(run, [self._welcome(run)], now)
            machine = run.machine
            if machine is not None and not machine.finished:
                deadline = machine.next_deadline()
                if deadline is not None and deadline <= now:
                    self._act(run, machine.tick(now), now)
            idle = run.machine is None or run.machine.finished
            if idle and run.waiting and run.privacy is not None:
                self._calibrated(run, now)  # so the first check-in finds it done
            if idle and not run.waiting and now >= run.next_start:
                self._start_round(run, now)

    def on_task_change(self, task: TaskRecord) -> None:
        now = self.ctx.clock()
        if task.status is TaskStatus.RUNNING:
            if task.task_id not in self.runs:
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
        for run in self.runs.values():
            self._save(run)

    # ------------------------------------------------------------------ rounds
    def _start_round(self, run: _Run, now: float) -> None:
        task = self.ctx.store.get_task(run.task_id)
        if task.status is not TaskStatus.RUNNING:
            return
        if run.round_no >= run.spec.max_rounds:
            self._finish_task(run, now)
            return
        if run.privacy is not None and not self._calibrated(run, now):
            return
        model = self._model(run, task.model_sha256)
        run.round_no += 1
        spec = run.spec
        kind = (
            rm.RoundKind.EVALUATE
            if spec.eval_every and run.round_no % (spec.eval_every + 1) == 0
            else rm.RoundKind.TRAIN
        )
        neighbors, threshold = secagg_parameters(spec)
        config = RoundConfig(
            task_id=run.task_id,
            round_id=run.round_no,
            model=rm.ModelRef(
                version=model.record.round_no or 0,
                sha256=model.record.sha256,
                url=self.ctx.model_url_prefix + model.record.sha256,
                signature=model.record.signature,
            ),
            kind=kind,
            training=rm.TrainingConfig(
                epochs=spec.local_epochs,
                batch_size=model.manifest.batch_size,
                learning_rate=spec.learning_rate,
                fedprox_mu=spec.fedprox_mu,
            ),
            goal_count=spec.goal_count,
            over_selection=spec.over_selection,
            min_reports=spec.min_reports,
            clip_norm=spec.clip_norm,
            bits=spec.quantization_bits,
            secagg=spec.secagg,
            secagg_neighbors=neighbors,
            secagg_threshold=threshold,
            checkin_timeout=spec.checkin_deadline_s,
            training_timeout=spec.training_deadline_s,
            stage_timeout=spec.secagg_stage_deadline_s,
            aggregator=aggregator_for(spec),
        )
        keys = {d.device_id: d.public_key for d in self.ctx.store.list_devices() if not d.revoked}
        run.keys = keys
        run.dp_round = None
        if run.privacy is not None and kind is rm.RoundKind.TRAIN:
            # Population: the enrolled devices any of which may check in (dp_accounting).
            try:
                run.dp_round = run.privacy.plan(population=len(keys), cohort=config.select_count)
            except PrivacyBudgetExceeded as exc:
                run.round_no -= 1
                self._stop_for_budget(run, exc, now)
                return
            n = run.dp_round.privacy.population
            if run.privacy.config.delta >= 1.0 / n:
                log.warning("task %s: delta %g is not below 1/%d enrolled devices: the "
                            "guarantee allows leaking one of them", run.task_id,
                            run.privacy.config.delta, n)  # fmt: skip
            # Every update is clipped to the DP bound and weighs 1: one device moves the
            # sum by at most the clip, which is what the noise is calibrated to.
            config = dataclasses.replace(
                config,
                clip_norm=run.dp_round.clip,
                weight_cap=1,
                device_dp=run.privacy.device_dp(run.dp_round),
            )
        detail: dict[str, Any] = {"kind": kind.name.lower()}
        if run.dp_round is not None:
            detail["dp"] = run.dp_round.to_json()
        machine = RoundMachine(
            config,
            weights=model.flat,
            optimizer=run.optimizer,
            optimizer_state=run.opt_state,
            pace=run.pace,
            rng=self.rng,
            identity_keys=keys,
            first_msg_id=run.next_msg_id,
            central_noise=(
                run.privacy.central_noise(run.dp_round, self.rng)
                if run.privacy is not None and run.dp_round is not None
                else None
            ),
        )
        with self.ctx.store.transaction():
            self.ctx.store.create_round(
                RoundRecord(
                    task_id=run.task_id,
                    round_no=run.round_no,
                    stage="created",
                    status=RoundStatus.RUNNING,
                    model_sha256=model.record.sha256,
                    started_at=now,
                    detail=detail,
                )
            )
            self._save(run)
        run.machine, run.bytes_out = machine, 0
        log.info("task %s: round %d (%s) started", run.task_id, run.round_no, kind.name.lower())
        self._act(run, machine.start(now), now)

    def _act(self, run: _Run, commands: list[Command], now: float) -> None:
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
        if run.machine is not None:
            run.next_msg_id = max(run.next_msg_id, run.machine.next_msg_id)

    def _stage_changed(self, run: _Run, change: StageChanged) -> None:
        with self.ctx.store.transaction():
            self.ctx.store.append_stage(
                StageRecord(
                    task_id=run.task_id,
                    round_no=change.round_id,
                    stage=change.state,
                    at=change.at,
                    detail={
                        "from": change.previous,
                        "active": change.active,
                        "reason": change.reason,
                    },
                )
            )
            status = run.machine.status() if run.machine is not None else None
            self.ctx.store.update_round(
                run.task_id,
                change.round_id,
                stage=change.state,
                deadline=change.deadline,
                checked_in=status.checked_in if status else 0,
                reporting=status.answered if status else 0,
                dropped=status.dropped if status else 0,
            )
        self.ctx.observer.stage_changed(
            run.task_id, change.round_id, change.previous, change.state, change.at
        )

    def _commit(self, run: _Run, commit: Commit, now: float) -> None:
        model = run.model
        assert model is not None
        data = replace_weights(
            model.data, model.manifest, unflatten(commit.weights, model.manifest)
        )
        sha = hashlib.sha256(data).hexdigest()
        manifest = dataclasses.replace(model.manifest, sha256=sha, model_bytes=len(data))
        evaluation = dict(self.evaluator(data, manifest)) if self.evaluator else {}
        metrics = {**_metrics_json(commit.metrics), **evaluation}
        # The state goes with the version it produced: a round that starts from this
        # version (after a restart, a pause, a rollback) continues with exactly this state.
        state = save_state(self.ctx.catalog.blobs, run.optimizer, commit.optimizer_state)
        record = self.ctx.catalog.add_version(
            data,
            manifest.to_dict(),
            task_id=run.task_id,
            parent_sha256=model.record.sha256,
            round_no=commit.round_id,
            metrics=metrics,
            optimizer_state_sha256=state,
        )
        promoted = self._should_promote(run, evaluation)
        if promoted:
            self.ctx.catalog.promote(record.sha256, task_id=run.task_id, actor="coordinator")
            run.model = _Model(record, manifest, data, np.asarray(commit.weights, np.float32))
            run.opt_state = commit.optimizer_state
            run.evaluation = evaluation
        noise_stddev = None
        if run.privacy is not None and run.dp_round is not None:
            spec = run.machine.update_spec if run.machine is not None else None
            n = commit.metrics.included
            noise_stddev = run.privacy.commit(
                run.dp_round,
                included=n,
                unclipped=commit.metrics.unclipped,
                device_sum_std=round_dp.float_sum_std(spec, n) if spec is not None else 0.0,
                rng=self.rng,
            )
        self._close_round(
            run,
            commit.round_id,
            RoundStatus.COMMITTED,
            commit.metrics,
            now,
            result_sha256=record.sha256,
            evaluation=evaluation,
            promoted=promoted,
            noise_stddev=noise_stddev,
        )

    def _should_promote(self, run: _Run, evaluation: Mapping[str, float]) -> bool:
        before, after = run.evaluation.get("accuracy"), evaluation.get("accuracy")
        if before is None or after is None:
            return True
        return after >= before - run.spec.promote_margin

    def _evaluated(self, run: _Run, done: EvaluationDone, now: float) -> None:
        self._close_round(
            run,
            done.round_id,
            RoundStatus.COMMITTED,
            done.round_metrics,
            now,
            evaluation={f"federated_{k}": v for k, v in done.metrics},
        )

    def _abandoned(self, run: _Run, abandon: AbandonRound, now: float) -> None:
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
        run: _Run,
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
    ) -> None:
        evaluation = dict(evaluation or {})
        if metrics.bad_holders:  # decoded around, but a device that lies deserves a look
            log.warning("task %s: round %d: wrong SecAgg+ shares from %s", run.task_id,
                        round_no, ", ".join(metrics.bad_holders))  # fmt: skip
        # Every round of a DP task shows the task's epsilon so far (uncharged rounds too).
        epsilon = run.privacy.epsilon if run.privacy is not None else None
        detail = {
            # Kept: the round's kind and DP plan (a restarted driver's accountant replays
            # the committed rounds' plans).
            **self.ctx.store.get_round(run.task_id, round_no).detail,
            "metrics": _metrics_json(metrics),
            "evaluation": evaluation,
            "promoted": promoted,
            "reason": reason,
            "bytes_out": run.bytes_out,
        }
        with self.ctx.store.transaction():
            self.ctx.store.update_round(
                run.task_id,
                round_no,
                status=status,
                ended_at=now,
                selected=metrics.selected,
                reporting=metrics.included,
                dropped=sum(n for _, n in metrics.dropped),
                bytes_in=metrics.bytes_received,
                result_sha256=result_sha256,
                detail=detail,
                epsilon=epsilon,
                noise_stddev=noise_stddev,
            )
            for name, value in evaluation.items():
                self.ctx.store.add_metric(
                    MetricRecord(
                        task_id=run.task_id, round_no=round_no, name=name, value=value, at=now
                    )
                )
            self._save(run)
        self.ctx.observer.round_ended(self.ctx.store.get_round(run.task_id, round_no))
        if self.listener is not None:
            model = run.model
            self.listener(
                RoundSummary(
                    task_id=run.task_id,
                    round_no=round_no,
                    kind=str(self.ctx.store.get_round(run.task_id, round_no).detail.get("kind")),
                    status=status.value,
                    metrics=metrics,
                    model_sha256=model.record.sha256 if model else "",
                    result_sha256=result_sha256,
                    evaluation=evaluation,
                    promoted=promoted,
                    reason=reason,
                    bytes_out=run.bytes_out,
                    epsilon=epsilon,
                    noise_stddev=noise_stddev,
                )
            )

    def _finish_task(
        self, run: _Run, now: float, *, action: str = "task.complete", **detail: Any
    ) -> None:
        from fedrt.coordinator.records import AuditEntry

        with self.ctx.store.transaction():
            self.ctx.store.set_task_status(run.task_id, TaskStatus.COMPLETED, at=now)
            self.ctx.store.append_audit(
                AuditEntry(
                    at=now,
                    actor="coordinator",
                    action=action,
                    subject=run.task_id,
                    detail={"rounds": run.round_no, **detail},
                )
            )
            self._save(run)
        self.runs.pop(run.task_id, None)
        log.info("task %s: completed after %d rounds", run.task_id, run.round_no)

    def _stop_for_budget(self, run: _Run, exc: PrivacyBudgetExceeded, now: float) -> None:
        """Complete the task BEFORE a round that could overspend its privacy budget."""
        assert run.privacy is not None
        log.warning("task %s: stopped after %d rounds: %s", run.task_id, run.round_no, exc)
        self._finish_task(
            run,
            now,
            action="task.budget_exhausted",
            reason=str(exc),
            epsilon=run.privacy.epsilon,
            epsilon_after_next_round=exc.epsilon,
            budget_epsilon=exc.budget,
        )

    # ------------------------------------------------------------------ state
    def _model(self, run: _Run, sha256: str) -> _Model:
        """The version a round starts from, and the optimizer state saved with it.

        Its file must verify, since devices download that file (hashed again only when it
        changed, ``BlobStore.check``): a corrupt or missing one moves the task to its newest
        intact promoted ancestor (``ModelCatalog.fall_back``, audited).
        """
        catalog = self.ctx.catalog
        try:
            catalog.blobs.check(sha256)
        except (CorruptArtifactError, NotFoundError) as exc:
            log.error("task %s: version %s cannot be served: %s", run.task_id, sha256, exc)
            try:
                sha256 = catalog.fall_back(
                    run.task_id, broken=sha256, reason=str(exc), actor="coordinator"
                ).model_sha256
            except CorruptArtifactError:
                run.next_start = self.ctx.clock() + self.retry_delay_s  # not on every tick
                raise
        if run.model is not None and run.model.record.sha256 == sha256:
            return run.model
        record = self.ctx.store.get_model(sha256)
        manifest = Manifest.from_dict(record.manifest)
        data = catalog.blobs.read(sha256)
        flat = flatten(read_weights(data, manifest))
        run.model = _Model(record, manifest, data, flat)
        run.opt_state = load_state(catalog.blobs, record, run.optimizer, size=flat.size,
                                   rounds=run.opt_state.rounds, task_id=run.task_id)  # fmt: skip
        return run.model

    def _new_run(self, task: TaskRecord) -> _Run:
        spec = TaskSpec.from_json(task.spec)
        saved = self.ctx.store.load_task_state(task.task_id, _STATE_KEY) or {}
        rounds = self.ctx.store.list_rounds(task.task_id)
        last_round = max([r.round_no for r in rounds] + [int(saved.get("round_no", 0))])
        privacy = None
        if spec.dp.enabled:  # the accountant replays the stored rounds' DP plans
            clip = saved.get("dp_clip")
            privacy = TaskPrivacy.from_rounds(
                spec.dp,
                rounds,
                train_rounds=training_rounds(spec.max_rounds, spec.eval_every),
                clip=float(clip) if clip is not None else None,
            )
        return _Run(
            task_id=task.task_id,
            spec=spec,
            pace=PaceSteering(self.pace_config),
            optimizer=optimizer_for(spec),
            opt_state=OptimizerState(rounds=int(saved.get("optimizer_rounds", 0))),
            round_no=last_round,
            next_msg_id=int(saved.get("next_msg_id", 1)),
            privacy=privacy,
        )

    def _save(self, run: _Run) -> None:
        self.ctx.store.save_task_state(
            run.task_id,
            _STATE_KEY,
            {
                "round_no": run.round_no,
                "next_msg_id": run.next_msg_id,
                "optimizer_rounds": run.opt_state.rounds,
                **({"dp_clip": run.privacy.clip} if run.privacy is not None else {}),
            },
        )

    def _recover(self, now: float) -> None:
        """Adopt running tasks; a round left open by a previous process is abandoned, and the
        task waits for a check-in (see the module docstring)."""
        for task in self.ctx.store.list_tasks():
            if task.status is not TaskStatus.RUNNING:
                continue
            lost = []
            for rnd in self.ctx.store.list_rounds(task.task_id):
                if rnd.status is RoundStatus.RUNNING:
                    lost.append(rnd.round_no)
                    with self.ctx.store.transaction():
                        self.ctx.store.update_round(
                            task.task_id,
                            rnd.round_no,
                            status=RoundStatus.ABANDONED,
                            ended_at=now,
                            detail={**rnd.detail, "reason": "coordinator restarted"},
                        )
            try:
                run = self._new_run(task)
            except CoordinatorError as exc:
                log.error("task %s cannot run: %s", task.task_id, exc)
                continue
            run.next_msg_id += _RESTART_ID_GAP
            if lost:
                # Its devices come back within seconds; the retained announcement may still
                # be the lost round's "check-ins closed".
                run.waiting, run.announce, run.lost_rounds = True, True, frozenset(lost)
            self.runs[task.task_id] = run

    def _welcome(self, run: _Run) -> Announce:
        """Announce that the task's next round takes check-ins (it opens with the first)."""
        run.next_msg_id += 1
        return Announce(
            message=rm.TaskAnnouncement(
                msg_id=run.next_msg_id - 1,
                task_id=run.task_id,
                accepting=True,
                round_id=run.round_no + 1,
            )
        )

    def _no_round(
        self,
        run: _Run,
        device_id: str,
        msg: rm.DeviceMessage,
        now: float,
        reason: rm.ReconnectReason,
    ) -> list[Command]:
        lost = False
        if not isinstance(msg, rm.CheckIn) and msg.round_id in run.lost_rounds:
            # One window per device; its other messages of that round need only the ack.
            lost = device_id not in run.told_lost
            run.told_lost.add(device_id)
        replies = no_round_replies(
            task_id=run.task_id,
            device_id=device_id,
            message=msg,
            pace=run.pace,
            now=now,
            first_msg_id=run.next_msg_id,
            reason=reason,
            lost=lost,
        )
        run.next_msg_id += len(replies)
        return list(replies)


def _metrics_json(m: RoundMetrics) -> dict[str, Any]:
    return {
        "checked_in": m.checked_in,
        "selected": m.selected,
        "reported": m.reported,
        "included": m.included,
        "dropped": dict(m.dropped),
        "total_weight": m.total_weight,
        "update_norm": m.update_norm,
        "bytes_received": m.bytes_received,
        "started_at": m.started_at,
        "ended_at": m.ended_at,
        "bad_holders": list(m.bad_holders),
        "discarded": m.discarded,
        "secagg": m.secagg,
    }


__all__ = [
    "Evaluator",
    "FederatedDriver",
    "RoundListener",
    "RoundSummary",
    "aggregator_for",
    "optimizer_for",
    "secagg_parameters",
]
