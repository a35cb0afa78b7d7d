"""Routes about the coordinator itself: health, metrics, the OpenAPI document, info and the
dashboard's overview."""

from __future__ import annotations

from aiohttp import web

from fedrt import __version__
from fedrt.coordinator.api.auth import require_metrics_reader
from fedrt.coordinator.api.common import admin, ctx_of, json_reply, on_network_loop
from fedrt.coordinator.api.openapi import openapi_document
from fedrt.coordinator.api.routes_tasks import task_with_round
from fedrt.coordinator.api.views import b64, device_view, metrics_view, round_view


@on_network_loop  # it says whether this process's network side is alive
async def healthz(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    mqtt = ctx.mqtt_connected()
    return json_reply({"status": "ok" if mqtt else "degraded", "mqtt_connected": mqtt,
                  "version": __version__})  # fmt: skip


async def metrics(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    require_metrics_reader(request, ctx.metrics_token, ctx.admin_token)
    # Several Accept headers fold into one list, as prometheus_client's own handlers do.
    body, content_type = ctx.exposition(",".join(request.headers.getall("Accept", [])))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def openapi(request: web.Request) -> web.Response:
    return json_reply(openapi_document())


async def info(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    return json_reply(
        {
            "version": __version__,
            "coordinator_public_key": b64(ctx.coordinator_public_key),
            "config": ctx.config_view(),
        }
    )


async def overview(request: web.Request) -> web.Response:
    """Everything the dashboard draws, in one request."""
    ctx = ctx_of(request)
    admin(request)
    tasks = []
    for t in ctx.store.list_tasks():
        view = task_with_round(ctx, t.task_id)
        view["rounds"] = [round_view(r) for r in ctx.store.list_rounds(t.task_id)[-200:]]
        view["series"] = metrics_view(ctx.store.list_metrics(t.task_id))
        tasks.append(view)
    devices = [device_view(d) for d in ctx.store.list_devices()]
    return json_reply({"now": ctx.clock(), "tasks": tasks, "devices": devices})


__all__ = ["healthz", "info", "metrics", "openapi", "overview"]
