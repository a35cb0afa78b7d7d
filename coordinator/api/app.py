"""The REST API (``/v1``), health, metrics and dashboard routes: thin aiohttp handlers."""

from __future__ import annotations

import base64
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fedrt import __version__
from fedrt.coordinator.config import describe
from fedrt.coordinator.dashboard import add_dashboard_routes
from fedrt.coordinator.errors import (
    ConfigError,
    CoordinatorError,
    RateLimitedError,
    status_for,
)
from fedrt.coordinator.http_auth import ADMIN, require_device_or_admin, require_metrics_reader
from fedrt.coordinator.http_bodies import EnrollRequest, TokenRequest
from fedrt.coordinator.http_common import (
    AUDIT_PAGE_MAX,
    IP_LIMITER,
    SERVICE,
    Handler,
    admin,
    int_param,
    json_body,
    json_reply,
    svc_of,
)
from fedrt.coordinator.http_models import read_upload, serve_blob
from fedrt.coordinator.http_tasks import (
    create_task,
    get_round,
    get_task,
    list_rounds,
    list_tasks,
    promote,
    rollback,
    task_action,
    task_metrics,
    task_with_round,
)
from fedrt.coordinator.models.blobs import check_sha256
from fedrt.coordinator.openapi import openapi_document
from fedrt.coordinator.ratelimit import RateLimiter
from fedrt.coordinator.tasks.manager import ACTIONS
from fedrt.coordinator.views import (
    audit_view,
    b64,
    device_view,
    metrics_view,
    model_view,
    round_view,
)

if TYPE_CHECKING:
    from fedrt.coordinator.service import CoordinatorService

log = logging.getLogger(__name__)


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
        if status < 400:
            raise
        # aiohttp's own refusals (no such route or file, wrong method, unsatisfiable range)
        # in the documented error shape, keeping their headers (Allow, Content-Range).
        headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
        body = {"error": {"type": type(exc).__name__, "message": exc.reason}}
        return web.json_response(body, status=status, headers=headers)
    finally:
        svc_of(request).m_http.labels(route=_route_name(request), status=str(status)).inc()


# ------------------------------------------------------------------ public
async def healthz(request: web.Request) -> web.Response:
    svc = svc_of(request)
    mqtt = svc.link is not None and svc.link.connected
    return json_reply({"status": "ok" if mqtt else "degraded", "mqtt_connected": mqtt,
                  "version": __version__})  # fmt: skip


async def metrics(request: web.Request) -> web.Response:
    svc = svc_of(request)
    require_metrics_reader(request, svc.config.metrics.token, svc.admin_token)
    # Several Accept headers fold into one list, as prometheus_client's own handlers do.
    body, content_type = svc.metrics.exposition(",".join(request.headers.getall("Accept", [])))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def openapi(request: web.Request) -> web.Response:
    return json_reply(openapi_document())


async def enroll(request: web.Request) -> web.Response:
    svc = svc_of(request)
    request.app[IP_LIMITER].acquire("enroll:" + (request.remote or "?"))
    body = await json_body(request, EnrollRequest)
    # The schema's patterns admit only padded base64 of the right length.
    public_key, proof = base64.b64decode(body.public_key), base64.b64decode(body.proof)
    grant = svc.enrollment.enroll(body.token, public_key, proof, labels=body.labels)
    b = svc.config.broker
    host, port = (svc.embedded.host, svc.embedded.port) if svc.embedded else (b.host, b.port)
    reply: dict[str, Any] = {
        "device_id": grant.device_id,
        "mqtt_username": grant.mqtt_username,
        "mqtt_password": grant.mqtt_password,
        "coordinator_public_key": b64(grant.coordinator_public_key),
        "mqtt": {"host": host, "port": port, "tls": b.tls},
    }
    # Where to fetch models from, and the CA to verify that server with from now on.
    if grant.coordinator_url is not None:
        reply["coordinator_url"] = grant.coordinator_url
    if grant.ca_pem is not None:
        reply["ca_pem"] = grant.ca_pem
    return json_reply(reply, status=201)


# ------------------------------------------------------------------ models
def _meter_device(svc: CoordinatorService, who: str) -> None:
    # Per-device allowance; the operator is not a device and is not metered.
    if who != ADMIN:
        svc.device_limiter.acquire("http:" + who)


async def get_model(request: web.Request) -> web.StreamResponse:
    svc = svc_of(request)
    _meter_device(svc, require_device_or_admin(request, svc.admin_token, svc.store))
    sha = check_sha256(request.match_info["sha256"])
    svc.store.get_model(sha)  # only registered versions are served
    return await serve_blob(request, svc.blobs, sha)


async def get_model_meta(request: web.Request) -> web.Response:
    svc = svc_of(request)
    _meter_device(svc, require_device_or_admin(request, svc.admin_token, svc.store))
    return json_reply(model_view(svc.store.get_model(check_sha256(request.match_info["sha256"]))))


