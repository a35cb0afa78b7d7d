"""The OpenAPI 3.1 document of the coordinator's HTTP API (served at ``/v1/openapi.json``)."""

from __future__ import annotations

import functools
from dataclasses import MISSING, fields
from typing import Any

from fedrt import __version__
from fedrt.coordinator.dp_config import DpConfig, DpMode
from fedrt.coordinator.records import ModelStatus, RoundStatus, TaskStatus
from fedrt.coordinator.tasks import ACTIONS, STRATEGIES, TaskSpec

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
        "additionalProperties": False,
    }


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


STR, NUM, INT, BOOL = (
    {"type": "string"},
    {"type": "number"},
    {"type": "integer"},
    {"type": "boolean"},
)
SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
B64 = {"type": "string", "contentEncoding": "base64"}
FREE = {"type": "object"}


def _task_spec_schema() -> Schema:
    props: dict[str, Schema] = {}
    for f in fields(TaskSpec):
        if f.name == "dp":
            props["dp"] = {**_ref("DpConfig"), "default": DpConfig().to_mapping()}
            continue
        kind = {"str": STR, "int": INT, "float": NUM, "bool": BOOL}[str(f.type)]
        entry = {**kind, "default": f.default if f.default is not MISSING else None}
        if f.name == "strategy":
            entry["enum"] = list(STRATEGIES)
        props[f.name] = entry
    return {"type": "object", "properties": props, "additionalProperties": False}


def _dp_schema() -> Schema:
    adaptive = _obj({}, {"quantile": NUM, "lr": NUM, "initial": NUM})
    return _obj(
        {},
        {
            "mode": {"type": "string", "enum": [m.value for m in DpMode], "default": "none"},
            "noise_multiplier": NUM,
            "target_epsilon": NUM,
            "delta": NUM,
            "budget_epsilon": NUM,
            "clip": {"oneOf": [_obj({"fixed": NUM}), _obj({"adaptive": adaptive})]},
            "distributed_noise": {"type": "string", "enum": ["discrete_gaussian", "skellam"]},
        },
    )


