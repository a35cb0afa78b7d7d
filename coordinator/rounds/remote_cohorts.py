"""One SecAgg+ cohort run away from its round's owner: its set-up as the store keeps it
(``CohortSetup``) and the sans-I/O runner (``RemoteCohort``) another instance drives.

Theory of operation
-------------------
With ``[cluster] spread_cohorts`` on, the round's owner hands some cohorts to other
instances (docs/coordinator.md, "Several instances, one fleet"). Their plans still come from
the round's owner, so each member already has its SecAgg+ spec and cohort topic; what the
cohort's new owner needs is written once, as a ``CohortSetup``: the members and their
identity keys, the SecAgg+ parameters, the ring, the training deadline, the stage window, a
message-id range the round's owner never uses, and the window a member sent away gets.

``RemoteCohort`` takes the members' answers (``receive``) and deadlines (``tick``) and
returns the messages to send: acks, the next stage's requests, reconnect windows. Its
stages are the round's SecAgg+ stages, one cohort wide: a stage closes when every member
still in has answered or at its deadline, and the cohort's SecAgg+ logic is ``Cohort``'s,
the same as in the round machine. When the cohort unmasks or fails, ``result`` is its
``CohortResult``, for its owner to write to the store under its cohort lease.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from fedrt.coordinator.errors import StoreError
from fedrt.coordinator.rounds.cohort_results import CohortResult
from fedrt.coordinator.rounds.cohorts import Cohort
from fedrt.coordinator.rounds.commands import Send
from fedrt.coordinator.rounds.outbox import ack_status
from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.round_errors import (
    DuplicateMessageId,
    LateMessage,
    StaleMessage,
    UnexpectedMessage,
    UnknownParticipant,
)
from fedrt.protocol.secagg_config import Member, SecAggConfig
from fedrt.protocol.secagg_server import SecAggServer

__all__ = [
    "REMOTE_MSG_ID_BASE", "CohortSetup", "RemoteCohort", "remote_first_msg_id", "setup_of",
]  # fmt: skip

# A round's own messages number from its first id upwards, a few per device; a remote
# cohort's start 2**40 above and 2**24 apart per cohort index, so neither ever meets another.
REMOTE_MSG_ID_BASE = 1 << 40
_PER_COHORT = 1 << 24
_MAX_MEMBERS = 100_000  # the largest cohort_size

# The SecAgg+ stages after the first answer (ADVERTISE_KEYS, with the training report).
_STAGES = (
    rm.Stage.ADVERTISE_KEYS,
    rm.Stage.SHARE_KEYS,
    rm.Stage.MASKED_INPUT,
    rm.Stage.CONSISTENCY_CHECK,
    rm.Stage.UNMASK,
)


def remote_first_msg_id(round_first_msg_id: int, index: int) -> int:
    """The first message id of cohort ``index`` run away from a round numbered from
    ``round_first_msg_id``."""
    return round_first_msg_id + REMOTE_MSG_ID_BASE + index * _PER_COHORT


@dataclass(frozen=True, slots=True, kw_only=True)
class CohortSetup:
    """What a cohort's owner needs to run it (written by the round's owner)."""

    task_id: str
    round_id: int
    index: int
    key: str
    members: tuple[rm.CohortMember, ...]
    threshold: int
    neighbors: int
    bits: int
    length: int
    secagg_round_id: bytes
    training_deadline: float  # wall clock (seconds since the epoch), as leases are
    stage_timeout: float
    floor: int  # fewer inputs than this in its sum: the cohort is left out
    first_msg_id: int
    away: tuple[float, float] = (0.0, 0.0)  # a cut member's reconnect window (from now)

    def secagg(self) -> SecAggConfig:
        """The cohort's SecAgg+ configuration (``ParameterError`` if inconsistent)."""
        return SecAggConfig(
            round_id=self.secagg_round_id,
            members=tuple(
                Member(device_id=m.device_id, identity_key=m.identity_key) for m in self.members
            ),
            threshold=self.threshold,
            neighbors=self.neighbors,
            bits=self.bits,
            length=self.length,
        )

    def to_json(self) -> dict[str, Any]:
        b64 = base64.b64encode
        return {
            "task_id": self.task_id, "round_id": self.round_id, "index": self.index,
            "key": self.key, "threshold": self.threshold, "neighbors": self.neighbors,
            "members": [[m.device_id, b64(m.identity_key).decode()] for m in self.members],
            "bits": self.bits, "length": self.length,
            "secagg_round_id": b64(self.secagg_round_id).decode(),
            "training_deadline": self.training_deadline, "stage_timeout": self.stage_timeout,
            "floor": self.floor, "first_msg_id": self.first_msg_id, "away": list(self.away),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CohortSetup:
        """The set-up ``to_json`` wrote; ``StoreError`` for anything else."""
        try:
            raw = data["members"]
            if not isinstance(raw, list) or len(raw) > _MAX_MEMBERS:
                raise ValueError("members out of range")
            members = tuple(
                rm.CohortMember(
                    device_id=str(d), identity_key=base64.b64decode(str(k), validate=True)
                )
                for d, k in raw
            )
            lo, hi = (float(x) for x in data["away"])
            setup = cls(
                task_id=str(data["task_id"]),
                round_id=int(data["round_id"]),
                index=int(data["index"]),
                key=str(data["key"]),
                members=members,
                threshold=int(data["threshold"]),
                neighbors=int(data["neighbors"]),
                bits=int(data["bits"]),
                length=int(data["length"]),
                secagg_round_id=base64.b64decode(str(data["secagg_round_id"]), validate=True),
                training_deadline=float(data["training_deadline"]),
                stage_timeout=float(data["stage_timeout"]),
                floor=int(data["floor"]),
                first_msg_id=int(data["first_msg_id"]),
                away=(lo, hi),
            )
            setup.secagg()  # the parameters hold together
        except (KeyError, TypeError, ValueError, ProtocolError) as exc:
            raise StoreError(f"not a cohort set-up: {exc}") from None
        return setup


@dataclass(slots=True)
class _Member:
    index: int
    active: bool = True
    answered: set[rm.Stage] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)


