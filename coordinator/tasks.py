"""Task specifications (the round configuration an operator submits) and task lifecycle moves."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fedrt.coordinator.dp_config import AdaptiveClip, DpConfig
from fedrt.coordinator.errors import BadRequestError, IllegalTransition
from fedrt.coordinator.records import AuditEntry, TaskRecord, TaskStatus
from fedrt.coordinator.store import Store
from fedrt.protocol.round_errors import InvalidTopic
from fedrt.protocol.topics import check_id

Clock = Callable[[], float]

SECAGG_STRATEGIES = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
# Robust aggregators need every individual update, which SecAgg+ exists to hide.
PLAIN_ONLY_STRATEGIES = ("median", "trimmed_mean", "krum")
STRATEGIES = SECAGG_STRATEGIES + PLAIN_ONLY_STRATEGIES


@dataclass(frozen=True, slots=True)
class Bound:
    """The interval a numeric field must lie in (``hi`` None: unbounded above).

    One table (``SPEC_BOUNDS``) drives both ``TaskSpec`` validation and the OpenAPI
    document, so the two cannot drift apart.
    """

    lo: float
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    def holds(self, value: float) -> bool:
        # Python compares ints of any size with floats exactly: no overflow here.
        above = value > self.lo if self.open_lo else value >= self.lo
        if self.hi is None:
            return above
        return above and (value < self.hi if self.open_hi else value <= self.hi)

    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else repr(x)

        if self.hi is None:
            return f"{'>' if self.open_lo else '>='} {num(self.lo)}"
        return (
            f"{'(' if self.open_lo else '['}{num(self.lo)}, {num(self.hi)}"
            f"{')' if self.open_hi else ']'}"
        )


_DEADLINE = Bound(1, 86_400)
# Every numeric TaskSpec field. Cross-field rules are in ``TaskSpec.__post_init__``.
SPEC_BOUNDS: dict[str, Bound] = {
    "server_lr": Bound(0, 10, open_lo=True),
    "server_momentum": Bound(0, 1, open_hi=True),
    "goal_count": Bound(1, 100_000),
    "over_selection": Bound(1.0, 5.0),
    "min_reports": Bound(1, 100_000),  # and at most goal_count
    "checkin_deadline_s": _DEADLINE,
    "training_deadline_s": _DEADLINE,
    "secagg_stage_deadline_s": _DEADLINE,
    "local_epochs": Bound(1, 1000),
    "batch_size": Bound(1, 65_536),
    "learning_rate": Bound(0, 10, open_lo=True),
    "fedprox_mu": Bound(0, 100),
    "clip_norm": Bound(0, 1e6, open_lo=True),
    "quantization_bits": Bound(1, 16),
    "secagg_neighbors": Bound(0),  # 0: automatic
    "secagg_threshold": Bound(0.5, 1, open_hi=True),
    "eval_every": Bound(0, 10_000),
    "promote_margin": Bound(0, 1),
    "trimmed_fraction": Bound(0, 0.5, open_hi=True),
    "max_rounds": Bound(1, 1_000_000),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """One task's round configuration; every field validated, defaults from the literature."""

    strategy: str = "fedavg"
    # Server learning rate: 1.0 makes FedAvg the plain mean; adaptive ones want ~1e-2.
    server_lr: float = 1.0
    server_momentum: float = 0.9
    # Bonawitz et al. 2019: a few hundred per round suffice; small default for pilots.
    goal_count: int = 10
    # 6-10% of selected devices drop (Bonawitz et al. 2019), so select 130% of the goal.
    over_selection: float = 1.3
    min_reports: int = 8
    checkin_deadline_s: float = 60.0
    # Google's client must finish training within 9 min 45 s; 10 minutes covers reporting.
    training_deadline_s: float = 600.0
    secagg_stage_deadline_s: float = 60.0
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.01
    fedprox_mu: float = 0.0
    # Flower's SecAgg+ clips at +-8; an L2 bound of 10 keeps typical deltas untouched.
    clip_norm: float = 10.0
    quantization_bits: int = 16
    secagg: bool = True
    # 0: choose k = O(log n) for the target failure probability (Bell et al. 2020).
    secagg_neighbors: int = 0
    # Fraction of the selected devices that must survive to unmask (t = ceil(f * n)).
    secagg_threshold: float = 0.6
    # Evaluate every N training rounds (0: never); federated evaluation rounds.
    eval_every: int = 5
    # A candidate whose accuracy drops by more than this is not promoted.
    promote_margin: float = 0.01
    trimmed_fraction: float = 0.1
    max_rounds: int = 100
    # Differential privacy (``dp_config``): with a mode other than "none", ``dp.clip``
    # replaces ``clip_norm`` as the bound of every update and each device weighs 1.
    dp: DpConfig = field(default_factory=DpConfig)

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise BadRequestError(message)

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                need(math.isfinite(value), f"{f.name} must be finite")
        need(self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}")
        need(
            not (self.secagg and self.strategy in PLAIN_ONLY_STRATEGIES),
            f"strategy {self.strategy} needs individual updates: set secagg = false",
        )
        for name, bound in SPEC_BOUNDS.items():
            need(bound.holds(getattr(self, name)), f"{name} must be in {bound}")
        need(self.min_reports <= self.goal_count, "min_reports must be at most goal_count")
        need(isinstance(self.dp, DpConfig), "dp must be a DpConfig")
        need(
            self.secagg or not (self.dp.enabled and isinstance(self.dp.clip, AdaptiveClip)),
            "dp: adaptive clipping needs secagg = true (the clip bit is a secure coordinate)",
        )
        # The population is only known per round (the driver warns when delta is not below
        # 1 / enrolled devices); at creation a cohort's worth is the least there can be.
        self.dp.check_task(
            secagg=self.secagg,
            mean_aggregation=self.strategy in SECAGG_STRATEGIES,
            population=max(self.goal_count, math.ceil(self.goal_count * self.over_selection)),
        )

    @classmethod
    def from_json(cls, data: Any) -> TaskSpec:
        """Strict decoding: unknown keys and wrong JSON types are errors, never ignored."""
        if not isinstance(data, Mapping):
            raise BadRequestError("task spec must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BadRequestError(f"unknown task spec field(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            kind = str(known[key].type)
            if kind == "DpConfig":
                kwargs[key] = DpConfig.from_mapping(value)  # refuses non-tables itself
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            ok = {
                "str": isinstance(value, str),
                "bool": isinstance(value, bool),
                # JSON has one number type: 5.0 is the integer 5 (as JSON Schema says too).
                "int": number and (isinstance(value, int) or float(value).is_integer()),
                "float": number,
            }[kind]
            if not ok:
                raise BadRequestError(f"{key} must be a JSON {kind}")
            if kind == "int":
                value = int(value)
            elif kind == "float":
                try:
                    value = float(value)
                except OverflowError:  # an integer beyond any float (JSON has no limit)
                    raise BadRequestError(f"{key} must be finite") from None
            kwargs[key] = value
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["dp"] = self.dp.to_mapping()
        return out


# action -> (states it may start from, state it leads to)
ACTIONS: dict[str, tuple[frozenset[TaskStatus], TaskStatus]] = {
    "start": (frozenset({TaskStatus.CREATED}), TaskStatus.RUNNING),
    "pause": (frozenset({TaskStatus.RUNNING}), TaskStatus.PAUSED),
    "resume": (frozenset({TaskStatus.PAUSED}), TaskStatus.RUNNING),
    "cancel": (
        frozenset({TaskStatus.CREATED, TaskStatus.RUNNING, TaskStatus.PAUSED}),
        TaskStatus.CANCELLED,
    ),
}


class TaskManager:
    """Creates tasks and moves them through their lifecycle, auditing each decision."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        on_change: Callable[[TaskRecord], None] | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        # Called after a committed change (the service announces tasks, the driver reacts).
        self.on_change = on_change

    def create(
        self,
        *,
        name: str,
        model_sha256: str,
        spec: TaskSpec,
        actor: str,
        task_id: str | None = None,
    ) -> TaskRecord:
        if not isinstance(name, str) or not (1 <= len(name) <= 200):
            raise BadRequestError("name must be 1..200 characters")
        if task_id is None:
            task_id = "task-" + secrets.token_hex(6)
        try:
            check_id(task_id, "task id")
        except InvalidTopic as exc:
            raise BadRequestError(str(exc)) from None
        now = self._clock()
        record = TaskRecord(
            task_id=task_id,
            name=name,
            status=TaskStatus.CREATED,
            spec=spec.to_json(),
            model_sha256=model_sha256,
            created_at=now,
            updated_at=now,
        )
        with self.store.transaction():
            self.store.create_task(record)
            self._audit(actor, "task.create", task_id, {"model": model_sha256})
        self._changed(record)
        return record

    def act(self, task_id: str, action: str, *, actor: str) -> TaskRecord:
        """Apply ``start``/``pause``/``resume``/``cancel``; ``IllegalTransition`` otherwise."""
        if action not in ACTIONS:
            raise BadRequestError(f"unknown task action {action!r}")
        allowed, target = ACTIONS[action]
        with self.store.transaction():
            task = self.store.get_task(task_id)
            if task.status not in allowed:
                raise IllegalTransition(f"cannot {action} a task that is {task.status.value}")
            task = self.store.set_task_status(task_id, target, at=self._clock())
            self._audit(actor, f"task.{action}", task_id, {})
        self._changed(task)
        return task

    def spec(self, task_id: str) -> TaskSpec:
        return TaskSpec.from_json(self.store.get_task(task_id).spec)

    def _changed(self, task: TaskRecord) -> None:
        if self.on_change is not None:
            self.on_change(task)

    def _audit(self, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
        self.store.append_audit(
            AuditEntry(at=self._clock(), actor=actor, action=action, subject=subject, detail=detail)
        )


__all__ = ["ACTIONS", "SPEC_BOUNDS", "STRATEGIES", "Bound", "TaskManager", "TaskSpec"]
