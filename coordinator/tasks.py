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
        need(0 < self.server_lr <= 10, "server_lr must be in (0, 10]")
        need(0 <= self.server_momentum < 1, "server_momentum must be in [0, 1)")
        need(1 <= self.goal_count <= 100_000, "goal_count must be in 1..100000")
        need(1.0 <= self.over_selection <= 5.0, "over_selection must be in [1, 5]")
        need(1 <= self.min_reports <= self.goal_count, "min_reports must be in 1..goal_count")
        for name in ("checkin_deadline_s", "training_deadline_s", "secagg_stage_deadline_s"):
            need(1 <= getattr(self, name) <= 86_400, f"{name} must be in [1, 86400] seconds")
        need(1 <= self.local_epochs <= 1000, "local_epochs must be in 1..1000")
        need(1 <= self.batch_size <= 65_536, "batch_size must be in 1..65536")
        need(0 < self.learning_rate <= 10, "learning_rate must be in (0, 10]")
        need(0 <= self.fedprox_mu <= 100, "fedprox_mu must be in [0, 100]")
        need(0 < self.clip_norm <= 1e6, "clip_norm must be in (0, 1e6]")
        need(1 <= self.quantization_bits <= 16, "quantization_bits must be in 1..16")
        need(self.secagg_neighbors >= 0, "secagg_neighbors must be >= 0 (0 = automatic)")
        need(0.5 <= self.secagg_threshold < 1, "secagg_threshold must be in [0.5, 1)")
        need(0 <= self.eval_every <= 10_000, "eval_every must be in 0..10000")
        need(0 <= self.promote_margin <= 1, "promote_margin must be in [0, 1]")
        need(0 <= self.trimmed_fraction < 0.5, "trimmed_fraction must be in [0, 0.5)")
        need(1 <= self.max_rounds <= 1_000_000, "max_rounds must be in 1..1000000")
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
            ok = {
                "str": isinstance(value, str),
                "bool": isinstance(value, bool),
                "int": isinstance(value, int) and not isinstance(value, bool),
                "float": isinstance(value, int | float) and not isinstance(value, bool),
            }[kind]
            if not ok:
                raise BadRequestError(f"{key} must be a JSON {kind}")
            kwargs[key] = float(value) if kind == "float" else value
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


__all__ = ["ACTIONS", "STRATEGIES", "TaskManager", "TaskSpec"]
