"""Time for the SDK's workers: the system clock, and a manual one that makes tests instant."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(ABC):
    """Wall-clock time (Unix seconds) and a sleep that an event can cut short."""

    @abstractmethod
    def now(self) -> float:
        """Seconds since the Unix epoch."""

    @abstractmethod
    def sleep(self, seconds: float, wake: threading.Event) -> bool:
        """Wait up to ``seconds``; return True if ``wake`` was set (cancel), else False."""


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float, wake: threading.Event) -> bool:
        return wake.wait(max(0.0, seconds))


class ManualClock(Clock):
    """Time moves only when told: ``sleep`` jumps ahead at once, ``advance`` moves it by hand.

    Deterministic for tests and simulations: a worker sleeping an hour returns immediately
    with the clock an hour later.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        with self._lock:
            self._t += seconds

    def sleep(self, seconds: float, wake: threading.Event) -> bool:
        if wake.is_set():
            return True
        self.advance(max(0.0, seconds))
        return wake.is_set()
