"""The messages a coordinator round sends, numbered: acks, plans, requests, windows, news."""

from __future__ import annotations

from typing import Any

from fedrt.coordinator.rounds.commands import Announce, RoundConfig, Send
from fedrt.coordinator.rounds.roster import RoundRoster
from fedrt.coordinator.selection.pace import PaceSteering
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_errors import DuplicateMessageId, LateMessage, StaleMessage


def plan_message(
    c: RoundConfig,
    update: rm.UpdateSpec,
    *,
    msg_id: int,
    secagg: rm.SecAggSpec | None,
    **fields: Any,
) -> rm.Plan:
    """The round's plan for one device (``fields`` replace or add to what the round sets)."""
    planned: dict[str, Any] = {
        "msg_id": msg_id,
        "task_id": c.task_id,
        "round_id": c.round_id,
        "kind": c.kind,
        "model": c.model,
        "training": c.training,
        "update": update,
        "secagg": secagg,
        "report_within": c.training_timeout,
        "momentum": c.momentum,
        "holdout": c.holdout,
        "qfedavg_q": c.qfedavg_q,
        "personal_layers": c.personal_layers,
        "finetune_steps": c.finetune_steps,
        "scaffold": c.scaffold,
        "control_variate": c.control_variate,
    }
    return rm.Plan(**{**planned, **fields})


class RoundOutbox:
    """Builds one round's outgoing messages; owns the round's message-id counter."""

    __slots__ = ("_config", "_next", "_pace", "_update")

    def __init__(
        self, config: RoundConfig, update: rm.UpdateSpec, pace: PaceSteering, first_msg_id: int
    ) -> None:
        self._config = config
        self._update = update
        self._pace = pace
        self._next = first_msg_id

    @property
    def next_msg_id(self) -> int:
        return self._next

    def _id(self) -> int:
        self._next += 1
        return self._next - 1

    def ack(self, device_id: str, msg: rm.DeviceMessage, status: rm.AckStatus) -> Send:
        c = self._config
        return Send(
            device_id=device_id,
            message=rm.Ack(
                msg_id=self._id(),
                task_id=c.task_id,
                round_id=c.round_id,
                acked=msg.msg_id,
                status=status,
            ),
        )

    def rejection(
        self, roster: RoundRoster, device_id: str, msg: rm.DeviceMessage, error: Exception
    ) -> Send:
        """The ``Ack`` refusing ``msg`` for ``error``; a refused answer (not a late or repeated
        one) is counted in ``roster`` as a discarded update."""
        status = ack_status(error)
        if status is rm.AckStatus.REJECTED and isinstance(msg, rm.StageResponse | rm.EvalReport):
            roster.discard(device_id, msg.msg_id)
        return self.ack(device_id, msg, status)

    def reconnect(
        self, device_id: str, reason: rm.ReconnectReason, now: float, not_before: float = 0.0
    ) -> Send:
        earliest, latest = self._pace.window(now, not_before=not_before)
        c = self._config
        return Send(
            device_id=device_id,
            message=rm.ReconnectWindow(
                msg_id=self._id(),
                task_id=c.task_id,
                round_id=c.round_id,
                reason=reason,
                earliest=earliest,
                latest=latest,
            ),
        )

    def announce(self, *, accepting: bool) -> Announce:
        c = self._config
        return Announce(
            message=rm.TaskAnnouncement(
                msg_id=self._id(),
                task_id=c.task_id,
                accepting=accepting,
                round_id=c.round_id,
                model=c.model,
            )
        )

    def plan(self, device_id: str, secagg: rm.SecAggSpec | None, cohort_topic: str = "") -> Send:
        plan = plan_message(
            self._config, self._update, msg_id=self._id(), secagg=secagg, cohort_topic=cohort_topic
        )
        return Send(device_id=device_id, message=plan)

    def request(self, device_id: str, stage: rm.Stage, payload: bytes) -> Send:
        c = self._config
        return Send(
            device_id=device_id,
            message=rm.StageRequest(
                msg_id=self._id(),
                task_id=c.task_id,
                round_id=c.round_id,
                stage=stage,
                respond_within=c.stage_timeout,
                payload=payload,
            ),
        )


def ack_status(error: Exception) -> rm.AckStatus:
    """How a refused device message is acknowledged, so the device stops resending it."""
    if isinstance(error, DuplicateMessageId):
        return rm.AckStatus.DUPLICATE
    if isinstance(error, LateMessage | StaleMessage):
        return rm.AckStatus.LATE
    return rm.AckStatus.REJECTED


def no_round_replies(
    *,
    task_id: str,
    device_id: str,
    message: rm.DeviceMessage,
    pace: PaceSteering,
    now: float,
    first_msg_id: int,
    reason: rm.ReconnectReason = rm.ReconnectReason.NO_ROUND,
    lost: bool = False,
) -> list[Send]:
    """What the driver answers when no round of ``task_id`` can take ``message``: a check-in
    is acknowledged and sent away with a paced window (``reason``: NO_ROUND, TASK_PAUSED);
    anything else is acknowledged LATE so the device's outbox stops resending it. The
    replies use ids ``first_msg_id``, ``first_msg_id + 1``; they carry round id 0.

    ``lost``: the message belongs to a round this coordinator lost in a restart. The device
    may still be waiting in it (an SDK that does not watch the coordinator's incarnation),
    so the LATE ack is followed by a ``soon`` window, ROUND_ABANDONED, with that round's id:
    the device leaves the round now, and comes back without its silence back-off."""
    status = rm.AckStatus.ACCEPTED if isinstance(message, rm.CheckIn) else rm.AckStatus.LATE
    out = [
        Send(
            device_id=device_id,
            message=rm.Ack(
                msg_id=first_msg_id,
                task_id=task_id,
                round_id=0,
                acked=message.msg_id,
                status=status,
            ),
        )
    ]
    if isinstance(message, rm.CheckIn):
        round_id, earliest_latest = 0, pace.window(now)
    elif lost:
        round_id, earliest_latest = message.round_id, pace.window(now, soon=True)
        reason = rm.ReconnectReason.ROUND_ABANDONED
    else:
        return out
    earliest, latest = earliest_latest
    window = rm.ReconnectWindow(
        msg_id=first_msg_id + 1,
        task_id=task_id,
        round_id=round_id,
        reason=reason,
        earliest=earliest,
        latest=latest,
    )
    out.append(Send(device_id=device_id, message=window))
    return out


__all__ = ["RoundOutbox", "ack_status", "no_round_replies", "plan_message"]
