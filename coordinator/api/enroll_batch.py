"""Enrollments that arrive together share one transaction and one broker sync.

Every broker sync rewrites the broker's files from the whole device list (Mosquitto's
password file, NATS's users), so a fleet enrolling one device per sync takes time in N^2:
at 10,000 devices, tens of minutes of the coordinator's time. The enroll route hands each
request to an ``EnrollBatcher``, which waits ``window_s`` for others (or until ``max_batch``
are waiting) and enrolls them together (``Enrollment.enroll_many``): each request still
gets its own grant or its own error, and no reply is sent before the broker's files list
the device.

A quiet second after the last batch of a burst the broker is synced once more (``settle``),
and again ten seconds later: Mosquitto clears its reload flag after reloading, so a SIGHUP
that arrives during a reload is lost, and the devices of the burst's last batch could stay
refused until the next enrollment. Seen at 60 devices enrolling in two processes (4 refused
for 30 s), and at 10,000 on a loaded machine, where a reload took 4-6 s and the settle's
own SIGHUP 1 s after the last batch was lost too (2 devices refused for minutes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from aiohttp import web

from fedrt.coordinator.devices.enrollment import EnrollmentGrant, EnrollmentRequest
from fedrt.coordinator.errors import CoordinatorError

__all__ = ["ENROLL_BATCHER", "EnrollBatcher"]

log = logging.getLogger(__name__)

# Long enough to gather what a fleet sends at once; a lone device waits 10 ms more.
WINDOW_S = 0.01
MAX_BATCH = 500
SETTLE_S = (1.0, 10.0)

EnrollMany = Callable[[Sequence[EnrollmentRequest]], list[EnrollmentGrant | CoordinatorError]]
_Waiter = tuple[EnrollmentRequest, "asyncio.Future[EnrollmentGrant]"]


class EnrollBatcher:
    """Gathers concurrent enrollments (all on one event loop) into ``enroll_many`` calls."""

    def __init__(
        self,
        enroll_many: EnrollMany,
        *,
        settle: Callable[[], None] | None = None,
        window_s: float = WINDOW_S,
        max_batch: int = MAX_BATCH,
        settle_s: tuple[float, ...] = SETTLE_S,
    ) -> None:
        if window_s < 0 or max_batch < 1 or any(t < 0 for t in settle_s):
            raise ValueError("window_s and settle_s must be >= 0, max_batch >= 1")
        self._enroll_many = enroll_many
        self._settle = settle
        self._settle_s = settle_s
        self._settle_timers: list[asyncio.TimerHandle] = []
        self._window_s = window_s
        self._max_batch = max_batch
        self._waiting: list[_Waiter] = []
        self._timer: asyncio.TimerHandle | None = None
        self.batches = 0  # enroll_many calls made, for tests and benchmarks

    async def submit(self, request: EnrollmentRequest) -> EnrollmentGrant:
        """Enroll ``request`` with whatever else arrives meanwhile; its grant, or its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EnrollmentGrant] = loop.create_future()
        self._waiting.append((request, future))
        if len(self._waiting) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A request whose client went away before its turn is not enrolled.
        batch = [(r, f) for r, f in self._waiting if not f.done()]
        self._waiting = []
        if not batch:
            return
        self.batches += 1
        try:
            results = self._enroll_many([r for r, _ in batch])
        except Exception as exc:  # a failure outside CoordinatorError: every waiter sees it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, CoordinatorError):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._settle is not None and any(isinstance(r, EnrollmentGrant) for r in results):
            for timer in self._settle_timers:
                timer.cancel()
            loop = asyncio.get_running_loop()
            self._settle_timers = [loop.call_later(t, self._settled) for t in self._settle_s]

    def _settled(self) -> None:
        assert self._settle is not None
        try:
            self._settle()
        except CoordinatorError as exc:  # the next enrollment or restart syncs again
            log.warning("re-syncing the broker after enrollments failed: %s", exc)


ENROLL_BATCHER: web.AppKey[EnrollBatcher] = web.AppKey("enroll_batcher")
