"""Idle-window training: runs a round's local steps only while the device is eligible.

Theory of operation. A `TrainingJob` runs on its own worker thread, never the app's. Before
each step (or each ``recheck_interval_s``) it asks the `DeviceState` for a snapshot and the
`EligibilityPolicy` for a decision, and checks the `DailyBudget` and the example store:

    WAITING --eligible--> TRAINING --ineligible / budget spent--> PAUSED --eligible--> TRAINING
       \\                     |                                       |
        \\--deadline/cancel---+------------- deadline / cancel -------+--> FINISHED

A pause happens between two steps, so training stops within one step of the device becoming
ineligible; the weights stay in the trainer and a `Checkpoint` (weights, step, data cursor)
is handed to ``on_checkpoint`` so a restarted process can resume. Steps done before the
deadline are kept; at the deadline the job finishes ABANDONED (the result says after how many
steps). A failed train call restores the round's starting weights and finishes FAILED. The
clock (and its sleep) is injected: with `ManualClock` a day of waiting runs in microseconds.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from fedrt.sdk.budget import DailyBudget
from fedrt.sdk.checkpoint import Checkpoint
from fedrt.sdk.clock import Clock, SystemClock
from fedrt.sdk.device_state import DeviceState
from fedrt.sdk.eligibility import EligibilityPolicy
from fedrt.sdk.errors import (
    DeviceStateError,
    ModelError,
    NotEnoughExamples,
    SchedulerError,
    SdkConfigError,
    SdkError,
)
from fedrt.sdk.example_store import ExampleStore

if TYPE_CHECKING:
    # Only for annotations: the trainer module pulls in the model runner and flatbuffers.
    from fedrt.sdk.trainer import TrainerBackend

Array = npt.NDArray[Any]

__all__ = [
    "JobState",
    "JobStatus",
    "Outcome",
    "SchedulerConfig",
    "TrainingJob",
    "TrainingPlan",
    "TrainingResult",
    "TrainingScheduler",
    "steps_for",
]


class JobState(enum.Enum):
    WAITING = "waiting"  # not yet started a step: no eligible window so far
    TRAINING = "training"
    PAUSED = "paused"  # trained some steps, then lost eligibility
    FINISHED = "finished"


class Outcome(enum.Enum):
    COMPLETED = "completed"  # all planned steps done before the deadline
    ABANDONED = "abandoned"  # the deadline came first; the coordinator must be told
    CANCELLED = "cancelled"  # the app (or the round) stopped the job
    FAILED = "failed"  # the model failed; weights restored to the round's start


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingPlan:
    """The local part of a round: ``steps`` SGD steps at ``lr`` before ``deadline`` (Unix s)."""

    round_id: str
    steps: int
    lr: float
    deadline: float
    mu: float | None = None  # FedProx proximal weight, when the model supports it

    def __post_init__(self) -> None:
        if not self.round_id:
            raise SdkConfigError("round_id must not be empty")
        if self.steps < 1:
            raise SdkConfigError(f"steps must be >= 1, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SdkConfigError(f"lr must be > 0, got {self.lr}")
        if not math.isfinite(self.deadline):
            raise SdkConfigError("deadline must be finite")
        if self.mu is not None and not (math.isfinite(self.mu) and self.mu >= 0):
            raise SdkConfigError(f"mu must be >= 0, got {self.mu}")


def steps_for(*, examples: int, batch_size: int, epochs: int, max_steps: int = 0) -> int:
    """Steps for ``epochs`` passes over ``examples`` in static batches (last one wraps),
    capped by ``max_steps`` when it is not 0 — the round plan's training config in steps."""
    if examples < 1 or batch_size < 1 or epochs < 1 or max_steps < 0:
        raise SdkConfigError("examples, batch_size and epochs must be >= 1, max_steps >= 0")
    steps = epochs * math.ceil(examples / batch_size)
    return min(steps, max_steps) if max_steps else steps


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    # While waiting for a window, look again this often: often enough to catch a charger
    # being plugged in, rarely enough to cost nothing (Android's client rechecks in minutes).
    wait_poll_s: float = 15.0
    # 0 re-checks before every step (stop within one step); Android's client uses 1 s.
    recheck_interval_s: float = 0.0
    # Also hand a checkpoint to on_checkpoint every N steps (0: only at pauses and the end).
    checkpoint_every_steps: int = 0

    def __post_init__(self) -> None:
        if not self.wait_poll_s > 0:
            raise SdkConfigError("wait_poll_s must be > 0")
        if not self.recheck_interval_s >= 0:
            raise SdkConfigError("recheck_interval_s must be >= 0")
        if self.checkpoint_every_steps < 0:
            raise SdkConfigError("checkpoint_every_steps must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingResult:
    outcome: Outcome
    reason: str
    checkpoint: Checkpoint  # trained weights (start weights after FAILED), step, cursor
    examples: int  # distinct examples trained on (the round's FedAvg weight)

    @property
    def steps_done(self) -> int:
        return self.checkpoint.step


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStatus:
    state: JobState
    step: int
    steps_total: int
    pauses: int
    blocked_by: str | None  # why the job is waiting or paused, for a status line


class TrainingJob:
    """A running round's local training; its worker thread is started by the scheduler."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._future: Future[TrainingResult] = Future()
        self._thread = threading.Thread(
            target=self._main, name=f"fedrt-train-{run.plan.round_id}", daemon=True
        )

    def _start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        try:
            result = self._run.execute()
        except BaseException as exc:  # surfaced to whoever calls result()
            self._future.set_exception(exc)
        else:
            self._future.set_result(result)

    def cancel(self) -> None:
        """Ask the worker to stop (between steps, or at once while waiting)."""
        self._run.cancel.set()

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> TrainingResult:
        """Wait for the result; raises TimeoutError after ``timeout`` seconds."""
        return self._future.result(timeout)

    def status(self) -> JobStatus:
        return self._run.status()


class TrainingScheduler:
    """Starts `TrainingJob`s on one trainer, one at a time."""

    def __init__(
        self,
        *,
        trainer: TrainerBackend,
        store: ExampleStore,
        device_state: DeviceState,
        policy: EligibilityPolicy | None = None,
        clock: Clock | None = None,
        budget: DailyBudget | None = None,
        config: SchedulerConfig | None = None,
    ) -> None:
        self._trainer = trainer
        self._store = store
        self._state = device_state
        self._policy = policy if policy is not None else EligibilityPolicy()
        self._clock = clock if clock is not None else SystemClock()
        self._budget = budget if budget is not None else DailyBudget(math.inf)
        self._config = config if config is not None else SchedulerConfig()
        self._job: TrainingJob | None = None

    def start(
        self,
        plan: TrainingPlan,
        *,
        resume: Checkpoint | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> TrainingJob:
        """Start training ``plan`` in a worker thread (from ``resume`` after a restart)."""
        if self._job is not None and not self._job.done():
            raise SchedulerError("a training job is already running on this trainer")
        if resume is not None:
            if resume.round_id != plan.round_id:
                raise SchedulerError(f"checkpoint is for round {resume.round_id!r}")
            if resume.step > plan.steps:
                raise SchedulerError("checkpoint is past the plan's last step")
        run = _Run(self, plan, resume, on_checkpoint)
        job = TrainingJob(run)
        self._job = job
        job._start()
        return job


class _Run:
    """The worker's loop and the state it owns; only the worker thread mutates it."""

    def __init__(
        self,
        owner: TrainingScheduler,
        plan: TrainingPlan,
        resume: Checkpoint | None,
        on_checkpoint: Callable[[Checkpoint], None] | None,
    ) -> None:
        self.o = owner
        self.plan = plan
        self.resume = resume
        self.on_checkpoint = on_checkpoint
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self.state = JobState.WAITING
        self.blocked_by: str | None = None
        self.step = resume.step if resume else 0
        self.cursor = resume.cursor if resume else 0
        self.loss_sum = resume.loss_sum if resume else 0.0
        self.compute_s = resume.compute_s if resume else 0.0
        self.pauses = resume.pauses if resume else 0
        self.start_weights: tuple[Array, ...] = ()

    def status(self) -> JobStatus:
        with self._lock:
            return JobStatus(
                state=self.state,
                step=self.step,
                steps_total=self.plan.steps,
                pauses=self.pauses,
                blocked_by=self.blocked_by,
            )

    def _set(self, state: JobState, blocked_by: str | None) -> None:
        with self._lock:
            self.state, self.blocked_by = state, blocked_by

    def _checkpoint(self, weights: list[Array] | None = None) -> Checkpoint:
        current = weights if weights is not None else self.o._trainer.get_weights()
        return Checkpoint(
            round_id=self.plan.round_id,
            step=self.step,
            cursor=self.cursor,
            weights=tuple(current),
            start_weights=self.start_weights,
            loss_sum=self.loss_sum,
            compute_s=self.compute_s,
            pauses=self.pauses,
        )

    def _blocker(self, now: float, training: bool) -> str | None:
        """Why training may not run at ``now``, or None."""
        try:
            snapshot = self.o._state.snapshot(now)
        except DeviceStateError as exc:
            return f"device state unreadable: {exc}"
        decision = self.o._policy.decide(snapshot, now, training=training)
        if not decision.eligible:
            return str(decision)
        if self.o._budget.remaining(now) <= 0:
            return "daily compute budget spent"
        if not training and len(self.o._store) == 0:
            return "no local examples"
        return None

    def execute(self) -> TrainingResult:
        trainer, clock, plan = self.o._trainer, self.o._clock, self.plan
        if self.resume is not None:
            trainer.set_weights(list(self.resume.weights))
            self.start_weights = self.resume.start_weights
        else:
            self.start_weights = tuple(trainer.get_weights())
        training = False
        last_check = -math.inf
        every = self.o._config.checkpoint_every_steps
        while True:
            if self.cancel.is_set():
                return self._finish(Outcome.CANCELLED, "cancelled")
            if self.step >= plan.steps:
                return self._finish(Outcome.COMPLETED, f"{self.step} steps done")
            now = clock.now()
            if now >= plan.deadline:
                return self._finish(
                    Outcome.ABANDONED,
                    f"deadline passed after {self.step}/{plan.steps} steps"
                    + (f" (waiting: {self.blocked_by})" if self.blocked_by else ""),
                )
            if not training or now - last_check >= self.o._config.recheck_interval_s:
                last_check = now
                blocker = self._blocker(now, training)
                if blocker is not None:
                    if training:
                        training = False
                        self._pause(blocker)
                    else:
                        self._set(self.state, blocker)
                    clock.sleep(self._wait(now, blocker), self.cancel)
                    continue
                training = True
                self._set(JobState.TRAINING, None)
            try:
                batch = self.o._store.batch(trainer.batch_size, self.cursor)
            except NotEnoughExamples:
                training = False
                self._pause("no local examples")
                continue
            t0 = clock.now()
            try:
                loss = trainer.train_step(batch.x, batch.y, plan.lr, plan.mu)
            except ModelError as exc:
                return self._fail(f"train step {self.step} failed: {exc}")
            t1 = clock.now()
            if not math.isfinite(loss):
                return self._fail(f"train step {self.step} gave a non-finite loss ({loss})")
            self.o._budget.charge(max(0.0, t1 - t0), t1)
            with self._lock:
                self.compute_s += max(0.0, t1 - t0)
                self.step += 1
                self.cursor = batch.next_cursor
                self.loss_sum += loss
            if every and self.step % every == 0 and self.on_checkpoint is not None:
                self.on_checkpoint(self._checkpoint())

    def _wait(self, now: float, blocker: str) -> float:
        wait = self.o._config.wait_poll_s
        if blocker == "daily compute budget spent":
            wait = max(wait, self.o._budget.next_reset(now) - now)
        return max(0.0, min(wait, self.plan.deadline - now))

    def _pause(self, why: str) -> None:
        with self._lock:
            self.pauses += 1
        self._set(JobState.PAUSED, why)
        self.o._budget.flush()
        if self.on_checkpoint is not None:
            self.on_checkpoint(self._checkpoint())

    def _fail(self, reason: str) -> TrainingResult:
        # A failed train call may have updated some weights: go back to the round's start.
        try:
            self.o._trainer.set_weights(list(self.start_weights))
        except SdkError as exc:
            reason += f"; restoring the round's weights failed too: {exc}"
        with self._lock:
            self.step, self.cursor, self.loss_sum = 0, 0, 0.0
        return self._finish(Outcome.FAILED, reason, weights=list(self.start_weights))

    def _finish(
        self, outcome: Outcome, reason: str, *, weights: list[Array] | None = None
    ) -> TrainingResult:
        self._set(JobState.FINISHED, None if outcome is Outcome.COMPLETED else reason)
        self.o._budget.flush()
        checkpoint = self._checkpoint(weights)
        if self.on_checkpoint is not None and outcome is not Outcome.FAILED:
            self.on_checkpoint(checkpoint)
        try:
            stored = len(self.o._store)
        except SdkError:
            stored = 0
        examples = min(self.step * self.o._trainer.batch_size, stored)
        return TrainingResult(
            outcome=outcome, reason=reason, checkpoint=checkpoint, examples=examples
        )
