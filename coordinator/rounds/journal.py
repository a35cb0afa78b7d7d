"""What the round driver records: round, stage and metric rows, the task's completion in the
audit log, and ``RoundSummary`` for listeners.

Every write here runs inside a transaction the driver opens (``rounds.driver``); nothing
here opens one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedrt.coordinator.errors import NotFoundError
from fedrt.coordinator.privacy.rounds import RoundDp
from fedrt.coordinator.records import (
    AuditEntry,
    MetricRecord,
    RoundRecord,
    RoundStatus,
    StageRecord,
    TaskStatus,
)
from fedrt.coordinator.rounds.commands import RoundMetrics, StageChanged
from fedrt.coordinator.rounds.eval_figures import DeviceEval
from fedrt.coordinator.rounds.runs import Run
from fedrt.coordinator.store.base import Store
from fedrt.protocol import round_messages as rm

# Called after every finished round (committed or abandoned), e.g. for progress output.
RoundListener = Callable[["RoundSummary"], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundSummary:
    """One finished round, as progress output and reports want it."""

    task_id: str
    round_no: int
    kind: str
    status: str
    metrics: RoundMetrics
    model_sha256: str
    result_sha256: str | None = None
    evaluation: Mapping[str, float] = field(default_factory=dict)
    promoted: bool = False
    reason: str = ""
    bytes_out: int = 0
    # Differential privacy: cumulative epsilon at the task's delta, noise std on the sum.
    epsilon: float | None = None
    noise_stddev: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundEnd:
    """How a round ended, as the driver closes it (``FederatedDriver._close_round``)."""

    round_no: int
    status: RoundStatus
    metrics: RoundMetrics
    result_sha256: str | None
    evaluation: dict[str, float]
    promoted: bool
    reason: str
    bytes_out: int
    epsilon: float | None
    noise_stddev: float | None


def metrics_json(m: RoundMetrics) -> dict[str, Any]:
    return {
        "checked_in": m.checked_in,
        "selected": m.selected,
        "reported": m.reported,
        "included": m.included,
        "dropped": dict(m.dropped),
        "total_weight": m.total_weight,
        "update_norm": m.update_norm,
        "bytes_received": m.bytes_received,
        "started_at": m.started_at,
        "ended_at": m.ended_at,
        "bad_holders": list(m.bad_holders),
        "discarded": m.discarded,
        "secagg": m.secagg,
        "cohorts": m.cohorts,
        "cohorts_committed": m.cohorts_committed,
        "aggregator": m.aggregator,
        "robust_discarded": m.robust_discarded,
        "norm_outliers": m.norm_outliers,
    }


def record_start(
    store: Store,
    run: Run,
    kind: rm.RoundKind,
    model_sha256: str,
    now: float,
    *,
    instance: str | None = None,
) -> None:
    """The row of the round ``run`` opens: its kind, the coordinator instance running it
    (several on one store), and for a DP task its plan."""
    detail: dict[str, Any] = {"kind": kind.name.lower()}
    if instance is not None:
        detail["instance"] = instance
    if run.dp_round is not None:
        detail["dp"] = run.dp_round.to_json()
    store.create_round(
        RoundRecord(
            task_id=run.task_id,
            round_no=run.round_no,
            stage="created",
            status=RoundStatus.RUNNING,
            model_sha256=model_sha256,
            started_at=now,
            detail=detail,
        )
    )


def record_stage(store: Store, run: Run, change: StageChanged) -> None:
    """The stage row of ``change`` and the round row's stage, deadline and counts."""
    store.append_stage(
        StageRecord(
            task_id=run.task_id,
            round_no=change.round_id,
            stage=change.state,
            at=change.at,
            detail={
                "from": change.previous,
                "active": change.active,
                "reason": change.reason,
            },
        )
    )
    status = run.machine.status() if run.machine is not None else None
    store.update_round(
        run.task_id,
        change.round_id,
        stage=change.state,
        deadline=change.deadline,
        checked_in=status.checked_in if status else 0,
        reporting=status.answered if status else 0,
        dropped=status.dropped if status else 0,
    )


def end_detail(
    store: Store, task_id: str, end: RoundEnd, dp_charged: RoundDp | None = None
) -> dict[str, Any]:
    """The ended round's stored detail; ``dp_charged``: the DP plan as charged (its pool)."""
    detail = store.get_round(task_id, end.round_no).detail
    if dp_charged is not None and end.status is RoundStatus.COMMITTED:
        detail = {**detail, "dp": dp_charged.to_json()}
    return {
        # Kept: the round's kind and DP plan (a restarted driver's accountant replays
        # the committed rounds' plans).
        **detail,
        "metrics": metrics_json(end.metrics),
        "evaluation": end.evaluation,
        "promoted": end.promoted,
        "reason": end.reason,
        "bytes_out": end.bytes_out,
    }