class RemoteCohort:
    """One cohort's SecAgg+ stages, driven by its owner (see the module docstring)."""

    def __init__(self, setup: CohortSetup) -> None:
        self.setup = setup
        self.cohort = Cohort(
            index=setup.index,
            members=tuple(m.device_id for m in setup.members),
            server=SecAggServer(setup.secagg()),
            key=setup.key,
        )
        self._members = {d: _Member(i) for i, d in enumerate(self.cohort.members)}
        self._stage = 0  # index into _STAGES
        self.deadline: float = setup.training_deadline
        self._next = setup.first_msg_id
        self._result: CohortResult | None = None

    # --- events ----------------------------------------------------------------------------

    def receive(self, device_id: str, message: rm.DeviceMessage, now: float) -> list[Send]:
        """One message of ``device_id`` under the cohort's topic; raises (a ``RoundError`` or
        SecAgg+ ``ProtocolError``) with nothing changed when it cannot be taken."""
        s = self.setup
        if isinstance(message, rm.CheckIn):
            raise UnexpectedMessage(f"{device_id} checked in on cohort topic {s.key!r}")
        if message.task_id != s.task_id or message.round_id != s.round_id:
            raise StaleMessage(f"message for {message.task_id!r} round {message.round_id}")
        member = self._members.get(device_id)
        if member is None:
            raise UnknownParticipant(f"{device_id} is not in cohort {s.key!r}")
        if message.msg_id in member.seen:
            raise DuplicateMessageId(
                f"{device_id} message {message.msg_id} already processed", msg_id=message.msg_id
            )
        if self.finished or not member.active:
            raise LateMessage(f"{device_id} is no longer part of cohort {s.key!r}")
        if isinstance(message, rm.Abandon):
            member.seen.add(message.msg_id)
            out = [self._ack(device_id, message, rm.AckStatus.ACCEPTED)]
            member.active = False
            self._after_answer_or_loss(now, out)
            return out
        if not isinstance(message, rm.StageResponse):
            raise UnexpectedMessage(f"{type(message).__name__} is not a cohort answer")
        stage = _STAGES[self._stage]
        if message.stage != stage or stage in member.answered:
            raise UnexpectedMessage(f"{message.stage.name} is not accepted in {stage.name}")
        self.cohort.receive(member.index, message.payload)
        member.answered.add(stage)
        member.seen.add(message.msg_id)
        out = [self._ack(device_id, message, rm.AckStatus.ACCEPTED)]
        self._after_answer_or_loss(now, out)
        return out

    def tick(self, now: float) -> list[Send]:
        """Close the stage whose deadline has passed (a no-op before it)."""
        out: list[Send] = []
        if not self.finished and now >= self.deadline:
            self._close_stage(now, out, deadline=True)
        return out

    def rejection(self, device_id: str, message: rm.DeviceMessage, error: Exception) -> Send:
        """The ``Ack`` refusing ``message`` for ``error``, so the device stops resending it."""
        return self._ack(device_id, message, ack_status(error))

    def give_up(self, reason: str) -> CohortResult:
        """The cohort ends now as failed (its owner is stopping): its result."""
        if self._result is None:
            self.cohort.failed = self.cohort.failed or reason
            self._result = self.cohort.result(self.setup.floor)
        return self._result

    # --- queries ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> CohortResult | None:
        """The cohort's outcome once it unmasked or failed (None while it runs)."""
        return self._result

    @property
    def next_msg_id(self) -> int:
        return self._next

    def stage(self) -> rm.Stage | None:
        return None if self.finished else _STAGES[self._stage]

    # --- stage logic -----------------------------------------------------------------------

    def _active(self) -> list[tuple[str, _Member]]:
        return [(d, m) for d, m in self._members.items() if m.active]

    def _after_answer_or_loss(self, now: float, out: list[Send]) -> None:
        stage = _STAGES[self._stage]
        active = self._active()
        if all(stage in m.answered for _, m in active):
            self._close_stage(now, out, deadline=False)

    def _close_stage(self, now: float, out: list[Send], *, deadline: bool) -> None:
        stage = _STAGES[self._stage]
        for device_id, member in self._active():
            if stage not in member.answered:
                member.active = False
                out.append(self._away(device_id, rm.ReconnectReason.DROPPED))
        note = f" by the {stage.name} deadline" if deadline else ""
        requests = self.cohort.close_stage(note)
        if requests is None:  # failed: its members still in are told
            for device_id, _ in self._active():
                out.append(self._away(device_id, rm.ReconnectReason.ROUND_ABANDONED))
            self._result = self.cohort.result(self.setup.floor)
            return
        if stage is rm.Stage.UNMASK:
            for device_id, _ in self._active():
                out.append(self._away(device_id, rm.ReconnectReason.ROUND_COMPLETE))
            self._result = self.cohort.result(self.setup.floor)
            return
        self._stage += 1
        self.deadline = now + self.setup.stage_timeout
        nxt = _STAGES[self._stage]
        for device_id, member in self._active():
            payload = requests.get(device_id)
            if payload is None:  # answered, but SecAgg+ dropped it
                member.active = False
                out.append(self._away(device_id, rm.ReconnectReason.DROPPED))
            else:
                out.append(self._request(device_id, nxt, payload))

    # --- messages --------------------------------------------------------------------------

    def _id(self) -> int:
        self._next += 1
        return self._next - 1

    def _ack(self, device_id: str, msg: rm.DeviceMessage, status: rm.AckStatus) -> Send:
        s = self.setup
        ack = rm.Ack(msg_id=self._id(), task_id=s.task_id, round_id=s.round_id,
                     acked=msg.msg_id, status=status)  # fmt: skip
        return Send(device_id=device_id, message=ack)

    def _request(self, device_id: str, stage: rm.Stage, payload: bytes) -> Send:
        s = self.setup
        request = rm.StageRequest(msg_id=self._id(), task_id=s.task_id, round_id=s.round_id,
                                  stage=stage, respond_within=s.stage_timeout,
                                  payload=payload)  # fmt: skip
        return Send(device_id=device_id, message=request)

    def _away(self, device_id: str, reason: rm.ReconnectReason) -> Send:
        s = self.setup
        window = rm.ReconnectWindow(msg_id=self._id(), task_id=s.task_id, round_id=s.round_id,
                                    reason=reason, earliest=s.away[0],
                                    latest=s.away[1])  # fmt: skip
        return Send(device_id=device_id, message=window)


def setup_of(
    cohort: Cohort,
    *,
    task_id: str,
    round_id: int,
    training_deadline: float,
    stage_timeout: float,
    floor: int,
    first_msg_id: int,
    away: tuple[float, float],
) -> CohortSetup:
    """The set-up of a cohort the round's owner formed, for another instance to run."""
    c = cohort.server.config
    return CohortSetup(
        task_id=task_id,
        round_id=round_id,
        index=cohort.index,
        key=cohort.key,
        members=tuple(
            rm.CohortMember(device_id=m.device_id, identity_key=m.identity_key) for m in c.members
        ),
        threshold=c.threshold,
        neighbors=c.neighbors,
        bits=c.bits,
        length=c.length,
        secagg_round_id=c.round_id,
        training_deadline=training_deadline,
        stage_timeout=stage_timeout,
        floor=floor,
        first_msg_id=first_msg_id,
        away=away,
    )
