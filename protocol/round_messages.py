"""The round-protocol messages exchanged between devices and the coordinator, validated.

Every message carries ``msg_id`` (unique per sender and increasing: devices persist their
counter so a reboot never reuses one) and ``task_id``; everything inside a round carries
``round_id``. Durations are RELATIVE seconds ("respond within"), never wall-clock times,
because device clocks are not synchronised with the coordinator's. Opaque ``payload`` bytes
belong to the layer named by ``stage`` (SecAgg+ messages from ``protocol.codec``, or a
bit-packed quantized update), so this module does not depend on their encodings.

Fields are validated on construction, so a decoded message is as trustworthy as one built
locally; out-of-range values raise ``MalformedMessage``. The wire codec is ``round_codec``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TypeAlias

from fedrt.protocol.round_fields import (
    MAX_PAYLOAD,
    MAX_WINDOW,
    U64_MAX,
    blob,
    cohort,
    enum_member,
    fail,
    ident,
    seconds,
    text,
    u64,
)
from fedrt.protocol.round_plan import (
    CohortMember,
    DpSpec,
    Metric,
    ModelRef,
    SecAggSpec,
    TrainingConfig,
    UpdateSpec,
)

# A field added to a message after its first release (``round_codec``): it is left off the
# wire while it holds its default, so the message still reads on either side of the change.
APPENDED = {"wire": "appended"}


class RoundKind(enum.IntEnum):
    TRAIN = 1
    EVALUATE = 2


class Stage(enum.IntEnum):
    """What a device answers: the five SecAgg+ stages, or a plain update / evaluation."""

    ADVERTISE_KEYS = 1
    SHARE_KEYS = 2
    MASKED_INPUT = 3
    UNMASK = 4
    PLAIN_UPDATE = 5
    EVALUATION = 6
    CONSISTENCY_CHECK = 7  # SecAgg+: sign the included set, between MASKED_INPUT and UNMASK


class AckStatus(enum.IntEnum):
    ACCEPTED = 0
    DUPLICATE = 1  # already processed; the sender may forget it
    LATE = 2  # the stage had closed; the sender may forget it
    REJECTED = 3  # invalid for this round; resending will not help


class ReconnectReason(enum.IntEnum):
    NO_ROUND = 1  # nothing to do for this task now
    ROUND_FULL = 2  # enough devices checked in; try a later round
    ROUND_COMPLETE = 3  # the round this device took part in committed
    ROUND_ABANDONED = 4  # the round failed; the device's work is discarded
    DROPPED = 5  # the device missed a deadline and was cut from the round
    TASK_PAUSED = 6
    # Appended (async rounds): the device's kept update is more than the task's
    # max_staleness versions behind; it is discarded and the device trains again.
    TOO_STALE = 7


class AbandonReason(enum.IntEnum):
    INELIGIBLE = 1  # battery, network or idleness lost and not regained in time
    DEADLINE = 2  # could not finish before the stage deadline
    NO_DATA = 3
    MODEL_UNAVAILABLE = 4  # download failed or the artifact did not verify
    ERROR = 5
    DECLINED = 6  # the app or user opted out
    # Members are only ever appended (the codec sends the number): a peer that predates one
    # refuses it as malformed, which the sender sees as a REJECTED ack.
    RESTARTED = 7  # the device restarted mid-round and lost its round state (SecAgg+ secrets)
    SERVER_INCONSISTENT = 8  # SecAgg+: the server showed a survivor set not certified by t


# --- coordinator -> device ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskAnnouncement:
    """Retained on ``tasks/{task_id}``: what a task needs now (absent topic = no task)."""

    msg_id: int
    task_id: str
    accepting: bool
    round_id: int
    # The model a device may prefetch before it checks in (None while the task has none).
    model: ModelRef | None = None

    def __post_init__(self) -> None:
        u64(self, "msg_id", "round_id")
        ident(self, "task_id")
        if not isinstance(self.accepting, bool):
            raise fail(TaskAnnouncement, "accepting must be a bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The device was selected: train (or evaluate) this model and report within the window."""

    msg_id: int
    task_id: str
    round_id: int
    kind: RoundKind
    model: ModelRef
    training: TrainingConfig
    update: UpdateSpec
    # None: SecAgg off, the update goes as a plain quantized vector (robust aggregation).
    secagg: SecAggSpec | None
    report_within: float
    # Heavy-ball momentum of the device's local SGD (models exported with --momentum; the
    # coordinator refuses it for others). Appended: left off the wire at 0.
    momentum: float = field(default=0.0, metadata=APPENDED)
    # Personalization (FedPer, Arivazhagan et al. 2019): weight tensors (manifest names) the
    # device keeps to itself across rounds; ``update.params`` counts only the others. And
    # local SGD steps on the device's own examples before it evaluates (0: none).
    personal_layers: tuple[str, ...] = field(default=(), metadata=APPENDED)
    finetune_steps: int = field(default=0, metadata=APPENDED)
    # Async rounds (``round_async``): the plan's role (0: a synchronous round's plan) and,
    # for a REPORT plan, how many versions were committed since the device's training plan.
    async_role: int = field(default=0, metadata=APPENDED)
    staleness: int = field(default=0, metadata=APPENDED)
    # Honest evaluation (sdk.holdout): the share of its examples a device holds out, never
    # trains on, and evaluates on in evaluation rounds (0: it trains and evaluates on all).
    holdout: float = field(default=0.0, metadata=APPENDED)
    # q-FedAvg (Li et al. 2020; sdk.qfedavg): the fairness exponent q, None for other
    # strategies. The device weighs its update by its loss at the start weights.
    qfedavg_q: float | None = field(default=None, metadata=APPENDED)
    # SCAFFOLD (Karimireddy et al. 2020): train with the correction c - c_i and send the
    # new variate c_i+ after the model delta (``update.params`` counts both). The server
    # variate c is the blob ``control_variate`` names (None: c = 0).
    scaffold: bool = field(default=False, metadata=APPENDED)
    control_variate: ModelRef | None = field(default=None, metadata=APPENDED)
    # Per-cohort topics (``topics.cohort_key``): the device sends this round's replies on
    # ``up/c/<cohort_topic>/...`` ("": on the plain up-topics). Given only to devices whose
    # check-in set ``topics.FEATURE_COHORT_TOPICS``: an older SDK refuses unknown fields.
    cohort_topic: str = field(default="", metadata=APPENDED)

    def __post_init__(self) -> None:
        u64(self, "msg_id", "round_id", "finetune_steps", "staleness")
        if self.cohort_topic != "":
            cohort(self, "cohort_topic")
        if self.async_role not in (0, 1, 2):  # round_async.ASYNC_ROLES
            raise fail(Plan, f"async_role must be 0, 1 or 2, got {self.async_role!r}")
        ident(self, "task_id")
        enum_member(self, "kind", RoundKind)
        seconds(self, "report_within")
        layers = self.personal_layers
        if not isinstance(layers, tuple) or len(layers) > 1024:
            raise fail(Plan, "personal_layers must be a tuple of at most 1024 names")
        if not all(isinstance(n, str) and 0 < len(n) <= 256 for n in layers):
            raise fail(Plan, "personal_layers must be names of 1 to 256 characters")
        if len(set(layers)) != len(layers):
            raise fail(Plan, "personal_layers names a tensor twice")
        m = self.momentum
        if not (isinstance(m, float) and math.isfinite(m) and 0.0 <= m < 1.0):
            raise fail(Plan, "momentum must be a float in [0, 1)")
        h = self.holdout
        if not (isinstance(h, float) and math.isfinite(h) and 0.0 <= h < 1.0):
            raise fail(Plan, "holdout must be a float in [0, 1)")
        q = self.qfedavg_q
        if q is not None and not (isinstance(q, float) and math.isfinite(q) and 0.0 <= q <= 100):
            raise fail(Plan, "qfedavg_q must be None or a float in [0, 100]")
        for name, kind in (
            ("model", ModelRef),
            ("training", TrainingConfig),
            ("update", UpdateSpec),
        ):
            if not isinstance(getattr(self, name), kind):
                raise fail(Plan, f"{name} must be a {kind.__name__}")
        if self.secagg is not None and not isinstance(self.secagg, SecAggSpec):
            raise fail(Plan, "secagg must be a SecAggSpec or None")
        if not isinstance(self.scaffold, bool):
            raise fail(Plan, "scaffold must be a bool")
        if self.control_variate is not None and not (
            self.scaffold and isinstance(self.control_variate, ModelRef)
        ):
            raise fail(Plan, "control_variate must be a ModelRef, in a scaffold plan only")


