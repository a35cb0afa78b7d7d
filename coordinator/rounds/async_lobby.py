"""An async (FedBuff) task's devices between cohorts: who trains, who is ready, how stale.

Theory of operation
-------------------
An async task has no check-in window. ``AsyncLobby`` takes every check-in of the task
that is not part of the running cohort round and answers it (no I/O, no clock: ``now``
comes in, ``Send`` commands go out):

* A device with no kept update gets a TRAIN plan (``round_async``) of the latest version
  while fewer than ``max_concurrent`` devices are in flight: training, or holding a ready
  update no cohort has committed (or abandoned) yet, as FedBuff bounds concurrency; else
  pace steering sends it away (ROUND_FULL). Counting only those training would let ready
  updates pile up whenever cohorts are slower than training, and grow stale while waiting.
  Its ticket (the plan's round id) and the commit count it started from are noted; a
  ticket that outlives the training window (plus one stage window) lapses.
* A device that checks in naming its ticket is READY. Its staleness is the number of
  versions this lobby committed since its ticket; beyond ``max_staleness`` it is told
  TOO_STALE (a typed reason) and trains again.
* ``take`` hands the driver the ``buffer_size`` longest-ready devices for the next cohort
  round, each with its staleness, refusing (TOO_STALE) those that went stale while waiting.

Tickets live in memory only: a restarted coordinator knows none, so a device offering an
update trained before the restart is given a fresh TRAIN plan (its work is lost, as a sync
round's is; no committed version is).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from fedrt.coordinator.rounds.commands import Command, RoundConfig, Send
from fedrt.coordinator.rounds.outbox import plan_message
from fedrt.coordinator.selection.pace import PaceSteering
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm

__all__ = ["AsyncLobby", "Ready", "staleness_counts"]


@dataclass(frozen=True, slots=True)
class _Ticket:
    round_id: int  # the TRAIN plan's round id, which the device names when it is ready
    commits: int  # versions the lobby had committed when the plan went out
    expires: float


@dataclass(frozen=True, slots=True)
class Ready:
    """A device holding a trained update, and the check-in that said so."""

    device_id: str
    commits: int
    checkin: rm.CheckIn
    staleness: int = 0


class AsyncLobby:
    """The devices of one async task outside its cohort rounds; see the module docstring."""

    def __init__(self, task_id: str, spec: TaskSpec, pace: PaceSteering) -> None:
        self.task_id = task_id
        self.spec = spec
        self.pace = pace
        self.commits = 0  # versions committed by this process (staleness counts these)
        self.training: dict[str, _Ticket] = {}
        self.ready: dict[str, Ready] = {}  # insertion order: first ready, first in a cohort
        self.refused_stale = 0
        # The round whose plans new tickets carry, and the version/config they train from.
        self.config: RoundConfig | None = None
        self.update: rm.UpdateSpec | None = None
        self.model_sha256 = ""
        # The running cohort round's members, and each cohort round's members' staleness
        # (round number -> device -> staleness), for its record.
        self.cohort: frozenset[str] = frozenset()
        self.cohort_staleness: dict[int, dict[str, int]] = {}

    def offer(self, config: RoundConfig, update: rm.UpdateSpec) -> None:
        """Train newcomers on ``config.model`` (the latest version), tickets ``round_id``."""
        self.config, self.update = config, update

    def committed(self) -> None:
        self.commits += 1

    def cohort_ended(self) -> None:
        """The running cohort round committed or was abandoned: its members are free."""
        self.cohort = frozenset()

    # --- events ----------------------------------------------------------------------------

    def check_in(
        self, device_id: str, msg: rm.CheckIn, now: float, first_msg_id: int
    ) -> list[Command]:
        """Answer a check-in (ids from ``first_msg_id`` on); raises ``AsyncNotSupported``
        (before any change) for an SDK that predates async rounds."""
        if not msg.features & ra.FEATURE_ASYNC:
            raise ra.AsyncNotSupported(
                f"{device_id}: sdk {msg.sdk_version!r} cannot take part in an async task"
            )
        ids = iter(range(first_msg_id, first_msg_id + 3))
        out: list[Command] = [_ack(device_id, msg, next(ids))]
        ticket = self.training.get(device_id)
        known = self.ready.get(device_id)
        if (
            known is not None
            and msg.async_ticket
            and known.checkin.async_ticket == msg.async_ticket
        ):
            self.ready[device_id] = replace(known, checkin=msg)  # checking in again: waits on
            return out
        if ticket is not None and msg.async_ticket == ticket.round_id:
            del self.training[device_id]
            staleness = self.commits - ticket.commits
            if staleness > self.spec.max_staleness:
                self.refused_stale += 1
                out.append(self._window(device_id, rm.ReconnectReason.TOO_STALE, now, next(ids)))
                return out
            self.ready[device_id] = Ready(device_id, ticket.commits, msg)
            return out
        # A newcomer, or a device whose update this lobby does not know (trained before a
        # restart, or lapsed): it trains from the latest version when there is room.
        self.training.pop(device_id, None)
        self.ready.pop(device_id, None)
        cfg, update = self.config, self.update
        if cfg is None or update is None or not cfg.admits(device_id, msg.n_examples):
            out.append(self._window(device_id, rm.ReconnectReason.NO_ROUND, now, next(ids)))
        elif self.in_flight() >= self.spec.max_concurrent:
            out.append(self._window(device_id, rm.ReconnectReason.ROUND_FULL, now, next(ids)))
        else:
            expires = now + cfg.training_timeout + cfg.stage_timeout
            self.training[device_id] = _Ticket(cfg.round_id, self.commits, expires)
            out.append(_train_plan(device_id, cfg, update, next(ids)))
        return out

    def abandon(self, device_id: str, msg: rm.Abandon, msg_id: int) -> list[Command] | None:
        """A device gives up its training (None: it has no ticket here)."""
        ticket = self.training.get(device_id)
        if ticket is None or ticket.round_id != msg.round_id:
            return None
        del self.training[device_id]
        return [_ack(device_id, msg, msg_id)]

    def tick(self, now: float) -> None:
        """Let tickets lapse whose training window has passed (their devices gave up)."""
        for device_id in [d for d, t in self.training.items() if t.expires <= now]:
            del self.training[device_id]

    def take(self, now: float, first_msg_id: int) -> tuple[list[Ready], list[Command]]:
        """The next cohort (``buffer_size`` ready devices, with their staleness) once that
        many are ready that are not too stale (else none), and the refusals of stale ones."""
        out: list[Command] = []
        for r in list(self.ready.values()):
            if self.commits - r.commits > self.spec.max_staleness:
                del self.ready[r.device_id]
                self.refused_stale += 1
                reason = rm.ReconnectReason.TOO_STALE
                out.append(self._window(r.device_id, reason, now, first_msg_id + len(out)))
        if len(self.ready) < self.spec.buffer_size:
            return [], out
        chosen = list(self.ready.values())[: self.spec.buffer_size]
        for r in chosen:
            del self.ready[r.device_id]
        return [replace(r, staleness=self.commits - r.commits) for r in chosen], out

    # --- queries ---------------------------------------------------------------------------

    def in_flight(self) -> int:
        """Devices training or holding an update not yet in a committed or abandoned cohort."""
        return len(self.training) + len(self.ready) + len(self.cohort)

    def figures(self) -> dict[str, int]:
        return {
            "training": len(self.training),
            "ready": len(self.ready),
            "commits": self.commits,
            "refused_stale": self.refused_stale,
        }

    def _window(self, device_id: str, reason: rm.ReconnectReason, now: float, msg_id: int) -> Send:
        earliest, latest = self.pace.window(now)
        task_id = self.task_id
        return Send(
            device_id=device_id,
            message=rm.ReconnectWindow(msg_id=msg_id, task_id=task_id, round_id=0,
                                       reason=reason, earliest=earliest, latest=latest),
        )  # fmt: skip


def staleness_counts(staleness: Iterable[int]) -> dict[str, int]:
    """How many updates were how stale (JSON keys: the staleness as text)."""
    counts = Counter(staleness)
    return {str(s): counts[s] for s in sorted(counts)}


def _ack(device_id: str, msg: rm.DeviceMessage, msg_id: int) -> Send:
    return Send(
        device_id=device_id,
        message=rm.Ack(msg_id=msg_id, task_id=msg.task_id, round_id=0, acked=msg.msg_id,
                       status=rm.AckStatus.ACCEPTED),
    )  # fmt: skip


def _train_plan(device_id: str, cfg: RoundConfig, update: rm.UpdateSpec, msg_id: int) -> Send:
    # Held-out examples stay out of training here too (the plan carries the holdout).
    plan = plan_message(
        cfg, update, msg_id=msg_id, secagg=None, kind=rm.RoundKind.TRAIN,
        async_role=ra.ASYNC_TRAIN,
    )  # fmt: skip
    return Send(device_id=device_id, message=plan)
