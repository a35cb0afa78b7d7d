"""Headless Chromium driven over the DevTools protocol: type, click, read the page, screenshot."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STEP_S = 0.05  # between two looks at the page while waiting for it


class Page:
    """One browser tab; every call waits for Chromium's answer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self._ws.send_json({"id": msg_id, "method": method, "params": params})
        async for frame in self._ws:  # events arrive in between; only the answer matters
            data = json.loads(frame.data)
            if data.get("id") == msg_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return dict(data.get("result", {}))
        raise RuntimeError(f"{method}: Chromium closed the connection")

    async def eval(self, expression: str) -> Any:
        """The JSON value of ``expression`` (awaited if it is a promise)."""
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """The first truthy value of ``expression`` (as JSON: a DOM node is ``{}``, so ask
        ``!!node``), looking every ``STEP_S``."""
        for _ in range(int(timeout / STEP_S)):
            try:
                value = await self.eval(expression)
            except RuntimeError:  # a document being replaced has no context to run it in
                value = None
            if value:
                return value
            await asyncio.sleep(STEP_S)
        raise AssertionError(f"never true: {expression}")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (it must be visible and on top)."""
        box = await self.wait_for(
            f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: "center"}});
            const r = e.getBoundingClientRect();
            return r.width ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"""
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                            button="left", clickCount=1)  # fmt: skip

    async def type(self, selector: str, text: str) -> None:
        await self.wait_for(f"!!document.querySelector({json.dumps(selector)})")
        await self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def screenshot(self, path: Path, width: int) -> None:
        """The whole page, ``width`` CSS pixels wide."""
        height = await self.eval("document.documentElement.scrollHeight")
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)  # fmt: skip
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


def text_of(selector: str) -> str:
    """A page expression: the text of the first element ``selector`` matches, or null."""
    return f"document.querySelector({json.dumps(selector)})?.textContent ?? null"


async def sign_in(page: Page, port: int, token: str) -> None:
    """Open the dashboard on ``port`` and sign in with ``token``; returns once it has data."""
    await page.goto(f"http://127.0.0.1:{port}/")
    await page.wait_for(text_of("#status") + " === 'signed out'")
    await page.type("#token", token)
    await page.click("#login button")
    await page.wait_for("document.body.dataset.ready === '1'")


@asynccontextmanager
async def browser(profile: Path, width: int, height: int) -> AsyncIterator[Page]:
    """A fresh headless Chromium with its profile in ``profile``, stopped on exit."""
    assert CHROMIUM is not None
    proc = subprocess.Popen(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its renderer and helper processes go with it
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            port = await _devtools_port(profile / "DevToolsActivePort", proc)
            async with http.get(f"http://127.0.0.1:{port}/json/list") as reply:
                (tab,) = [t for t in await reply.json() if t["type"] == "page"]
            async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                yield page
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def _devtools_port(path: Path, proc: subprocess.Popen[bytes]) -> int:
    # Chromium writes the port it bound (with --remote-debugging-port=0) into its profile.
    for _ in range(int(30 / STEP_S)):
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        with suppress(FileNotFoundError, ValueError, IndexError):
            return int(path.read_text().splitlines()[0])
        await asyncio.sleep(STEP_S)
    raise RuntimeError("chromium did not open its DevTools port")


__all__ = ["CHROMIUM", "Page", "browser"]
