"""``GET /v1/tasks/{task_id}/async``: an async (FedBuff) task's commits, staleness and buffer.

Built from the stored round records only (each async commit is a round whose detail carries
``mode: async``, its ``staleness`` counts, ``buffer_size`` and the lobby's figures when it
ended), so any instance serves it, also for a task another instance runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from fedrt.coordinator.api.common import admin, ctx_of, json_reply
from fedrt.coordinator.api.openapi_requests import INT, NUM, STR, Schema, nullable, obj
from fedrt.coordinator.errors import ConflictError
from fedrt.coordinator.records import RoundRecord, RoundStatus, TaskRecord

__all__ = ["async_schema", "async_view", "task_async"]

# The lobby's figures in a commit's record (rounds.async_lobby.AsyncLobby.figures).
_LOBBY_KEYS = ("training", "ready", "commits", "refused_stale")


def _counts(raw: object) -> dict[int, int]:
    if not isinstance(raw, Mapping):
        return {}
    out: dict[int, int] = {}
    for k, v in raw.items():
        if str(k).isdigit() and isinstance(v, int):
            out[int(k)] = v
    return out


def async_view(task: TaskRecord, rounds: list[RoundRecord]) -> dict[str, Any]:
    """Commits over time, the staleness distribution of their updates and the buffer fill
    (the lobby as the last ended cohort round left it); ``ConflictError`` for a sync task."""
    spec = task.spec
    if spec.get("mode") != "async":
        raise ConflictError(f"task {task.task_id} runs synchronous rounds (mode sync)")
    cohorts = [r for r in rounds if r.detail.get("mode") == "async"]
    start = min((r.started_at for r in rounds), default=None)
    commits: list[dict[str, Any]] = []
    staleness: dict[int, int] = {}
    for r in cohorts:
        if r.status is not RoundStatus.COMMITTED or r.ended_at is None:
            continue
        counts = _counts(r.detail.get("staleness"))
        for s, n in counts.items():
            staleness[s] = staleness.get(s, 0) + n
        commits.append(
            {
                "round_no": r.round_no,
                "ended_at": r.ended_at,
                "since_start_s": r.ended_at - start if start is not None else 0.0,
                "updates": r.reporting,
                "staleness": {str(s): counts[s] for s in sorted(counts)},
            }
        )
    ended = [r for r in cohorts if r.ended_at is not None]
    raw_lobby = ended[-1].detail.get("lobby") if ended else None
    lobby = raw_lobby if isinstance(raw_lobby, Mapping) else {}
    figures = {k: int(lobby[k]) for k in _LOBBY_KEYS if isinstance(lobby.get(k), int)}
    updates = sum(staleness.values())
    mean = sum(s * n for s, n in staleness.items()) / updates if updates else None
    buffer_size = int(spec.get("buffer_size", 0))
    ready = figures.get("ready")
    return {
        "task_id": task.task_id,
        "buffer_size": buffer_size,
        "max_staleness": int(spec.get("max_staleness", 0)),
        "max_concurrent": int(spec.get("max_concurrent", 0)),
        "commits": commits,
        "cohorts_abandoned": sum(r.status is RoundStatus.ABANDONED for r in cohorts),
        "staleness": {str(s): staleness[s] for s in sorted(staleness)},
        "mean_staleness": mean,
        "lobby": figures,
        # Updates held ready for the next buffer, as a share of it (None: nothing ended yet).
        "buffer_fill": ready / buffer_size if ready is not None and buffer_size else None,
        "lobby_at": ended[-1].ended_at if ended else None,
    }


def async_schema() -> Schema:
    """The OpenAPI component ``AsyncTask``: what ``async_view`` returns."""
    counts = {"type": "object", "additionalProperties": INT}
    commit = obj({"round_no": INT, "ended_at": NUM, "since_start_s": NUM, "updates": INT,
                  "staleness": counts})  # fmt: skip
    lobby = obj({}, {k: INT for k in _LOBBY_KEYS})
    return obj(
        {
            "task_id": STR,
            "buffer_size": INT,
            "max_staleness": INT,
            "max_concurrent": INT,
            "commits": {"type": "array", "items": commit},
            "cohorts_abandoned": INT,
            "staleness": counts,
            "mean_staleness": nullable(NUM),
            "lobby": lobby,
            "buffer_fill": nullable(NUM),
            "lobby_at": nullable(NUM),
        }
    )


async def task_async(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    task_id = request.match_info["task_id"]
    task = ctx.store.get_task(task_id)
    return json_reply(async_view(task, ctx.store.list_rounds(task_id)))
