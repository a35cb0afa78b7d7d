"""Model routes: downloads for devices (Basic) and the operator, the list, uploads."""

from __future__ import annotations

from aiohttp import web

from fedrt.coordinator.api.auth import ADMIN, require_device_or_admin
from fedrt.coordinator.api.common import admin, ctx_of, json_reply
from fedrt.coordinator.api.context import ApiContext
from fedrt.coordinator.api.model_transfer import read_upload, serve_blob
from fedrt.coordinator.api.views import model_view
from fedrt.coordinator.models.blobs import check_sha256


def _meter_device(ctx: ApiContext, who: str) -> None:
    # Per-device allowance; the operator is not a device and is not metered.
    if who != ADMIN:
        ctx.device_limiter.acquire("http:" + who)


async def get_model(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    _meter_device(ctx, require_device_or_admin(request, ctx.admin_token, ctx.store))
    sha = check_sha256(request.match_info["sha256"])
    ctx.store.get_model(sha)  # only registered versions are served
    return await serve_blob(request, ctx.blobs, sha)


async def get_model_meta(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _meter_device(ctx, require_device_or_admin(request, ctx.admin_token, ctx.store))
    return json_reply(model_view(ctx.store.get_model(check_sha256(request.match_info["sha256"]))))


async def list_models(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    task_id = request.query.get("task_id")
    return json_reply({"models": [model_view(m) for m in ctx.store.list_models(task_id)]})


async def upload_model(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    actor = admin(request)
    record, created = await read_upload(
        request, ctx.catalog, actor=actor, max_bytes=ctx.max_upload_bytes
    )
    return json_reply(model_view(record), status=201 if created else 200)


__all__ = ["get_model", "get_model_meta", "list_models", "upload_model"]