def _schemas() -> dict[str, Schema]:
    rnd = _obj(
        {
            "task_id": STR,
            "round_no": INT,
            "stage": STR,
            "status": {"type": "string", "enum": [s.value for s in RoundStatus]},
            "model_sha256": SHA,
            "started_at": NUM,
            "ended_at": _nullable(NUM),
            "deadline": _nullable(NUM),
            "checked_in": INT,
            "selected": INT,
            "reporting": INT,
            "dropped": INT,
            "bytes_in": INT,
            "result_sha256": _nullable(SHA),
            "detail": FREE,
            # Differential privacy: cumulative epsilon at the task's delta, noise std on the
            # aggregate sum; null when the task has no DP.
            "epsilon": _nullable(NUM),
            "noise_stddev": _nullable(NUM),
        }
    )
    stage = _obj({"stage": STR, "at": NUM, "detail": FREE})
    task = _obj(
        {
            "task_id": STR,
            "name": STR,
            "status": {"type": "string", "enum": [s.value for s in TaskStatus]},
            "spec": _ref("TaskSpec"),
            "model_sha256": SHA,
            "created_at": NUM,
            "updated_at": NUM,
            "latest_round": _nullable(_ref("Round")),
        }
    )
    series_point = _obj({"round_no": INT, "value": NUM, "at": NUM})
    series = {"type": "object", "additionalProperties": {"type": "array", "items": series_point}}
    overview_task = {
        **task,
        "properties": {
            **task["properties"],
            "rounds": {"type": "array", "items": _ref("Round")},
            "series": series,
        },
        "required": sorted([*task["required"], "rounds", "series"]),
    }
    return {
        "Error": _obj({"error": _obj({"type": STR, "message": STR})}),
        "Health": _obj(
            {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "mqtt_connected": BOOL,
                "version": STR,
            }
        ),
        "TaskSpec": _task_spec_schema(),
        "DpConfig": _dp_schema(),
        "Round": rnd,
        "RoundDetail": {
            **rnd,
            "properties": {**rnd["properties"], "stages": {"type": "array", "items": stage}},
            "required": sorted([*rnd["required"], "stages"]),
        },
        "Task": task,
        "TaskList": _obj({"tasks": {"type": "array", "items": _ref("Task")}}),
        "TaskCreate": _obj(
            {"name": STR},
            {"task_id": STR, "model_sha256": SHA, "model_dir": STR, "spec": _ref("TaskSpec")},
        ),
        "RoundList": _obj({"rounds": {"type": "array", "items": _ref("Round")}}),
        "Metrics": _obj({"task_id": STR, "series": series}),
        "Device": _obj(
            {
                "device_id": STR,
                "public_key": B64,
                "enrolled_at": NUM,
                "revoked": BOOL,
                "revoked_at": _nullable(NUM),
                "last_seen": _nullable(NUM),
                "labels": {"type": "object", "additionalProperties": STR},
            }
        ),
        "DeviceList": _obj({"devices": {"type": "array", "items": _ref("Device")}}),
        "Model": _obj(
            {
                "sha256": SHA,
                "task_id": _nullable(STR),
                "parent_sha256": _nullable(SHA),
                "round_no": _nullable(INT),
                "status": {"type": "string", "enum": [s.value for s in ModelStatus]},
                "size": INT,
                "manifest": FREE,
                "signature": B64,
                "created_at": NUM,
                "metrics": FREE,
            }
        ),
        "ModelList": _obj({"models": {"type": "array", "items": _ref("Model")}}),
        "ModelUpload": _obj(
            {
                "manifest": {"type": "string", "contentMediaType": "application/json"},
                "model": {"type": "string", "contentMediaType": "application/octet-stream"},
            }
        ),
        "EnrollRequest": _obj(
            {"token": STR, "public_key": B64, "proof": B64},
            {"labels": {"type": "object", "additionalProperties": STR}},
        ),
        "EnrollResponse": _obj(
            {
                "device_id": STR,
                "mqtt_username": STR,
                "mqtt_password": STR,
                "coordinator_public_key": B64,
                "mqtt": _obj({"host": STR, "port": INT, "tls": BOOL}),
            },
            {
                # The coordinator's public URL: model links in plans start with it.
                "coordinator_url": {"type": "string", "format": "uri"},
                # PEM of the CA that signs the coordinator's HTTPS certificate.
                "ca_pem": {"type": "string", "contentMediaType": "application/x-pem-file"},
            },
        ),
        "TokenRequest": _obj({}, {"ttl_s": NUM, "note": STR}),
        "TokenResponse": _obj({"token": STR, "expires_at": NUM}),
        "RollbackRequest": _obj({}, {"to": SHA}),
        "PromoteRequest": _obj({"sha256": SHA}),
        "AuditList": _obj(
            {
                "entries": {
                    "type": "array",
                    "items": _obj(
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
        "Info": _obj({"version": STR, "coordinator_public_key": B64, "config": FREE}),
        "Overview": _obj(
            {
                "now": NUM,
                "tasks": {"type": "array", "items": overview_task},
                "devices": {"type": "array", "items": _ref("Device")},
            }
        ),
    }


def _json_body(name: str, description: str = "") -> Schema:
    return {
        "description": description or name,
        "content": {"application/json": {"schema": _ref(name)}},
    }


_ERR = {"description": "error", "content": {"application/json": {"schema": _ref("Error")}}}


def _op(
    summary: str,
    ok: dict[str, Schema],
    *,
    auth: str | None = "admin",
    body: str | None = None,
    errors: tuple[int, ...] = (),
    params: tuple[str, ...] = (),
    query: tuple[tuple[str, Schema], ...] = (),
) -> Schema:
    codes = set(errors) | ({401} if auth else set())
    if body:
        codes.add(400)
    op: Schema = {"summary": summary, "responses": {**ok, **{str(c): _ERR for c in sorted(codes)}}}
    if auth == "admin":
        op["security"] = [{"admin": []}]
    elif auth == "device":
        op["security"] = [{"admin": []}, {"device": []}]
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data" if body == "ModelUpload" else "application/json": {
                    "schema": _ref(body)
                }
            },
        }
    parameters = [
        {
            "name": p,
            "in": "path",
            "required": True,
            "schema": SHA if p == "sha256" else (INT if p == "round_no" else STR),
        }
        for p in params
    ]
    parameters += [{"name": n, "in": "query", "required": False, "schema": s} for n, s in query]
    if parameters:
        op["parameters"] = parameters
    return op


def _paths() -> dict[str, Schema]:
    def ok(name: str, code: str = "200") -> dict[str, Schema]:
        return {code: _json_body(name)}

    task_ops = {
        f"/v1/tasks/{{task_id}}/{action}": {
            "post": _op(f"{action} a task", ok("Task"), errors=(404, 409), params=("task_id",))
        }
        for action in sorted(ACTIONS)
    }
    binary = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {
        "/healthz": {"get": _op("liveness and MQTT link state", ok("Health"), auth=None)},
        "/metrics": {
            "get": _op(
                "Prometheus text metrics",
                {
                    "200": {
                        "description": "text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
                auth=None,
            )
        },
        "/v1/openapi.json": {
            "get": _op(
                "this document",
                {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": FREE}},
                    }
                },
                auth=None,
            )
        },
        "/": {
            "get": _op(
                "the dashboard",
                {"200": {"description": "HTML page", "content": {"text/html": {"schema": STR}}}},
                auth=None,
            )
        },
        "/static/{name}": {
            "get": _op(
                "dashboard assets",
                {
                    "200": {
                        "description": "asset",
                        "content": {
                            "application/javascript": {"schema": STR},
                            "text/css": {"schema": STR},
                        },
                    }
                },
                auth=None,
                errors=(404,),
                params=("name",),
            )
        },
        "/v1/info": {"get": _op("version, public key, effective config", ok("Info"))},
        "/v1/overview": {"get": _op("everything the dashboard shows", ok("Overview"))},
        "/v1/enroll": {
            "post": _op(
                "enroll a device with a one-time token",
                ok("EnrollResponse", "201"),
                auth=None,
                body="EnrollRequest",
                errors=(401, 429, 503),
            )
        },
        "/v1/enrollment-tokens": {
            "post": _op(
                "create a one-time enrollment token",
                ok("TokenResponse", "201"),
                body="TokenRequest",
            )
        },
        "/v1/devices": {"get": _op("list devices", ok("DeviceList"))},
        "/v1/devices/{device_id}/revoke": {
            "post": _op(
                "revoke a device (effective for the next round)",
                ok("Device"),
                errors=(404, 409, 503),
                params=("device_id",),
            )
        },
        "/v1/models": {
            "get": _op("list model versions", ok("ModelList"), query=(("task_id", STR),)),
            "post": _op(
                "upload an exported model (manifest part first)",
                {**ok("Model", "201"), **ok("Model")},
                body="ModelUpload",
                errors=(409,),
            ),
        },
        "/v1/models/{sha256}": {
            "get": _op(
                "download a model artifact (ETag = sha256; Range, If-Range, If-None-Match)",
                {
                    "200": {"description": "the artifact", "content": binary},
                    "206": {"description": "the requested byte range", "content": binary},
                    "304": {"description": "not modified"},
                    "416": {"description": "range not satisfiable"},
                },
                auth="device",
                # 500: the stored file no longer hashes to its name (CorruptArtifactError).
                errors=(400, 404, 429, 500),
                params=("sha256",),
            )
        },
        "/v1/models/{sha256}/meta": {
            "get": _op(
                "a version's manifest, lineage, status and signature",
                ok("Model"),
                auth="device",
                errors=(400, 404, 429),
                params=("sha256",),
            )
        },
        "/v1/tasks": {
            "get": _op("list tasks", ok("TaskList")),
            "post": _op("create a task", ok("Task", "201"), body="TaskCreate", errors=(404, 409)),
        },
        "/v1/tasks/{task_id}": {
            "get": _op("one task", ok("Task"), errors=(404,), params=("task_id",))
        },
        **task_ops,
        "/v1/tasks/{task_id}/rollback": {
            "post": _op(
                "roll the task back to an ancestor version (default: the parent)",
                ok("Task"),
                body="RollbackRequest",
                errors=(404, 409),
                params=("task_id",),
            )
        },
        "/v1/tasks/{task_id}/promote": {
            "post": _op(
                "make a version the task's current model",
                ok("Task"),
                body="PromoteRequest",
                errors=(404, 409),
                params=("task_id",),
            )
        },
        "/v1/tasks/{task_id}/rounds": {
            "get": _op("rounds of a task", ok("RoundList"), errors=(404,), params=("task_id",))
        },
        "/v1/tasks/{task_id}/rounds/{round_no}": {
            "get": _op(
                "one round with its stage transitions",
                ok("RoundDetail"),
                errors=(400, 404),
                params=("task_id", "round_no"),
            )
        },
        "/v1/tasks/{task_id}/metrics": {
            "get": _op("metric series per round", ok("Metrics"), errors=(404,), params=("task_id",))
        },
        "/v1/audit": {
            "get": _op(
                "the append-only audit log",
                ok("AuditList"),
                errors=(400,),
                query=(("after", INT), ("limit", INT)),
            )
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fedrt coordinator",
            "version": __version__,
            "description": "Tasks, rounds, model versions, devices and enrollment. Errors are "
            "JSON {error: {type, message}}; 429 responses carry Retry-After.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "admin token"},
                "device": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "the device's MQTT username and password",
                },
            },
        },
    }


__all__ = ["openapi_document"]
