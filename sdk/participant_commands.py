"""Configuration of the device's round participant and the commands it returns.

The ``Device`` facade acts on each command, in order:

=================  ======================================================================
``Publish``        encode the message (``round_codec.encode_message``), keep it in the
                   on-disk outbox under ``message.msg_id``, publish it (QoS 1) to
                   ``topics.device_up(device_id, channel)``
``Forget``         drop ``msg_id`` from the outbox: the coordinator acknowledged it, or
                   nobody will (a cohort topic's reply whose round is over)
``Train``          fetch and verify ``plan.model``, train in idle windows, then call
                   ``training_done`` or ``training_abandoned`` before ``deadline``
``Evaluate``       same for evaluation: ``evaluation_done`` / ``training_abandoned``
``CancelTraining`` stop the running training or evaluation (its result is not wanted)
``ScheduleCheckIn`` wake at ``at`` (device clock) and call ``check_in`` if still eligible
``RoundEnded``     tell the app (status, callbacks, logs)
=================  ======================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

from fedrt.protocol.round_errors import InvalidTopic
from fedrt.protocol.round_messages import (
    DeviceMessage,
    Plan,
    ReconnectReason,
)
from fedrt.protocol.topics import UpChannel, check_id
from fedrt.sdk.errors import SdkConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantConfig:
    """How one device takes part in one task's rounds."""

    device_id: str
    task_id: str
    sdk_version: str = "0"
    # Subtracted from every window the coordinator gives: the reply must also travel back
    # through the broker, which on a slow link takes seconds.
    deadline_margin: float = 5.0
    # How long after its last answer the device waits for the next request (or the end of
    # the round) beyond the stage's own window, before it considers the round lost.
    grace: float = 120.0
    # How long to wait for a plan or a reconnect window after checking in.
    checkin_timeout: float = 300.0
    # When the coordinator gave no window (silence, local abandon): retry in this range.
    # Google's client retries after 15 min +- 20 % (see ARCHITECTURE.md).
    retry_earliest: float = 720.0
    retry_latest: float = 1080.0
    # After the coordinator restarted (and lost the round this device was in): check in
    # again at a uniform time within this many seconds. Soon, since its next round opens
    # with the first check-in; spread, so a round's whole cohort does not come at once.
    restart_spread: float = 20.0
    # A fleet's check-ins that nothing else spreads (the first after connecting, and those
    # of devices whose window passed while the task took none, when it opens a round) come
    # at a uniform time within this many seconds: the fleet's size over the coordinator's
    # pace target (10,000 devices at 25/s: 400 s). 0: at once (one device, tests, a demo).
    checkin_spread: float = 0.0
    # Each check-in the coordinator leaves unanswered doubles the silence back-off
    # (``retry_earliest..retry_latest``), up to this: a swamped coordinator is not retried
    # at a fixed pace by its whole fleet.
    retry_cap: float = 14_400.0

    def __post_init__(self) -> None:
        try:
            check_id(self.device_id, "device id")
            check_id(self.task_id, "task id")
        except InvalidTopic as exc:
            raise SdkConfigError(str(exc)) from None
        for name in (
            "deadline_margin",
            "grace",
            "checkin_timeout",
            "retry_earliest",
            "restart_spread",
            "checkin_spread",
            "retry_cap",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SdkConfigError(f"participant.{name} must be >= 0, got {value!r}")
        if not (math.isfinite(self.retry_latest) and self.retry_latest >= self.retry_earliest):
            raise SdkConfigError("participant.retry_latest must be >= retry_earliest")


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    channel: UpChannel
    message: DeviceMessage
    # The cohort key of the round's plan (``topics.device_up_cohort``); "": the plain topic.
    cohort: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Forget:
    msg_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Train:
    plan: Plan
    deadline: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluate:
    plan: Plan
    deadline: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTraining:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleCheckIn:
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundEnded:
    round_id: int
    # What the coordinator said (None: the device gave up on its own, see ``detail``).
    reason: ReconnectReason | None
    detail: str = ""


Command: TypeAlias = (
    Publish | Forget | Train | Evaluate | CancelTraining | ScheduleCheckIn | RoundEnded
)


__all__ = [
    "CancelTraining",
    "Command",
    "Evaluate",
    "Forget",
    "ParticipantConfig",
    "Publish",
    "RoundEnded",
    "ScheduleCheckIn",
    "Train",
]
