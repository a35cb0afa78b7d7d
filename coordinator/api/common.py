"""What every HTTP handler shares: the app keys, JSON in and out, operator authentication."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from fedrt.coordinator.api.auth import require_admin
from fedrt.coordinator.api.context import ApiContext
from fedrt.coordinator.api.ratelimit import RateLimiter
from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.validation import WireModel

CONTEXT: web.AppKey[ApiContext] = web.AppKey("context")
IP_LIMITER: web.AppKey[RateLimiter] = web.AppKey("ip_limiter")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Body = TypeVar("Body", bound=WireModel)
# JSON bodies are small (specs, tokens); anything bigger is a mistake or an attack.
_MAX_JSON = 64 * 1024
# ASCII digits only: int() would also take "+1", " 1", "1_0" and other scripts' digits.
_INTEGER = re.compile(r"-?[0-9]{1,19}")
INT64_MAX = 2**63 - 1
# Audit entries per page at most: a larger ``limit`` is served as this many.
AUDIT_PAGE_MAX = 1000


# Where ``state_middleware`` (app.py) leaves a body it read on the network loop.
BODY_KEY: web.RequestKey[bytes] = web.RequestKey("fedrt.body")
# Set on handlers that must run on the network loop (they stream a body in or out).
NETWORK_LOOP = "fedrt_network_loop"


def on_network_loop(handler: Handler) -> Handler:
    """Mark a handler that streams (see ``state_thread``): it stays on the network loop."""
    setattr(handler, NETWORK_LOOP, True)
    return handler


def ctx_of(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def json_reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, allow_nan=False))


async def json_body(request: web.Request, model: type[Body]) -> Body:
    """The request's JSON object as ``model`` (``bodies``): unknown keys, nulls and wrong
    types are errors naming the field, never ignored."""
    return model.from_json(await _json_object(request))


async def read_json_bytes(request: web.Request) -> bytes:
    """The whole body, at most ``_MAX_JSON`` bytes (``BadRequestError`` past it)."""
    if request.content_length is not None and request.content_length > _MAX_JSON:
        raise BadRequestError(f"JSON body larger than {_MAX_JSON} bytes")
    raw = bytearray()
    # read(n) returns what has arrived, not n bytes: loop until the end of the body.
    while chunk := await request.content.read(16 * 1024):
        raw += chunk
        if len(raw) > _MAX_JSON:
            raise BadRequestError(f"JSON body larger than {_MAX_JSON} bytes")
    return bytes(raw)


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = request.get(BODY_KEY)
    if raw is None:
        raw = await read_json_bytes(request)
    if not raw:
        raise BadRequestError("a JSON object body is required")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a few KB of "[[[[..." nest deeper than the parser's stack.
        raise BadRequestError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequestError("body must be a JSON object")
    return data


def int_param(raw: str, name: str, *, lo: int, hi: int = INT64_MAX) -> int:
    """A path or query integer in [lo, hi] (the store keeps 64-bit integers)."""
    if not _INTEGER.fullmatch(raw) or not (lo <= int(raw) <= hi):
        raise BadRequestError(f"{name} must be an integer in [{lo}, {hi}]")
    return int(raw)


def admin(request: web.Request) -> str:
    return require_admin(request, ctx_of(request).admin_token)


__all__ = [
    "AUDIT_PAGE_MAX", "CONTEXT", "INT64_MAX", "IP_LIMITER", "Handler", "admin", "ctx_of",
    "int_param", "json_body", "json_reply",
]  # fmt: skip
