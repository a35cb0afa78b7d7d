"""The OpenAPI 3.1 document of the coordinator's HTTP API (served at ``/v1/openapi.json``):
its paths, written by hand; the components are in ``openapi_components``."""

from __future__ import annotations

import functools
from typing import Any

from fedrt import __version__
from fedrt.coordinator.api.common import AUDIT_PAGE_MAX, INT64_MAX
from fedrt.coordinator.api.openapi_components import response_schemas
from fedrt.coordinator.api.openapi_requests import (
    DASHBOARD_ASSETS,
    FREE,
    INT,
    ROUND_NO,
    SHA,
    STR,
    Schema,
    ref,
)
from fedrt.coordinator.tasks.manager import ACTIONS


def _json_body(name: str, description: str = "") -> Schema:
    return {
        "description": description or name,
        "content": {"application/json": {"schema": ref(name)}},
    }


_ERR = {"description": "error", "content": {"application/json": {"schema": ref("Error")}}}
_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _blob_download(summary: str) -> Schema:
    """A device's download of a content-addressed blob (a version's file or one of its forms)."""
    return _op(
        summary,
        {
            "200": {"description": "the artifact", "content": _BINARY},
            "206": {"description": "the requested byte range", "content": _BINARY},
            "304": {"description": "not modified"},
            "416": {**_ERR, "description": "range not satisfiable (Content-Range: */size)"},
        },
        auth="device",
        # 500: the stored file no longer hashes to its name (CorruptArtifactError).
        errors=(400, 404, 429, 500),
        params=("sha256",),
    )


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
        op["security"] = [{"device": []}, {"admin": []}]
    elif auth == "metrics":
        # Open unless [metrics] token is configured; the admin token always works.
        op["security"] = [{}, {"metrics": []}, {"admin": []}]
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data" if body == "ModelUpload" else "application/json": {
                    "schema": ref(body)
                }
            },
        }
    path_schemas = {"sha256": SHA, "round_no": ROUND_NO, "name": DASHBOARD_ASSETS}
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": path_schemas.get(p, STR)}
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
    return {
        "/healthz": {"get": _op("liveness and MQTT link state", ok("Health"), auth=None)},
        "/metrics": {
            "get": _op(
                "Prometheus metrics (bearer token only when [metrics] token is set)",
                {
                    "200": {
                        "description": "Prometheus text format (text/plain; version=0.0.4, "
                        "or 1.0.0 when Accept asks for it); OpenMetrics 1.0.0 when Accept "
                        "asks for application/openmetrics-text",
                        "content": {
                            "text/plain": {"schema": STR},
                            "application/openmetrics-text": {"schema": STR},
                        },
                    }
                },
                auth="metrics",
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
            "get": _blob_download(
                "download a model artifact (ETag = sha256; Range, If-Range, If-None-Match)"
            )
        },
        **{
            f"/v1/models/{{sha256}}/{form}": {
                "get": _blob_download(
                    f"download a version's {form} ({what}); ETag = the blob's sha256; Range, "
                    "If-Range, If-None-Match; 404 for a version served as a whole file only"
                )
            }
            for form, what in (
                ("graph", "the model file without its weights, shared by an architecture"),
                ("weights", "flat float32 little-endian, manifest order"),
                ("delta", "the quantized change from its parent, protocol.weights_delta"),
            )
        },
        "/v1/models/{sha256}/control_variate": {
            "get": _blob_download(
                "download SCAFFOLD's server control variate c of a version (float32 "
                "little-endian, manifest order; the plan names its sha256); ETag = the "
                "blob's sha256; Range, If-Range, If-None-Match; 404 for a version without"
            )
        },
        "/v1/models/{sha256}/meta": {
            "get": _op(
                "a version's manifest, lineage, status and signature; with ``delivery``, "
                "the forms that rebuild it (graph, weights, deltas from its ancestors)",
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
        "/v1/tasks/{task_id}/async": {
            "get": _op(
                "an async (FedBuff) task's commits over time, staleness and buffer fill "
                "(409: a sync task)",
                ok("AsyncTask"),
                errors=(404, 409),
                params=("task_id",),
            )
        },
        "/v1/audit": {
            "get": _op(
                "the append-only audit log",
                ok("AuditList"),
                errors=(400,),
                query=(
                    ("after", {**INT, "minimum": 0, "maximum": INT64_MAX, "default": 0}),
                    # More than a page is served as a page.
                    (
                        "limit",
                        {
                            **INT,
                            "minimum": 1,
                            "maximum": INT64_MAX,
                            "default": 100,
                            "description": f"at most {AUDIT_PAGE_MAX} are returned",
                        },
                    ),
                ),
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
            "schemas": response_schemas(),
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "admin token"},
                "device": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "the device's MQTT username and password",
                },
                "metrics": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the [metrics] token (FEDRT_METRICS_TOKEN) for scrapers",
                },
            },
        },
    }


__all__ = ["openapi_document"]
