"""The REST API (``/v1``), health, metrics and dashboard routes: thin aiohttp handlers."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fedrt import __version__
from fedrt.coordinator.artifacts import check_sha256
from fedrt.coordinator.config import describe
from fedrt.coordinator.dashboard import add_dashboard_routes
from fedrt.coordinator.errors import (
    BadRequestError,
    ConfigError,
    CoordinatorError,
    RateLimitedError,
    status_for,
)
from fedrt.coordinator.http_auth import ADMIN, require_admin, require_device_or_admin
from fedrt.coordinator.http_models import read_upload, serve_blob
from fedrt.coordinator.openapi import openapi_document
from fedrt.coordinator.ratelimit import RateLimiter
from fedrt.coordinator.tasks import ACTIONS, TaskSpec
from fedrt.coordinator.views import (
    audit_view,
    b64,
    device_view,
    metrics_view,
    model_view,
    round_view,
    stage_view,
    task_view,
)

if TYPE_CHECKING:
    from fedrt.coordinator.service import CoordinatorService

log = logging.getLogger(__name__)

SERVICE: web.AppKey[CoordinatorService] = web.AppKey("service")
IP_LIMITER: web.AppKey[RateLimiter] = web.AppKey("ip_limiter")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# JSON bodies are small (specs, tokens); anything bigger is a mistake or an attack.
_MAX_JSON = 64 * 1024


def _svc(request: web.Request) -> CoordinatorService:
    return request.app[SERVICE]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, allow_nan=False))


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > _MAX_JSON:
        raise BadRequestError(f"JSON body larger than {_MAX_JSON} bytes")
    raw = bytearray()
    # read(n) returns what has arrived, not n bytes: loop until the end of the body.
    while chunk := await request.content.read(16 * 1024):
        raw += chunk
        if len(raw) > _MAX_JSON:
            raise BadRequestError(f"JSON body larger than {_MAX_JSON} bytes")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a few KB of "[[[[..." nest deeper than the parser's stack.
        raise BadRequestError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequestError("body must be a JSON object")
    return data


def _admin(request: web.Request) -> str:
    return require_admin(request, _svc(request).admin_token)


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map typed errors to JSON responses and count every request by route and status."""
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except CoordinatorError as exc:
        status = status_for(exc)
        headers = {}
        if isinstance(exc, RateLimitedError):
            headers["Retry-After"] = str(max(1, round(exc.retry_after + 0.5)))
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="fedrt"'
        log.info("%s %s -> %d %s: %s", request.method, request.path, status,
                 type(exc).__name__, exc)  # fmt: skip
        body = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        return web.json_response(body, status=status, headers=headers)
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        _svc(request).m_http.inc(route=_route_name(request), status=str(status))


# ------------------------------------------------------------------ public
async def healthz(request: web.Request) -> web.Response:
    svc = _svc(request)
    mqtt = svc.link is not None and svc.link.connected
    return _json({"status": "ok" if mqtt else "degraded", "mqtt_connected": mqtt,
                  "version": __version__})  # fmt: skip


async def metrics(request: web.Request) -> web.Response:
    text = _svc(request).metrics.render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})  # fmt: skip


async def openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


async def enroll(request: web.Request) -> web.Response:
    svc = _svc(request)
    request.app[IP_LIMITER].acquire("enroll:" + (request.remote or "?"))
    body = await _body(request)
    token = body.get("token")
    if not isinstance(token, str):
        raise BadRequestError("token must be a string")
    public_key, proof = _b64_field(body, "public_key"), _b64_field(body, "proof")
    labels = body.get("labels", {})
    grant = svc.enrollment.enroll(token, public_key, proof, labels=labels)
    b = svc.config.broker
    host, port = (svc.embedded.host, svc.embedded.port) if svc.embedded else (b.host, b.port)
    return _json(
        {
            "device_id": grant.device_id,
            "mqtt_username": grant.mqtt_username,
            "mqtt_password": grant.mqtt_password,
            "coordinator_public_key": b64(grant.coordinator_public_key),
            "mqtt": {"host": host, "port": port, "tls": b.tls},
        },
        status=201,
    )


