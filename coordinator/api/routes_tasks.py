"""Task, round, metric and model-lifecycle routes of the REST API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from fedrt.coordinator.api.bodies import PromoteRequest, RollbackRequest, TaskCreate
from fedrt.coordinator.api.common import Handler, admin, ctx_of, int_param, json_body, json_reply
from fedrt.coordinator.api.context import ApiContext
from fedrt.coordinator.api.views import metrics_view, round_view, stage_view, task_view

# Nine digits: more rounds than any task runs (TaskSpec.max_rounds is 1e6).
ROUND_NO_MAX = 999_999_999


async def create_task(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    actor = admin(request)
    body = await json_body(request, TaskCreate)
    sha = body.model_sha256
    if sha is None:
        assert body.model_dir is not None  # TaskCreate: exactly one of the two
        sha = ctx.catalog.add_export_dir(
            Path(body.model_dir), actor=actor, max_bytes=ctx.max_upload_bytes
        ).sha256
    task = ctx.tasks.create(name=body.name, model_sha256=sha, spec=body.spec,
                            actor=actor, task_id=body.task_id)  # fmt: skip
    return json_reply(task_view(task), status=201)


async def list_tasks(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    return json_reply({"tasks": [task_with_round(ctx, t.task_id) for t in ctx.store.list_tasks()]})


def task_with_round(ctx: ApiContext, task_id: str) -> dict[str, Any]:
    task = ctx.store.get_task(task_id)
    rounds = ctx.store.list_rounds(task_id)
    return task_view(task, rounds[-1] if rounds else None)


async def get_task(request: web.Request) -> web.Response:
    admin(request)
    return json_reply(task_with_round(ctx_of(request), request.match_info["task_id"]))


def task_action(action: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = ctx_of(request)
        actor = admin(request)
        task = ctx.tasks.act(request.match_info["task_id"], action, actor=actor)
        return json_reply(task_view(task))

    return handler


async def rollback(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    actor = admin(request)
    body = await json_body(request, RollbackRequest)
    task = ctx.catalog.rollback(request.match_info["task_id"], to=body.to, actor=actor)
    return json_reply(task_view(task))


async def promote(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    actor = admin(request)
    body = await json_body(request, PromoteRequest)
    task = ctx.catalog.promote(body.sha256, task_id=request.match_info["task_id"], actor=actor)
    return json_reply(task_view(task))


async def list_rounds(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    task_id = request.match_info["task_id"]
    ctx.store.get_task(task_id)
    return json_reply({"rounds": [round_view(r) for r in ctx.store.list_rounds(task_id)]})


async def get_round(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    task_id = request.match_info["task_id"]
    round_no = int_param(request.match_info["round_no"], "round_no", lo=0, hi=ROUND_NO_MAX)
    rnd = ctx.store.get_round(task_id, round_no)
    stages = ctx.store.list_stages(task_id, rnd.round_no)
    return json_reply({**round_view(rnd), "stages": [stage_view(s) for s in stages]})


async def task_metrics(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    task_id = request.match_info["task_id"]
    ctx.store.get_task(task_id)
    return json_reply({"task_id": task_id, "series": metrics_view(ctx.store.list_metrics(task_id))})


__all__ = [
    "ROUND_NO_MAX", "create_task", "get_round", "get_task", "list_rounds", "list_tasks",
    "promote", "rollback", "task_action", "task_metrics", "task_with_round",
]  # fmt: skip
