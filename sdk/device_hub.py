"""One event thread serving many ``Device``s: how a process hosts hundreds of simulated devices.

A device app runs one ``Device`` with its own event thread. A fleet simulator cannot afford
a thread per device (a thousand threads polling on two cores starve the few that are
training), so the hub keeps one queue of (device, event) and one heap of wake-up times:
each device is looked at when something happens to it or when it asked to be woken, never
by polling. Device events stay serialized per device, exactly as on a device's own thread,
because one thread makes every move.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from fedrt.sdk.errors import SdkConfigError

__all__ = ["DeviceHub"]

log = logging.getLogger(__name__)

# Due wake-ups handled between two queued events: ticks cannot starve messages or vice versa.
_TICKS_PER_EVENT = 64
# Longest sleep with nothing due: bounds how late a stop request is noticed.
_IDLE_WAIT_S = 1.0


class _Member(Protocol):
    """What the hub needs from a device (``fedrt.sdk.device.Device`` provides it)."""

    def _begin(self) -> None: ...
    def _step(self, kind: str, value: Any) -> None: ...
    def _end(self) -> None: ...
    def _wake_at(self) -> float: ...


class DeviceHub:
    """Runs the event handling of many devices on one thread (see the module docstring).

    Devices attached to a hub must use the hub's ``clock`` (wall time by default).
    """

    def __init__(
        self, *, name: str = "fedrt-device-hub", clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self.clock = clock
        self._queue: queue.SimpleQueue[tuple[_Member | None, str, Any]] = queue.SimpleQueue()
        self._heap: list[tuple[float, int, _Member]] = []
        self._latest: dict[int, int] = {}  # id(device) -> sequence of its live heap entry
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._members = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise SdkConfigError("device hub already started")
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread; devices still attached get no further events."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put((None, "quit", None))
        thread.join(timeout)
        self._thread = None

    @property
    def members(self) -> int:
        return self._members

    # ------------------------------------------------------------------ devices (any thread)
    def add(self, device: _Member) -> None:
        if self._thread is None:
            raise SdkConfigError("device hub is not started")
        self._queue.put((device, "begin", None))

    def post(self, device: _Member, kind: str, value: Any) -> None:
        self._queue.put((device, kind, value))

    def remove(self, device: _Member, timeout: float = 10.0) -> bool:
        """Detach ``device`` after its pending events; True once the hub has let it go."""
        done = threading.Event()
        self._queue.put((device, "end", done))
        return done.wait(timeout)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            wait = _IDLE_WAIT_S
            if self._heap:
                wait = min(wait, max(0.0, self._heap[0][0] - self.clock()))
            try:
                device, kind, value = self._queue.get(timeout=wait)
            except queue.Empty:
                device = None
            else:
                if kind == "quit":
                    return
                if device is not None:
                    self._dispatch(device, kind, value)
            self._run_due()

    def _run_due(self) -> None:
        now = self.clock()
        for _ in range(_TICKS_PER_EVENT):
            if not self._heap or self._heap[0][0] > now:
                return
            _, seq, device = heapq.heappop(self._heap)
            if self._latest.get(id(device)) == seq:
                self._dispatch(device, "tick", None)

    def _dispatch(self, device: _Member, kind: str, value: Any) -> None:
        key = id(device)
        if kind == "end":
            if self._latest.pop(key, None) is not None:
                self._members -= 1
                self._guard(device._end)
            value.set()
            return
        if kind == "begin":
            self._members += 1
            self._latest[key] = -1
            self._guard(device._begin)
        elif key not in self._latest:
            return  # an event that arrived after the device left
        else:
            self._guard(lambda: device._step(kind, value))
        seq = next(self._seq)
        self._latest[key] = seq
        heapq.heappush(self._heap, (self._guard_wake(device), seq, device))

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # one device's failure must not stop the others
            log.exception("device hub: device call failed")

    def _guard_wake(self, device: _Member) -> float:
        try:
            return device._wake_at()
        except Exception:
            log.exception("device hub: wake time failed")
            return self.clock() + _IDLE_WAIT_S
