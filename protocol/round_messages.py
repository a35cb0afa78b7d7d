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
import re
from dataclasses import dataclass
from typing import TypeAlias

from fedrt.protocol.round_errors import InvalidTopic, MalformedMessage
from fedrt.protocol.topics import check_id

U64_MAX = 2**64 - 1
# An MQTT packet holds at most 256 MiB; 128 MiB leaves room for a 40M-parameter model at
# 24 bits per coordinate, far beyond what a phone trains.
MAX_PAYLOAD = 128 * 1024 * 1024
MAX_TEXT = 2048
# A week: pace steering never needs to push a device further away than that.
MAX_WINDOW = 7 * 24 * 3600.0
_SHA256 = re.compile(r"[0-9a-f]{64}")


class RoundKind(enum.IntEnum):
    TRAIN = 1
    EVALUATE = 2


class Stage(enum.IntEnum):
    """What a device answers: the four SecAgg+ stages, or a plain update / evaluation."""

    ADVERTISE_KEYS = 1
    SHARE_KEYS = 2
    MASKED_INPUT = 3
    UNMASK = 4
    PLAIN_UPDATE = 5
    EVALUATION = 6


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


class AbandonReason(enum.IntEnum):
    INELIGIBLE = 1  # battery, network or idleness lost and not regained in time
    DEADLINE = 2  # could not finish before the stage deadline
    NO_DATA = 3
    MODEL_UNAVAILABLE = 4  # download failed or the artifact did not verify
    ERROR = 5
    DECLINED = 6  # the app or user opted out


def _fail(cls: type, msg: str) -> MalformedMessage:
    return MalformedMessage(f"{cls.__name__}: {msg}")