def record_end(
    store: Store, task_id: str, end: RoundEnd, detail: dict[str, Any], now: float
) -> None:
    """The ended round's row and its evaluation metrics."""
    metrics = end.metrics
    store.update_round(
        task_id,
        end.round_no,
        status=end.status,
        ended_at=now,
        selected=metrics.selected,
        reporting=metrics.included,
        dropped=sum(n for _, n in metrics.dropped),
        bytes_in=metrics.bytes_received,
        result_sha256=end.result_sha256,
        detail=detail,
        epsilon=end.epsilon,
        noise_stddev=end.noise_stddev,
    )
    for name, value in end.evaluation.items():
        store.add_metric(
            MetricRecord(task_id=task_id, round_no=end.round_no, name=name, value=value, at=now)
        )


def summary(store: Store, run: Run, end: RoundEnd) -> RoundSummary:
    model = run.model
    return RoundSummary(
        task_id=run.task_id,
        round_no=end.round_no,
        kind=str(store.get_round(run.task_id, end.round_no).detail.get("kind")),
        status=end.status.value,
        metrics=end.metrics,
        model_sha256=model.record.sha256 if model else "",
        result_sha256=end.result_sha256,
        evaluation=end.evaluation,
        promoted=end.promoted,
        reason=end.reason,
        bytes_out=end.bytes_out,
        epsilon=end.epsilon,
        noise_stddev=end.noise_stddev,
    )


def metrics_of(data: Mapping[str, Any]) -> RoundMetrics:
    """``metrics_json``'s inverse (keys it does not know are left out)."""
    known = {f.name for f in dataclasses.fields(RoundMetrics)}
    values = {k: v for k, v in data.items() if k in known}
    dropped = dict(values.get("dropped", {}))
    values["dropped"] = tuple(sorted((str(k), int(n)) for k, n in dropped.items()))
    values["bad_holders"] = tuple(values.get("bad_holders", ()))
    return RoundMetrics(**values)


def summary_of(record: RoundRecord) -> RoundSummary:
    """The summary of an ended round as stored (one run by another instance, too)."""
    detail = record.detail
    return RoundSummary(
        task_id=record.task_id,
        round_no=record.round_no,
        kind=str(detail.get("kind")),
        status=record.status.value,
        metrics=metrics_of(detail.get("metrics", {})),
        model_sha256=record.model_sha256,
        result_sha256=record.result_sha256,
        evaluation=dict(detail.get("evaluation", {})),
        promoted=bool(detail.get("promoted", False)),
        reason=str(detail.get("reason", "")),
        bytes_out=int(detail.get("bytes_out", 0)),
        epsilon=record.epsilon,
        noise_stddev=record.noise_stddev,
    )


def record_completion(
    store: Store, run: Run, now: float, action: str, detail: Mapping[str, Any]
) -> None:
    """The task completed (all rounds run, or its privacy budget spent), audited."""
    store.set_task_status(run.task_id, TaskStatus.COMPLETED, at=now)
    store.append_audit(
        AuditEntry(
            at=now,
            actor="coordinator",
            action=action,
            subject=run.task_id,
            detail={"rounds": run.round_no, **detail},
        )
    )


def record_lost(store: Store, rnd: RoundRecord, now: float) -> None:
    """A round a previous process left open: abandoned by its restart."""
    store.update_round(
        rnd.task_id,
        rnd.round_no,
        status=RoundStatus.ABANDONED,
        ended_at=now,
        detail={**rnd.detail, "reason": "coordinator restarted"},
    )


def device_labels(store: Store, devices: Sequence[DeviceEval]) -> dict[str, Mapping[str, object]]:
    """Each evaluated device's enrolment labels (a device since deleted has none)."""
    out: dict[str, Mapping[str, object]] = {}
    for d in devices:
        try:
            out[d.device_id] = store.get_device(d.device_id).labels
        except NotFoundError:
            out[d.device_id] = {}
    return out


__all__ = [
    "RoundEnd", "RoundListener", "RoundSummary", "device_labels", "end_detail", "metrics_json",
    "record_completion", "record_end", "record_lost", "record_stage", "record_start", "summary",
]  # fmt: skip