def _b64_field(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str) or len(value) > 1024:
        raise BadRequestError(f"{name} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"{name} is not valid base64") from None


# ------------------------------------------------------------------ models
def _meter_device(svc: CoordinatorService, who: str) -> None:
    # Per-device allowance; the operator is not a device and is not metered.
    if who != ADMIN:
        svc.device_limiter.acquire("http:" + who)


async def get_model(request: web.Request) -> web.StreamResponse:
    svc = _svc(request)
    _meter_device(svc, require_device_or_admin(request, svc.admin_token, svc.store))
    sha = check_sha256(request.match_info["sha256"])
    svc.store.get_model(sha)  # only registered versions are served
    return await serve_blob(request, svc.blobs, sha)


async def get_model_meta(request: web.Request) -> web.Response:
    svc = _svc(request)
    _meter_device(svc, require_device_or_admin(request, svc.admin_token, svc.store))
    return _json(model_view(svc.store.get_model(check_sha256(request.match_info["sha256"]))))


async def list_models(request: web.Request) -> web.Response:
    svc = _svc(request)
    _admin(request)
    task_id = request.query.get("task_id")
    return _json({"models": [model_view(m) for m in svc.store.list_models(task_id)]})


async def upload_model(request: web.Request) -> web.Response:
    svc = _svc(request)
    actor = _admin(request)
    record, created = await read_upload(
        request, svc.catalog, actor=actor, max_bytes=svc.config.http.max_upload_bytes
    )
    return _json(model_view(record), status=201 if created else 200)


# ------------------------------------------------------------------ tasks
async def create_task(request: web.Request) -> web.Response:
    svc = _svc(request)
    actor = _admin(request)
    body = await _body(request)
    unknown = sorted(set(body) - {"name", "task_id", "model_sha256", "model_dir", "spec"})
    if unknown:
        raise BadRequestError(f"unknown field(s): {', '.join(unknown)}")
    spec = TaskSpec.from_json(body.get("spec", {}))
    if ("model_sha256" in body) == ("model_dir" in body):
        raise BadRequestError("give exactly one of model_sha256 (uploaded) or model_dir")
    task_id = body.get("task_id")
    if task_id is not None and not isinstance(task_id, str):
        raise BadRequestError("task_id must be a string")
    if "model_dir" in body:
        if not isinstance(body["model_dir"], str):
            raise BadRequestError("model_dir must be a path on the coordinator host")
        sha = svc.catalog.add_export_dir(
            Path(body["model_dir"]), actor=actor, max_bytes=svc.config.http.max_upload_bytes
        ).sha256
    else:
        sha = check_sha256(body["model_sha256"])
    task = svc.tasks.create(name=body.get("name", ""), model_sha256=sha, spec=spec,
                            actor=actor, task_id=task_id)  # fmt: skip
    return _json(task_view(task), status=201)


async def list_tasks(request: web.Request) -> web.Response:
    svc = _svc(request)
    _admin(request)
    return _json({"tasks": [_task_with_round(svc, t.task_id) for t in svc.store.list_tasks()]})


def _task_with_round(svc: CoordinatorService, task_id: str) -> dict[str, Any]:
    task = svc.store.get_task(task_id)
    rounds = svc.store.list_rounds(task_id)
    return task_view(task, rounds[-1] if rounds else None)


async def get_task(request: web.Request) -> web.Response:
    _admin(request)
    return _json(_task_with_round(_svc(request), request.match_info["task_id"]))


def _task_action(action: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        svc = _svc(request)
        actor = _admin(request)
        task = svc.tasks.act(request.match_info["task_id"], action, actor=actor)
        return _json(task_view(task))

    return handler


async def rollback(request: web.Request) -> web.Response:
    svc = _svc(request)
    actor = _admin(request)
    body = await _body(request)
    to = body.get("to")
    if to is not None and not isinstance(to, str):
        raise BadRequestError("to must be a sha256 string")
    task = svc.catalog.rollback(request.match_info["task_id"], to=to, actor=actor)
    return _json(task_view(task))


async def promote(request: web.Request) -> web.Response:
    svc = _svc(request)
    actor = _admin(request)
    body = await _body(request)
    sha = body.get("sha256")
    if not isinstance(sha, str):
        raise BadRequestError("sha256 must be a string")
    task = svc.catalog.promote(sha, task_id=request.match_info["task_id"], actor=actor)
    return _json(task_view(task))


async def list_rounds(request: web.Request) -> web.Response:
    svc = _svc(request)
    _admin(request)
    task_id = request.match_info["task_id"]
    svc.store.get_task(task_id)
    return _json({"rounds": [round_view(r) for r in svc.store.list_rounds(task_id)]})


async def get_round(request: web.Request) -> web.Response:
    svc = _svc(request)
    _admin(request)
    task_id, raw_no = request.match_info["task_id"], request.match_info["round_no"]
    if not raw_no.isdigit() or len(raw_no) > 9:
        raise BadRequestError("round_no must be a non-negative integer")
    rnd = svc.store.get_round(task_id, int(raw_no))
    stages = svc.store.list_stages(task_id, rnd.round_no)
    return _json({**round_view(rnd), "stages": [stage_view(s) for s in stages]})


async def task_metrics(request: web.Request) -> web.Response:
    svc = _svc(request)
    _admin(request)
    task_id = request.match_info["task_id"]
    svc.store.get_task(task_id)
    return _json({"task_id": task_id, "series": metrics_view(svc.store.list_metrics(task_id))})


# ------------------------------------------------------------------ devices, tokens, audit
async def create_enrollment_token(request: web.Request) -> web.Response:
    svc = _svc(request)
    actor = _admin(request)
    body = await _body(request)
    ttl = body.get("ttl_s", 24 * 3600.0)
    note = body.get("note", "")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise BadRequestError("ttl_s must be a number")
    if not isinstance(note, str):
        raise BadRequestError("note must be a string")
    token = svc.enrollment.create_token(actor=actor, ttl_s=float(ttl), note=note)
    return _json({"token": token, "expires_at": svc.clock() + float(ttl)}, status=201)


async def list_devices(request: web.Request) -> web.Response:
    svc = _svc(request)
    _admin(request)
    return _json({"devices": [device_view(d) for d in svc.store.list_devices()]})


async def revoke_device(request: web.Request) -> web.Response:
    svc = _svc(request)
    actor = _admin(request)
    return _json(device_view(svc.enrollment.revoke(request.match_info["device_id"], actor=actor)))


async def audit(request: web.Request) -> web.Response:
    svc = _svc(request)
    _admin(request)
    try:
        after = int(request.query.get("after", "0"))
        limit = min(int(request.query.get("limit", "100")), 1000)
    except ValueError:
        raise BadRequestError("after and limit must be integers") from None
    entries = svc.store.list_audit(after_seq=after, limit=limit)
    return _json({"entries": [audit_view(e) for e in entries]})


async def info(request: web.Request) -> web.Response:
    svc = _svc(request)
    _admin(request)
    return _json(
        {
            "version": __version__,
            "coordinator_public_key": b64(svc.signer.public_key_bytes()),
            "config": describe(svc.config),
        }
    )


async def overview(request: web.Request) -> web.Response:
    """Everything the dashboard draws, in one request."""
    svc = _svc(request)
    _admin(request)
    tasks = []
    for t in svc.store.list_tasks():
        view = _task_with_round(svc, t.task_id)
        view["rounds"] = [round_view(r) for r in svc.store.list_rounds(t.task_id)[-200:]]
        view["series"] = metrics_view(svc.store.list_metrics(t.task_id))
        tasks.append(view)
    devices = [device_view(d) for d in svc.store.list_devices()]
    return _json({"now": svc.clock(), "tasks": tasks, "devices": devices})


# ------------------------------------------------------------------ assembly
def build_app(service: CoordinatorService) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware], client_max_size=service.config.http.max_upload_bytes
    )
    app[SERVICE] = service
    # Unauthenticated enrollment is the one route open to the world: meter it per address.
    app[IP_LIMITER] = RateLimiter(rate=1.0, burst=10, clock=time.monotonic)
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/v1/openapi.json", openapi)
    r.add_get("/v1/info", info)
    r.add_get("/v1/overview", overview)
    r.add_post("/v1/enroll", enroll)
    r.add_post("/v1/enrollment-tokens", create_enrollment_token)
    r.add_get("/v1/devices", list_devices)
    r.add_post("/v1/devices/{device_id}/revoke", revoke_device)
    r.add_get("/v1/models", list_models)
    r.add_post("/v1/models", upload_model)
    r.add_get("/v1/models/{sha256}", get_model)
    r.add_get("/v1/models/{sha256}/meta", get_model_meta)
    r.add_get("/v1/tasks", list_tasks)
    r.add_post("/v1/tasks", create_task)
    r.add_get("/v1/tasks/{task_id}", get_task)
    for action in sorted(ACTIONS):
        r.add_post(f"/v1/tasks/{{task_id}}/{action}", _task_action(action))
    r.add_post("/v1/tasks/{task_id}/rollback", rollback)
    r.add_post("/v1/tasks/{task_id}/promote", promote)
    r.add_get("/v1/tasks/{task_id}/rounds", list_rounds)
    r.add_get("/v1/tasks/{task_id}/rounds/{round_no}", get_round)
    r.add_get("/v1/tasks/{task_id}/metrics", task_metrics)
    r.add_get("/v1/audit", audit)
    add_dashboard_routes(app)
    return app


async def start_http(service: CoordinatorService) -> tuple[web.AppRunner, int]:
    """Start the API on the configured address; returns the runner and the bound port."""
    runner = web.AppRunner(build_app(service), access_log=None)
    await runner.setup()
    http = service.config.http
    site = web.TCPSite(runner, http.host, http.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {http.host}:{http.port}: {exc.strerror}") from None
    # With port 0 the OS picks one; the runner knows which.
    port = int(runner.addresses[0][1]) if runner.addresses else http.port
    return runner, port


async def stop_http(runner: object) -> None:
    assert isinstance(runner, web.AppRunner)
    await runner.cleanup()


__all__ = ["build_app", "start_http", "stop_http"]
