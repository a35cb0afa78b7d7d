"""The HTTP application: its routes (``routes_*``, thin aiohttp handlers), the error
middleware, and starting and stopping the server."""

from __future__ import annotations

import logging
import ssl
import time

from aiohttp import web

from fedrt.coordinator.api.async_view import task_async
from fedrt.coordinator.api.common import (
    BODY_KEY,
    CONTEXT,
    IP_LIMITER,
    NETWORK_LOOP,
    Handler,
    ctx_of,
    read_json_bytes,
)
from fedrt.coordinator.api.context import ApiContext
from fedrt.coordinator.api.dashboard import add_dashboard_routes
from fedrt.coordinator.api.enroll_batch import ENROLL_BATCHER, EnrollBatcher
from fedrt.coordinator.api.ratelimit import RateLimiter
from fedrt.coordinator.api.routes_devices import (
    audit,
    create_enrollment_token,
    enroll,
    list_devices,
    revoke_device,
)
from fedrt.coordinator.api.routes_models import (
    get_control_variate,
    get_model,
    get_model_form,
    get_model_meta,
    list_models,
    upload_model,
)
from fedrt.coordinator.api.routes_system import healthz, info, metrics, openapi, overview
from fedrt.coordinator.api.routes_tasks import (
    create_task,
    get_round,
    get_task,
    list_rounds,
    list_tasks,
    promote,
    rollback,
    task_action,
    task_metrics,
)
from fedrt.coordinator.errors import (
    ConfigError,
    CoordinatorError,
    RateLimitedError,
    status_for,
)
from fedrt.coordinator.models.delivery import DELTA, GRAPH, WEIGHTS
from fedrt.coordinator.strategies.scaffold import CONTROL_VARIATE
from fedrt.coordinator.tasks.manager import ACTIONS

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
        ctx_of(request).http_requests.labels(route=_route_name(request), status=str(status)).inc()


@web.middleware
async def state_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the handler on the state thread (``state_thread``), its body read here first,
    unless it streams (``on_network_loop``): a slow store never holds the network loop."""
    state = ctx_of(request).state
    if state is None or getattr(request.match_info.handler, NETWORK_LOOP, False):
        return await handler(request)
    if request.body_exists:
        request[BODY_KEY] = await read_json_bytes(request)
    return await state.run(handler(request))


def build_app(ctx: ApiContext) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, state_middleware], client_max_size=ctx.max_upload_bytes
    )
    app[CONTEXT] = ctx
    # Unauthenticated enrollment is the one route open to the world: meter it per address.
    app[IP_LIMITER] = RateLimiter(
        rate=ctx.enroll_rate_per_s, burst=ctx.enroll_burst, clock=time.monotonic
    )
    app[ENROLL_BATCHER] = EnrollBatcher(
        ctx.enrollment.enroll_many, settle=ctx.enrollment.sync_broker
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
    r.add_get(f"/v1/models/{{sha256}}/{CONTROL_VARIATE}", get_control_variate)  # SCAFFOLD's c
    for form in (GRAPH, WEIGHTS, DELTA):
        r.add_get(f"/v1/models/{{sha256}}/{form}", get_model_form(form))
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
    r.add_get("/v1/tasks/{task_id}/async", task_async)  # FedBuff figures (async_view)
    r.add_get("/v1/audit", audit)
    add_dashboard_routes(app)
    return app


ACCESS_LOG = logging.getLogger("fedrt.coordinator.access")
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i"'
MAX_REQUEST_LINE = 64 * 1024


async def start_http(
    ctx: ApiContext, *, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[web.AppRunner, int]:
    """Start the API on ``host:port`` (TLS with ``ssl_context``); returns the runner and the
    bound port."""
    # One line per request on "fedrt.coordinator.access": client, request line, status, size,
    # time. No headers beyond the user agent, so no token or Basic credential is ever logged.
    # aiohttp's HTTP parser refuses a request line or header over 8 KiB with a text/plain 400
    # that no middleware sees, outside the OpenAPI document. No valid request comes near
    # either limit (ids are <= 64 characters, queries a few integers), so raise them to
    # 64 KiB: the JSON errors of the handlers answer anything a parser would have cut.
    runner = web.AppRunner(
        build_app(ctx),
        access_log=ACCESS_LOG,
        access_log_format=ACCESS_LOG_FORMAT,
        max_line_size=MAX_REQUEST_LINE,
        max_field_size=MAX_REQUEST_LINE,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    # With port 0 the OS picks one; the runner knows which.
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return runner, bound


async def stop_http(runner: object) -> None:
    assert isinstance(runner, web.AppRunner)
    await runner.cleanup()


__all__ = ["build_app", "start_http", "stop_http"]
