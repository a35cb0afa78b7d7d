"""Model routes: downloads for devices (Basic) and the operator, the list, uploads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from fedrt.coordinator.api.auth import ADMIN, require_device_or_admin
from fedrt.coordinator.api.common import admin, ctx_of, json_reply, on_network_loop
from fedrt.coordinator.api.context import ApiContext
from fedrt.coordinator.api.model_transfer import read_upload, serve_blob
from fedrt.coordinator.api.views import model_view
from fedrt.coordinator.errors import NotFoundError
from fedrt.coordinator.models.blobs import check_sha256
from fedrt.coordinator.models.control_variate import variate_form
from fedrt.coordinator.models.delivery import FILE, META, delivery_view
from fedrt.coordinator.strategies.scaffold import CONTROL_VARIATE

T = TypeVar("T")


def _meter_device(ctx: ApiContext, who: str) -> None:
    # Per-device allowance; the operator is not a device and is not metered.
    if who != ADMIN:
        ctx.device_limiter.acquire("http:" + who)


async def _on_state(ctx: ApiContext, fn: Callable[[], T]) -> T:
    """Run a download's store lookups on the state thread (``state_thread``); the bytes
    stream from the network loop."""
    return fn() if ctx.state is None else await ctx.state.call(fn)


def _servable(
    request: web.Request, ctx: ApiContext, blob: Callable[[str], str] | None = None
) -> str:
    """Authenticate and meter the caller; the blob to send for the version in the path (a
    registered one only), fetched into the local cache if it lives in the store."""
    _meter_device(ctx, require_device_or_admin(request, ctx.admin_token, ctx.store, ctx.passwords))
    sha = check_sha256(request.match_info["sha256"])
    ctx.store.get_model(sha)
    wanted = sha if blob is None else blob(sha)
    ctx.blobs.has(wanted)
    return wanted


@on_network_loop  # streams; its lookups hop to the state thread
async def get_model(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    sha = await _on_state(ctx, lambda: _servable(request, ctx))
    return await serve_blob(request, ctx.blobs, sha, sent=_counter(ctx, sha, FILE))


def _counter(ctx: ApiContext, version: str, kind: str) -> Callable[[int], None]:
    return lambda n: ctx.catalog.transfers.add(version, kind, n)


def get_model_form(kind: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The handler serving one form (graph, weights, delta) of a version built from a graph;
    404 for a version without it (a base export: its file only)."""

    def form_of(ctx: ApiContext, sha: str) -> str:
        delivery = ctx.catalog.delivery.get(sha)
        if delivery is None:
            raise NotFoundError(f"version {sha} is served as a whole file only")
        return delivery.blob(kind)

    @on_network_loop  # streams; its lookups hop to the state thread
    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = ctx_of(request)
        blob = await _on_state(ctx, lambda: _servable(request, ctx, lambda v: form_of(ctx, v)))
        sha = request.match_info["sha256"]  # checked by _servable
        return await serve_blob(request, ctx.blobs, blob, sent=_counter(ctx, sha, kind))

    return handler


@on_network_loop  # streams; its lookups hop to the state thread
async def get_control_variate(request: web.Request) -> web.StreamResponse:
    """SCAFFOLD's server variate c of a version, float32 (404 for a version without)."""

    def state_of(ctx: ApiContext, sha: str) -> str:
        state = ctx.store.get_model(sha).optimizer_state_sha256
        form = None if state is None else variate_form(ctx.blobs, state)
        if form is None:
            raise NotFoundError(f"version {sha} has no control variate")
        return form

    ctx = ctx_of(request)
    blob = await _on_state(ctx, lambda: _servable(request, ctx, lambda v: state_of(ctx, v)))
    return await serve_blob(
        request, ctx.blobs, blob, sent=_counter(ctx, request.match_info["sha256"], CONTROL_VARIATE)
    )


async def get_model_meta(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _meter_device(ctx, require_device_or_admin(request, ctx.admin_token, ctx.store, ctx.passwords))
    sha = check_sha256(request.match_info["sha256"])
    view = model_view(ctx.store.get_model(sha))
    # Forms besides the file, for devices that rebuild versions (old ones ignore it).
    delivery = delivery_view(ctx.catalog.delivery, sha)
    if delivery is not None:
        view["delivery"] = delivery
    reply = json_reply(view)
    if isinstance(reply.body, bytes):  # a device's per-round metadata counts as bytes down
        ctx.catalog.transfers.add(sha, META, len(reply.body))
    return reply


async def list_models(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    task_id = request.query.get("task_id")
    return json_reply({"models": [model_view(m) for m in ctx.store.list_models(task_id)]})


@on_network_loop  # streams the upload in (read_upload)
async def upload_model(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    actor = admin(request)
    on_state = ctx.state.call if ctx.state is not None else None
    record, created = await read_upload(
        request, ctx.catalog, actor=actor, max_bytes=ctx.max_upload_bytes, on_state=on_state
    )
    return json_reply(model_view(record), status=201 if created else 200)


__all__ = [
    "get_control_variate",
    "get_model",
    "get_model_form",
    "get_model_meta",
    "list_models",
    "upload_model",
]
