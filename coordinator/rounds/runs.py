"""The driver's memory of each task between events (``Run``), saved with the task and
loaded back, and the replies a task gives while no round of it is open.

What a restarted coordinator needs is in the store: the rounds, and the task state saved
under ``STATE_KEY`` (round number, next message id, optimizer rounds, a DP task's clip).
"""

from __future__ import annotations

import copy
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.errors import NotFoundError
from fedrt.coordinator.privacy.rounds import RoundDp, TaskPrivacy, training_rounds
from fedrt.coordinator.records import ModelRecord, TaskRecord
from fedrt.coordinator.rounds.commands import Announce, Command
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.rounds.outbox import no_round_replies
from fedrt.coordinator.rounds.plan import optimizer_for
from fedrt.coordinator.selection.pace import PaceConfig, PaceSteering
from fedrt.coordinator.store.base import Store
from fedrt.coordinator.strategies.optimizers import OptimizerState, ServerOptimizer
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.model_export.manifest import Manifest
from fedrt.protocol import round_messages as rm

STATE_KEY = "driver"
# Message ids a process may have sent after its last save (a round's worth at most): a
# restarted one skips them, so no device mistakes its first replies for ones it has seen.
RESTART_ID_GAP = 2**32


@dataclass(slots=True)
class LoadedModel:
    """The version a task's rounds start from, read and flattened once."""

    record: ModelRecord
    manifest: Manifest
    data: bytes
    flat: npt.NDArray[np.float32]


@dataclass(slots=True)
class Run:
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
    model: LoadedModel | None = None
    bytes_out: int = 0
    evaluation: dict[str, float] = field(default_factory=dict)
    privacy: TaskPrivacy | None = None  # DP tasks only
    dp_round: RoundDp | None = None  # the running round's DP plan
    # Identity keys of the devices that may check in, shared with the running round.
    keys: dict[str, bytes] = field(default_factory=dict)
    # A DP task's noise multiplier being calibrated off the event loop (target epsilon).
    calibrating: Future[float] | None = None
    # No round open and none due: the next opens when a device checks in (see the module
    # docstring of ``rounds.driver``); ``announce``: tell devices that check-ins are
    # welcome, at the next tick.
    waiting: bool = False
    announce: bool = False
    # Rounds a previous process left open, lost in its restart; devices told so (once each).
    lost_rounds: frozenset[int] = frozenset()
    told_lost: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class CommitPoint:
    """What committing a round changes in a run's memory, as it was before: a commit whose
    transaction lost a race (nothing written) puts it back and runs again."""

    model: LoadedModel | None
    opt_state: OptimizerState
    evaluation: dict[str, float]
    privacy: TaskPrivacy | None
    dp_round: RoundDp | None

    @classmethod
    def of(cls, run: Run) -> CommitPoint:
        return cls(run.model, run.opt_state, dict(run.evaluation),
                   copy.deepcopy(run.privacy), run.dp_round)  # fmt: skip

    def restore(self, run: Run) -> None:
        run.model, run.opt_state, run.evaluation = self.model, self.opt_state, dict(self.evaluation)
        run.privacy, run.dp_round = copy.deepcopy(self.privacy), self.dp_round


def new_run(store: Store, task: TaskRecord, pace: PaceConfig) -> Run:
    """The run of ``task`` as its stored rounds and saved state leave it."""
    spec = TaskSpec.from_json(task.spec)
    saved = store.load_task_state(task.task_id, STATE_KEY) or {}
    rounds = store.list_rounds(task.task_id)
    last_round = max([r.round_no for r in rounds] + [int(saved.get("round_no", 0))])
    privacy = None
    if spec.dp.enabled:  # the accountant replays the stored rounds' DP plans
        clip = saved.get("dp_clip")
        privacy = TaskPrivacy.from_rounds(
            spec.dp,
            rounds,
            # Every round of an async task trains (its cohort rounds: rounds.async_driver).
            train_rounds=training_rounds(
                spec.max_rounds, spec.eval_every if spec.mode == "sync" else 0
            ),
            clip=float(clip) if clip is not None else None,
        )
    return Run(
        task_id=task.task_id,
        spec=spec,
        pace=PaceSteering(pace),
        optimizer=optimizer_for(spec),
        opt_state=OptimizerState(rounds=int(saved.get("optimizer_rounds", 0))),
        round_no=last_round,
        next_msg_id=int(saved.get("next_msg_id", 1)),
        privacy=privacy,
    )


def save(store: Store, run: Run) -> None:
    """Save what ``new_run`` reads back (inside the caller's transaction)."""
    store.save_task_state(
        run.task_id,
        STATE_KEY,
        {
            "round_no": run.round_no,
            "next_msg_id": run.next_msg_id,
            "optimizer_rounds": run.opt_state.rounds,
            **({"dp_clip": run.privacy.clip} if run.privacy is not None else {}),
        },
    )


def learn_key(store: Store, run: Run, device_id: str) -> None:
    """Let a device that enrolled after the round opened take part (the round's DP
    population stays the one counted at the start, which only overstates epsilon)."""
    try:
        record = store.get_device(device_id)
    except NotFoundError:
        return
    if not record.revoked:
        run.keys[device_id] = record.public_key


def welcome(run: Run) -> Announce:
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


def no_round(
    run: Run,
    device_id: str,
    msg: rm.DeviceMessage,
    now: float,
    reason: rm.ReconnectReason,
) -> list[Command]:
    """The answer to a device while no round of the task is open (ack and a window)."""
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


__all__ = [
    "RESTART_ID_GAP", "STATE_KEY", "CommitPoint", "LoadedModel", "Run", "learn_key", "new_run",
    "no_round", "save", "welcome",
]  # fmt: skip
