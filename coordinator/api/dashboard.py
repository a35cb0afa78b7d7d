"""The dashboard: one HTML page, a stylesheet and a script, served from the package."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Served by name from this list only: no path from a request ever reaches the filesystem.
_FILES = {
    "api.js": "application/javascript",
    "charts.js": "application/javascript",
    "dashboard.css": "text/css",
    "dashboard.js": "application/javascript",
    "evaluation.js": "application/javascript",
    "fedbuff.js": "application/javascript",
    "figures.js": "application/javascript",
    "versions.js": "application/javascript",
}
# The page needs nothing from elsewhere; say so, so injected content cannot load any.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


async def index(request: web.Request) -> web.Response:
    return web.Response(
        body=(STATIC_DIR / "index.html").read_bytes(),
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"},
    )


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return web.Response(
        body=(STATIC_DIR / name).read_bytes(),
        content_type=_FILES[name],
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


def add_dashboard_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)


__all__ = ["STATIC_DIR", "add_dashboard_routes"]
