"""Task, round, metric and model-lifecycle routes of the REST API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fedrt.coordinator.http_bodies import PromoteRequest, RollbackRequest, TaskCreate
from fedrt.coordinator.http_common import (
    Handler,
    admin,
    int_param,
    json_body,
    json_reply,
    svc_of,
)
from fedrt.coordinator.views import metrics_view, round_view, stage_view, task_view

if TYPE_CHECKING:
    from fedrt.coordinator.service import CoordinatorService

# Nine digits: more rounds than any task runs (TaskSpec.max_rounds is 1e6).
ROUND_NO_MAX = 999_999_999


async def create_task(request: web.Request) -> web.Response:
    svc = svc_of(request)
    actor = admin(request)
    body = await json_body(request, TaskCreate)
    sha = body.model_sha256
    if sha is None:
        assert body.model_dir is not None  # TaskCreate: exactly one of the two
        sha = svc.catalog.add_export_dir(
            Path(body.model_dir), actor=actor, max_bytes=svc.config.http.max_upload_bytes
        ).sha256
    task = svc.tasks.create(name=body.name, model_sha256=sha, spec=body.spec,
                            actor=actor, task_id=body.task_id)  # fmt: skip
    return json_reply(task_view(task), status=201)


async def list_tasks(request: web.Request) -> web.Response:
    svc = svc_of(request)
    admin(request)
    return json_reply({"tasks": [task_with_round(svc, t.task_id) for t in svc.store.list_tasks()]})


def task_with_round(svc: CoordinatorService, task_id: str) -> dict[str, Any]:
    task = svc.store.get_task(task_id)
    rounds = svc.store.list_rounds(task_id)
    return task_view(task, rounds[-1] if rounds else None)


async def get_task(request: web.Request) -> web.Response:
    admin(request)
    return json_reply(task_with_round(svc_of(request), request.match_info["task_id"]))


def task_action(action: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        svc = svc_of(request)
        actor = admin(request)
        task = svc.tasks.act(request.match_info["task_id"], action, actor=actor)
        return json_reply(task_view(task))

    return handler


async def rollback(request: web.Request) -> web.Response:
    svc = svc_of(request)
    actor = admin(request)
    body = await json_body(request, RollbackRequest)
    task = svc.catalog.rollback(request.match_info["task_id"], to=body.to, actor=actor)
    return json_reply(task_view(task))


async def promote(request: web.Request) -> web.Response:
    svc = svc_of(request)
    actor = admin(request)
    body = await json_body(request, PromoteRequest)
    task = svc.catalog.promote(body.sha256, task_id=request.match_info["task_id"], actor=actor)
    return json_reply(task_view(task))


async def list_rounds(request: web.Request) -> web.Response:
    svc = svc_of(request)
    admin(request)
    task_id = request.match_info["task_id"]
    svc.store.get_task(task_id)
    return json_reply({"rounds": [round_view(r) for r in svc.store.list_rounds(task_id)]})


async def get_round(request: web.Request) -> web.Response:
    svc = svc_of(request)
    admin(request)
    task_id = request.match_info["task_id"]
    round_no = int_param(request.match_info["round_no"], "round_no", lo=0, hi=ROUND_NO_MAX)
    rnd = svc.store.get_round(task_id, round_no)
    stages = svc.store.list_stages(task_id, rnd.round_no)
    return json_reply({**round_view(rnd), "stages": [stage_view(s) for s in stages]})


async def task_metrics(request: web.Request) -> web.Response:
    svc = svc_of(request)
    admin(request)
    task_id = request.match_info["task_id"]
    svc.store.get_task(task_id)
    return json_reply({"task_id": task_id, "series": metrics_view(svc.store.list_metrics(task_id))})


__all__ = [
    "ROUND_NO_MAX", "create_task", "get_round", "get_task", "list_rounds", "list_tasks",
    "promote", "rollback", "task_action", "task_metrics", "task_with_round",
]  # fmt: skip
