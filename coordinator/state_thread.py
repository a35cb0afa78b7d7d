"""The coordinator's state thread: where everything that touches the store runs.

``fedrt coordinator serve`` runs two asyncio loops. The network loop (the main thread) does
only I/O: HTTP connections, the MQTT link, the broker. The state loop, on this thread, runs
the round driver, the tick and the REST handlers that read or write the store, one at a
time, as the single loop did before. So a slow database (a lost PostgreSQL connection being
retried, a long transaction, a big commit) delays state work but never the network: health
checks answer, MQTT keep-alives flow, downloads stream. And state stays single-threaded: no
locks between the driver and the API.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
_STOP_TIMEOUT_S = 30.0


class StateThread:
    """One thread with its own event loop; ``call`` and ``run`` hand it work from another."""

    def __init__(self, name: str = "fedrt-state") -> None:
        self.name = name
        # Made at start: a loop holds sockets, and a service that never starts (one driven
        # directly, as tests do) should not leave them to the garbage collector.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._loop = loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._serve, args=(loop,), name=self.name, daemon=True
            )
            self._thread.start()

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    @property
    def inline(self) -> bool:
        """Whether work runs right where it is asked for: on this thread, or while no
        thread runs (a service driven directly, as tests do)."""
        return self._thread is None or threading.current_thread() is self._thread

    def submit(
        self, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the thread, in order with everything submitted before."""
        if self._loop is None:
            raise RuntimeError("the state thread is not running")
        work = _call(functools.partial(fn, *args, **kwargs))
        return asyncio.run_coroutine_threadsafe(work, self._loop)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """From another loop: run ``fn`` on the thread and wait for its result or error."""
        if self.inline:
            return fn(*args, **kwargs)
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    async def run(self, work: Awaitable[T]) -> T:
        """From another loop: run a coroutine on this thread's loop and wait for it."""
        if self.inline or self._loop is None:
            return await work
        done = asyncio.run_coroutine_threadsafe(_await(work), self._loop)
        return await asyncio.wrap_future(done)

    def stop(self) -> None:
        """Finish the work already handed over, then end the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()
        self._thread = self._loop = None


async def _call(fn: Callable[[], T]) -> T:
    return fn()


async def _await(work: Awaitable[T]) -> T:
    return await work


__all__ = ["StateThread"]