@dataclass(frozen=True, slots=True, kw_only=True)
class StageRequest:
    """The coordinator opens a stage for this device (SecAgg+ relay payload inside)."""

    msg_id: int
    task_id: str
    round_id: int
    stage: Stage
    respond_within: float
    payload: bytes

    def __post_init__(self) -> None:
        u64(self, "msg_id", "round_id")
        ident(self, "task_id")
        enum_member(self, "stage", Stage)
        seconds(self, "respond_within")
        blob(self, "payload")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The coordinator processed (or refused) the device's message ``acked``."""

    msg_id: int
    task_id: str
    round_id: int
    acked: int
    status: AckStatus

    def __post_init__(self) -> None:
        u64(self, "msg_id", "round_id", "acked")
        ident(self, "task_id")
        enum_member(self, "status", AckStatus)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectWindow:
    """Pace steering: come back (check in again) at a uniformly random time in the window."""

    msg_id: int
    task_id: str
    round_id: int
    reason: ReconnectReason
    earliest: float
    latest: float

    def __post_init__(self) -> None:
        u64(self, "msg_id", "round_id")
        ident(self, "task_id")
        enum_member(self, "reason", ReconnectReason)
        seconds(self, "earliest", "latest")
        if self.latest < self.earliest:
            raise fail(ReconnectWindow, "latest must not precede earliest")


