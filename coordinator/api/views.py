"""JSON views of stored records for the REST API (the shapes ``openapi_components`` documents)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from fedrt.coordinator.privacy.accounting import ACCOUNTING_ASSUMPTION
from fedrt.coordinator.records import (
    AuditEntry,
    DeviceRecord,
    MetricRecord,
    ModelRecord,
    RoundRecord,
    StageRecord,
    TaskRecord,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def round_view(r: RoundRecord) -> dict[str, Any]:
    return {
        "task_id": r.task_id,
        "round_no": r.round_no,
        "stage": r.stage,
        "status": r.status.value,
        "model_sha256": r.model_sha256,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "deadline": r.deadline,
        "checked_in": r.checked_in,
        "selected": r.selected,
        "reporting": r.reporting,
        "dropped": r.dropped,
        "bytes_in": r.bytes_in,
        "result_sha256": r.result_sha256,
        "detail": r.detail,
        "epsilon": r.epsilon,
        "noise_stddev": r.noise_stddev,
    }


def stage_view(s: StageRecord) -> dict[str, Any]:
    return {"stage": s.stage, "at": s.at, "detail": s.detail}


def task_view(t: TaskRecord, latest: RoundRecord | None = None) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "name": t.name,
        "status": t.status.value,
        "spec": t.spec,
        "model_sha256": t.model_sha256,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "latest_round": round_view(latest) if latest is not None else None,
        # The sampling a DP task's epsilon is accounted for (privacy.accounting).
        "dp_accounting": ACCOUNTING_ASSUMPTION if _dp_on(t.spec) else None,
    }


def _dp_on(spec: Mapping[str, Any]) -> bool:
    dp = spec.get("dp")
    return isinstance(dp, Mapping) and dp.get("mode", "none") != "none"


def device_view(d: DeviceRecord) -> dict[str, Any]:
    # The credential hash stays inside: nothing outside needs it.
    return {
        "device_id": d.device_id,
        "public_key": b64(d.public_key),
        "enrolled_at": d.enrolled_at,
        "revoked": d.revoked,
        "revoked_at": d.revoked_at,
        "last_seen": d.last_seen,
        "labels": d.labels,
    }


def model_view(m: ModelRecord) -> dict[str, Any]:
    return {
        "sha256": m.sha256,
        "task_id": m.task_id,
        "parent_sha256": m.parent_sha256,
        "round_no": m.round_no,
        "status": m.status.value,
        "size": m.size,
        "manifest": m.manifest,
        "signature": b64(m.signature),
        "created_at": m.created_at,
        "metrics": m.metrics,
    }


def metrics_view(rows: list[MetricRecord]) -> dict[str, list[dict[str, Any]]]:
    """``{name: [{round_no, value, at}, ...]}`` ordered by round."""
    out: dict[str, list[dict[str, Any]]] = {}
    for m in rows:
        out.setdefault(m.name, []).append({"round_no": m.round_no, "value": m.value, "at": m.at})
    return out


def audit_view(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "subject": e.subject,
        "detail": e.detail,
    }


__all__ = [
    "audit_view",
    "b64",
    "device_view",
    "metrics_view",
    "model_view",
    "round_view",
    "stage_view",
    "task_view",
]
