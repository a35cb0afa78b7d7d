"""Per-key token buckets (a key is a device id or a client address), clock injected."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from fedrt.coordinator.errors import RateLimitedError

Clock = Callable[[], float]


class RateLimiter:
    """``rate`` tokens per second up to ``burst``; one token per request.

    Buckets for keys not seen lately are evicted (least recently used first) beyond
    ``max_keys``, so a flood of distinct keys cannot grow memory without bound; an evicted
    key simply starts again with a full bucket.
    """

    def __init__(self, *, rate: float, burst: int, clock: Clock, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate > 0, burst >= 1 and max_keys >= 1 are required")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # Downloads meter on the network loop, everything else on the state thread.
        self._lock = threading.Lock()

    def try_acquire(self, key: str, cost: float = 1.0) -> float:
        """0.0 if allowed (and charged), else the seconds until it would be allowed."""
        with self._lock:
            return self._charge(key, cost)

    def _charge(self, key: str, cost: float) -> float:
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def acquire(self, key: str, cost: float = 1.0) -> None:
        """Charge ``key`` or raise ``RateLimitedError`` (with ``retry_after``)."""
        wait = self.try_acquire(key, cost)
        if wait > 0:
            raise RateLimitedError(f"rate limit exceeded for {key}", retry_after=wait)


__all__ = ["RateLimiter"]