def _u64(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= U64_MAX:
            raise _fail(type(obj), f"{name} must be an integer in [0, 2^64), got {v!r}")


def _positive(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= U64_MAX:
            raise _fail(type(obj), f"{name} must be a positive integer, got {v!r}")


def _seconds(obj: object, *names: str, upper: float = MAX_WINDOW) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, float | int) or not (math.isfinite(v) and 0.0 <= v <= upper):
            raise _fail(type(obj), f"{name} must be seconds in [0, {upper}], got {v!r}")


def _ident(obj: object, name: str) -> None:
    try:
        check_id(getattr(obj, name), name.replace("_", " "))
    except InvalidTopic as exc:
        raise _fail(type(obj), str(exc)) from None


def _text(obj: object, name: str, limit: int = MAX_TEXT) -> None:
    v = getattr(obj, name)
    if not isinstance(v, str) or len(v) > limit:
        raise _fail(type(obj), f"{name} must be a string of at most {limit} characters")


def _blob(obj: object, name: str, limit: int = MAX_PAYLOAD) -> None:
    v = getattr(obj, name)
    if not isinstance(v, bytes) or len(v) > limit:
        raise _fail(type(obj), f"{name} must be at most {limit} bytes")


def _enum(obj: object, name: str, kind: type[enum.IntEnum]) -> None:
    if not isinstance(getattr(obj, name), kind):
        raise _fail(type(obj), f"{name} must be a {kind.__name__}")


# --- pieces of the plan ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRef:
    """Which model to start from: fetched over HTTP, verified before it is loaded."""

    version: int
    sha256: str
    url: str
    # The coordinator's Ed25519 signature over the artifact's sha256 (empty when unsigned).
    signature: bytes = b""

    def __post_init__(self) -> None:
        _u64(self, "version")
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise _fail(ModelRef, "sha256 must be 64 lowercase hex digits")
        _text(self, "url")
        _blob(self, "signature", 128)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingConfig:
    """Local-training hyperparameters."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.01
    # FedProx proximal term (Li et al. 2020); 0 is plain local SGD.
    fedprox_mu: float = 0.0
    # 0: no cap; otherwise stop after this many steps (bounds time on devices with much data).
    max_steps: int = 0

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size")
        _u64(self, "max_steps")
        for name in ("learning_rate", "fedprox_mu"):
            v = getattr(self, name)
            if not isinstance(v, float | int) or not (math.isfinite(v) and v >= 0):
                raise _fail(TrainingConfig, f"{name} must be finite and >= 0, got {v!r}")
        if self.learning_rate <= 0:
            raise _fail(TrainingConfig, "learning_rate must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateSpec:
    """How a device turns its delta into what it sends: clip, weight, quantize."""

    # Number of float parameters of the flattened model (checked on both sides).
    params: int
    clip_norm: float
    # Quantization levels per coordinate: 2^bits.
    bits: int
    # The example count above which a device's weight stops growing (FedAvg weight = min(n, cap)).
    weight_cap: int

    def __post_init__(self) -> None:
        _positive(self, "params", "weight_cap")
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 32:
            raise _fail(UpdateSpec, f"bits must lie in [1, 32], got {self.bits!r}")
        v = self.clip_norm
        if not isinstance(v, float | int) or not (math.isfinite(v) and v > 0):
            raise _fail(UpdateSpec, f"clip_norm must be finite and > 0, got {v!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CohortMember:
    """A selected device as SecAgg+ knows it: id and registered Ed25519 public key."""

    device_id: str
    identity_key: bytes

    def __post_init__(self) -> None:
        _ident(self, "device_id")
        if not isinstance(self.identity_key, bytes) or len(self.identity_key) != 32:
            raise _fail(CohortMember, "identity_key must be 32 raw bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggSpec:
    """SecAgg+ parameters of the round, the cohort, and this device's place in it.

    The whole cohort travels because each device derives the neighbour graph from the round
    id itself and checks its neighbours' signatures against their registered keys: the
    server cannot pick a device's neighbours or swap their keys.
    """

    # This device's index in ``members``.
    client_id: int
    threshold: int
    neighbors: int
    members: tuple[CohortMember, ...]

    def __post_init__(self) -> None:
        _u64(self, "client_id")
        _positive(self, "threshold", "neighbors")
        if not isinstance(self.members, tuple) or not all(
            isinstance(m, CohortMember) for m in self.members
        ):
            raise _fail(SecAggSpec, "members must be a tuple of CohortMember")
        n = len(self.members)
        if self.client_id >= n:
            raise _fail(SecAggSpec, "client_id must index members")
        # A device's secrets have k + 1 holders (its neighbours and itself).
        if self.neighbors > max(n - 1, 1) or self.threshold > self.neighbors + 1:
            raise _fail(SecAggSpec, "need neighbors < len(members), threshold <= neighbors + 1")
        if len({m.device_id for m in self.members}) != n:
            raise _fail(SecAggSpec, "a device appears twice in the cohort")

    @property
    def n_clients(self) -> int:
        return len(self.members)


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    name: str
    value: float

    def __post_init__(self) -> None:
        _text(self, "name", 64)
        if not isinstance(self.value, float | int) or not math.isfinite(self.value):
            raise _fail(Metric, f"{self.name}: value must be finite")


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
        _u64(self, "msg_id", "round_id")
        _ident(self, "task_id")
        if not isinstance(self.accepting, bool):
            raise _fail(TaskAnnouncement, "accepting must be a bool")


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

    def __post_init__(self) -> None:
        _u64(self, "msg_id", "round_id")
        _ident(self, "task_id")
        _enum(self, "kind", RoundKind)
        _seconds(self, "report_within")
        for name, kind in (
            ("model", ModelRef),
            ("training", TrainingConfig),
            ("update", UpdateSpec),
        ):
            if not isinstance(getattr(self, name), kind):
                raise _fail(Plan, f"{name} must be a {kind.__name__}")
        if self.secagg is not None and not isinstance(self.secagg, SecAggSpec):
            raise _fail(Plan, "secagg must be a SecAggSpec or None")


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
        _u64(self, "msg_id", "round_id")
        _ident(self, "task_id")
        _enum(self, "stage", Stage)
        _seconds(self, "respond_within")
        _blob(self, "payload")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The coordinator processed (or refused) the device's message ``acked``."""

    msg_id: int
    task_id: str
    round_id: int
    acked: int
    status: AckStatus

    def __post_init__(self) -> None:
        _u64(self, "msg_id", "round_id", "acked")
        _ident(self, "task_id")
        _enum(self, "status", AckStatus)


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
        _u64(self, "msg_id", "round_id")
        _ident(self, "task_id")
        _enum(self, "reason", ReconnectReason)
        _seconds(self, "earliest", "latest")
        if self.latest < self.earliest:
            raise _fail(ReconnectWindow, "latest must not precede earliest")


# --- device -> coordinator ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckIn:
    """An eligible device offers to take part in the task's next round."""

    msg_id: int
    task_id: str
    sdk_version: str
    # The model version the device has cached (0: none), so it can skip a download.
    model_version: int = 0

    def __post_init__(self) -> None:
        _u64(self, "msg_id", "model_version")
        _ident(self, "task_id")
        _text(self, "sdk_version", 64)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageResponse:
    """A device's answer to a stage: SecAgg+ message, or its plain quantized update."""

    msg_id: int
    task_id: str
    round_id: int
    stage: Stage
    payload: bytes

    def __post_init__(self) -> None:
        _u64(self, "msg_id", "round_id")
        _ident(self, "task_id")
        _enum(self, "stage", Stage)
        _blob(self, "payload")


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalReport:
    """Federated evaluation: example count and metric SUMS (e.g. loss_sum, correct)."""

    msg_id: int
    task_id: str
    round_id: int
    n_examples: int
    metrics: tuple[Metric, ...]

    def __post_init__(self) -> None:
        _u64(self, "msg_id", "round_id", "n_examples")
        _ident(self, "task_id")
        if not isinstance(self.metrics, tuple) or len(self.metrics) > 64:
            raise _fail(EvalReport, "metrics must be a tuple of at most 64 Metric")
        names = [m.name for m in self.metrics if isinstance(m, Metric)]
        if len(names) != len(self.metrics) or len(set(names)) != len(names):
            raise _fail(EvalReport, "metrics must be Metric values with distinct names")


@dataclass(frozen=True, slots=True, kw_only=True)
class Abandon:
    """The device leaves the round; the coordinator stops waiting for it."""

    msg_id: int
    task_id: str
    round_id: int
    reason: AbandonReason
    detail: str = ""

    def __post_init__(self) -> None:
        _u64(self, "msg_id", "round_id")
        _ident(self, "task_id")
        _enum(self, "reason", AbandonReason)
        _text(self, "detail", 256)


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
    "Abandon",
    "AbandonReason",
    "Ack",
    "AckStatus",
    "CheckIn",
    "CohortMember",
    "CoordinatorMessage",
    "DeviceMessage",
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