# --- device -> coordinator ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckIn:
    """An eligible device offers to take part in the task's next round."""

    msg_id: int
    task_id: str
    sdk_version: str
    # The model version the device has cached (0: none), so it can skip a download.
    model_version: int = 0
    # Examples the device holds, for a task's ``min_examples`` (self-reported; 0: not
    # reported). Appended to the wire format: absent from older devices' check-ins.
    n_examples: int = field(default=0, metadata=APPENDED)
    # What the SDK can do (``round_async.FEATURE_ASYNC``; 0 from older SDKs, which async
    # tasks refuse), and the async training plan whose kept update the device offers (the
    # plan's round id; 0: none). Appended.
    features: int = field(default=0, metadata=APPENDED)
    async_ticket: int = field(default=0, metadata=APPENDED)

    def __post_init__(self) -> None:
        u64(self, "msg_id", "model_version", "n_examples", "features", "async_ticket")
        ident(self, "task_id")
        text(self, "sdk_version", 64)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageResponse:
    """A device's answer to a stage: SecAgg+ message, or its plain quantized update."""

    msg_id: int
    task_id: str
    round_id: int
    stage: Stage
    payload: bytes

    def __post_init__(self) -> None:
        u64(self, "msg_id", "round_id")
        ident(self, "task_id")
        enum_member(self, "stage", Stage)
        blob(self, "payload")


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalReport:
    """Federated evaluation: example count and metric SUMS (e.g. loss_sum, correct)."""

    msg_id: int
    task_id: str
    round_id: int
    n_examples: int
    metrics: tuple[Metric, ...]

    def __post_init__(self) -> None:
        u64(self, "msg_id", "round_id", "n_examples")
        ident(self, "task_id")
        if not isinstance(self.metrics, tuple) or len(self.metrics) > 64:
            raise fail(EvalReport, "metrics must be a tuple of at most 64 Metric")
        names = [m.name for m in self.metrics if isinstance(m, Metric)]
        if len(names) != len(self.metrics) or len(set(names)) != len(names):
            raise fail(EvalReport, "metrics must be Metric values with distinct names")


@dataclass(frozen=True, slots=True, kw_only=True)
class Abandon:
    """The device leaves the round; the coordinator stops waiting for it."""

    msg_id: int
    task_id: str
    round_id: int
    reason: AbandonReason
    detail: str = ""

    def __post_init__(self) -> None:
        u64(self, "msg_id", "round_id")
        ident(self, "task_id")
        enum_member(self, "reason", AbandonReason)
        text(self, "detail", 256)


CoordinatorMessage: TypeAlias = TaskAnnouncement | Plan | StageRequest | Ack | ReconnectWindow
DeviceMessage: TypeAlias = CheckIn | StageResponse | EvalReport | Abandon
RoundMessage: TypeAlias = CoordinatorMessage | DeviceMessage

COORDINATOR_MESSAGES: tuple[type[CoordinatorMessage], ...] = (
    TaskAnnouncement,
    Plan,
    StageRequest,
    Ack,
    ReconnectWindow,
)
DEVICE_MESSAGES: tuple[type[DeviceMessage], ...] = (CheckIn, StageResponse, EvalReport, Abandon)


__all__ = [
    "COORDINATOR_MESSAGES",
    "DEVICE_MESSAGES",
    "MAX_PAYLOAD",
    "MAX_WINDOW",
    "U64_MAX",
    "Abandon",
    "AbandonReason",
    "Ack",
    "AckStatus",
    "CheckIn",
    "CohortMember",
    "CoordinatorMessage",
    "DeviceMessage",
    "DpSpec",
    "EvalReport",
    "Metric",
    "ModelRef",
    "Plan",
    "ReconnectReason",
    "ReconnectWindow",
    "RoundKind",
    "RoundMessage",
    "SecAggSpec",
    "Stage",
    "StageRequest",
    "StageResponse",
    "TaskAnnouncement",
    "TrainingConfig",
    "UpdateSpec",
]
