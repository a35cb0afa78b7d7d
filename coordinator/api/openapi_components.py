"""The OpenAPI document's component schemas: the responses (the shapes ``views`` makes), and
the request bodies generated from their pydantic models (``openapi_requests``)."""

from __future__ import annotations

from fedrt.coordinator.api.async_view import async_schema
from fedrt.coordinator.api.openapi_requests import (
    B64,
    BOOL,
    FREE,
    INT,
    NUM,
    SHA,
    STR,
    Schema,
    nullable,
    obj,
    ref,
    request_schemas,
)
from fedrt.coordinator.records import ModelStatus, RoundStatus, TaskStatus


def _delivery() -> Schema:
    """The ``delivery`` of a version's metadata (``models.delivery.delivery_view``)."""
    blob = {"sha256": SHA, "bytes": INT, "path": STR}
    delta = obj({**blob, "from": SHA, "to": SHA, "bits": INT})  # model-forms
    return obj({"params": INT, "graph": obj(blob), "weights": obj(blob),
                "deltas": {"type": "array", "items": delta}})  # fmt: skip


def response_schemas() -> dict[str, Schema]:
    """Every component schema: the responses' written here, the requests' generated."""
    rnd = obj(
        {
            "task_id": STR,
            "round_no": INT,
            "stage": STR,
            "status": {"type": "string", "enum": [s.value for s in RoundStatus]},
            "model_sha256": SHA,
            "started_at": NUM,
            "ended_at": nullable(NUM),
            "deadline": nullable(NUM),
            "checked_in": INT,
            "selected": INT,
            "reporting": INT,
            "dropped": INT,
            "bytes_in": INT,
            "result_sha256": nullable(SHA),
            "detail": FREE,
            # Differential privacy: cumulative epsilon at the task's delta, noise std on the
            # aggregate sum; null when the task has no DP.
            "epsilon": nullable(NUM),
            "noise_stddev": nullable(NUM),
        }
    )
    stage = obj({"stage": STR, "at": NUM, "detail": FREE})
    task = obj(
        {
            "task_id": STR,
            "name": STR,
            "status": {"type": "string", "enum": [s.value for s in TaskStatus]},
            "spec": ref("TaskSpec"),
            "model_sha256": SHA,
            "created_at": NUM,
            "updated_at": NUM,
            "latest_round": nullable(ref("Round")),
            "dp_accounting": nullable(STR),
        }
    )
    series_point = obj({"round_no": INT, "value": NUM, "at": NUM})
    series = {"type": "object", "additionalProperties": {"type": "array", "items": series_point}}
    overview_task = {
        **task,
        "properties": {
            **task["properties"],
            "rounds": {"type": "array", "items": ref("Round")},
            "series": series,
        },
        "required": sorted([*task["required"], "rounds", "series"]),
    }
    return {
        "Error": obj({"error": obj({"type": STR, "message": STR})}),
        "Health": obj(
            {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "mqtt_connected": BOOL,
                "version": STR,
            }
        ),
        "Round": rnd,
        "RoundDetail": {
            **rnd,
            "properties": {**rnd["properties"], "stages": {"type": "array", "items": stage}},
            "required": sorted([*rnd["required"], "stages"]),
        },
        **request_schemas(),
        "Task": task,
        "TaskList": obj({"tasks": {"type": "array", "items": ref("Task")}}),
        "RoundList": obj({"rounds": {"type": "array", "items": ref("Round")}}),
        "Metrics": obj({"task_id": STR, "series": series}),
        "AsyncTask": async_schema(),  # an async (FedBuff) task's commits and buffer
        "Device": obj(
            {
                "device_id": STR,
                "public_key": B64,
                "enrolled_at": NUM,
                "revoked": BOOL,
                "revoked_at": nullable(NUM),
                "last_seen": nullable(NUM),
                "labels": {"type": "object", "additionalProperties": STR},
            }
        ),
        "DeviceList": obj({"devices": {"type": "array", "items": ref("Device")}}),
        "Model": obj(
            {
                "sha256": SHA,
                "task_id": nullable(STR),
                "parent_sha256": nullable(SHA),
                "round_no": nullable(INT),
                "status": {"type": "string", "enum": [s.value for s in ModelStatus]},
                "size": INT,
                "manifest": FREE,
                "signature": B64,
                "created_at": NUM,
                "metrics": FREE,
            },
            # Versions built from a graph (models.delivery): what rebuilds them (model-forms).
            {"delivery": ref("Delivery")},
        ),
        "Delivery": _delivery(),  # model-forms
        "ModelList": obj({"models": {"type": "array", "items": ref("Model")}}),
        "EnrollResponse": obj(
            {
                "device_id": STR,
                "mqtt_username": STR,
                "mqtt_password": STR,
                "coordinator_public_key": B64,
                "mqtt": obj(
                    {"host": STR, "port": INT, "tls": BOOL},
                    # A broker cluster (mqtt_nodes): more listeners, and the MQTT version.
                    {
                        "nodes": {"type": "array", "items": obj({"host": STR, "port": INT})},
                        "protocol": {"type": "integer", "enum": [4, 5]},
                        # The QoS to read the inbox at (broker.device_inbox_qos); absent: 1.
                        "inbox_qos": {"type": "integer", "enum": [0, 1]},
                    },
                ),
            },
            {
                # The coordinator's public URL: model links in plans start with it.
                "coordinator_url": {"type": "string", "format": "uri"},
                # PEM of the CA that signs the coordinator's HTTPS certificate.
                "ca_pem": {"type": "string", "contentMediaType": "application/x-pem-file"},
            },
        ),
        "TokenResponse": obj({"token": STR, "expires_at": NUM}),
        "AuditList": obj(
            {
                "entries": {
                    "type": "array",
                    "items": obj(
                        {
                            "seq": INT,
                            "at": NUM,
                            "actor": STR,
                            "action": STR,
                            "subject": STR,
                            "detail": FREE,
                        }
                    ),
                }
            }
        ),
        "Info": obj({"version": STR, "coordinator_public_key": B64, "config": FREE}),
        "Overview": obj(
            {
                "now": NUM,
                "tasks": {"type": "array", "items": overview_task},
                "devices": {"type": "array", "items": ref("Device")},
            }
        ),
    }


__all__ = ["response_schemas"]