async def list_models(request: web.Request) -> web.Response:
    svc = svc_of(request)
    admin(request)
    task_id = request.query.get("task_id")
    return json_reply({"models": [model_view(m) for m in svc.store.list_models(task_id)]})


async def upload_model(request: web.Request) -> web.Response:
    svc = svc_of(request)
    actor = admin(request)
    record, created = await read_upload(
        request, svc.catalog, actor=actor, max_bytes=svc.config.http.max_upload_bytes
    )
    return json_reply(model_view(record), status=201 if created else 200)


# ------------------------------------------------------------------ devices, tokens, audit
async def create_enrollment_token(request: web.Request) -> web.Response:
    svc = svc_of(request)
    actor = admin(request)
    body = await json_body(request, TokenRequest)
    token = svc.enrollment.create_token(actor=actor, ttl_s=body.ttl_s, note=body.note)
    return json_reply({"token": token, "expires_at": svc.clock() + body.ttl_s}, status=201)


async def list_devices(request: web.Request) -> web.Response:
    svc = svc_of(request)
    admin(request)
    return json_reply({"devices": [device_view(d) for d in svc.store.list_devices()]})


async def revoke_device(request: web.Request) -> web.Response:
    svc = svc_of(request)
    actor = admin(request)
    return json_reply(
        device_view(svc.enrollment.revoke(request.match_info["device_id"], actor=actor))
    )


async def audit(request: web.Request) -> web.Response:
    svc = svc_of(request)
    admin(request)
    after = int_param(request.query.get("after", "0"), "after", lo=0)
    limit = min(int_param(request.query.get("limit", "100"), "limit", lo=1), AUDIT_PAGE_MAX)
    entries = svc.store.list_audit(after_seq=after, limit=limit)
    return json_reply({"entries": [audit_view(e) for e in entries]})


async def info(request: web.Request) -> web.Response:
    svc = svc_of(request)
    admin(request)
    return json_reply(
        {
            "version": __version__,
            "coordinator_public_key": b64(svc.signer.public_key_bytes()),
            "config": describe(svc.config),
        }
    )


async def overview(request: web.Request) -> web.Response:
    """Everything the dashboard draws, in one request."""
    svc = svc_of(request)
    admin(request)
    tasks = []
    for t in svc.store.list_tasks():
        view = task_with_round(svc, t.task_id)
        view["rounds"] = [round_view(r) for r in svc.store.list_rounds(t.task_id)[-200:]]
        view["series"] = metrics_view(svc.store.list_metrics(t.task_id))
        tasks.append(view)
    devices = [device_view(d) for d in svc.store.list_devices()]
    return json_reply({"now": svc.clock(), "tasks": tasks, "devices": devices})


# ------------------------------------------------------------------ assembly
def build_app(service: CoordinatorService) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware], client_max_size=service.config.http.max_upload_bytes
    )
    app[SERVICE] = service
    # Unauthenticated enrollment is the one route open to the world: meter it per address.
    limits = service.config.limits
    app[IP_LIMITER] = RateLimiter(
        rate=limits.enroll_rate_per_s, burst=limits.enroll_burst, clock=time.monotonic
    )
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
        r.add_post(f"/v1/tasks/{{task_id}}/{action}", task_action(action))
    r.add_post("/v1/tasks/{task_id}/rollback", rollback)
    r.add_post("/v1/tasks/{task_id}/promote", promote)
    r.add_get("/v1/tasks/{task_id}/rounds", list_rounds)
    r.add_get("/v1/tasks/{task_id}/rounds/{round_no}", get_round)
    r.add_get("/v1/tasks/{task_id}/metrics", task_metrics)
    r.add_get("/v1/audit", audit)
    add_dashboard_routes(app)
    return app


ACCESS_LOG = logging.getLogger("fedrt.coordinator.access")
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i"'
MAX_REQUEST_LINE = 64 * 1024


async def start_http(service: CoordinatorService) -> tuple[web.AppRunner, int]:
    """Start the API on the configured address; returns the runner and the bound port."""
    # One line per request on "fedrt.coordinator.access": client, request line, status, size,
    # time. No headers beyond the user agent, so no token or Basic credential is ever logged.
    # aiohttp's HTTP parser refuses a request line or header over 8 KiB with a text/plain 400
    # that no middleware sees, outside the OpenAPI document. No valid request comes near
    # either limit (ids are <= 64 characters, queries a few integers), so raise them to
    # 64 KiB: the JSON errors of the handlers answer anything a parser would have cut.
    runner = web.AppRunner(
        build_app(service),
        access_log=ACCESS_LOG,
        access_log_format=ACCESS_LOG_FORMAT,
        max_line_size=MAX_REQUEST_LINE,
        max_field_size=MAX_REQUEST_LINE,
    )
    await runner.setup()
    http = service.config.http
    tls = service.https.context if service.https is not None else None
    site = web.TCPSite(runner, http.host, http.port, ssl_context=tls)
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
